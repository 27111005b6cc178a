"""bench.data: hash split, checksum, byte tokenizer, token windows and their one-line errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from bench import data
from ttt.errors import MissingPackageError, UserError


@pytest.fixture(scope="module")
def stdlib() -> data.Corpus:
    return data.load_corpus("python-stdlib")


def make_tree(root, n: int = 40, extras: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = root / f"pkg{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"m{i}.py").write_text(f"# module {i}\n" + f"x_{i} = {i}\n" * (i + 1))
    for skipped in ("site-packages", "dist-packages"):
        (root / skipped).mkdir()
        (root / skipped / "skip.py").write_text("skipped = True\n")
    (root / "latin1.py").write_bytes(b"s = '\xe9'\n")  # not UTF-8: left out
    (root / "notes.txt").write_text("not python\n")
    if extras:  # a test suite and a bundled wheel: both are documents
        (root / "test").mkdir()
        (root / "test" / "test_x.py").write_text("def test_x():\n    assert True\n")
        (root / "ensurepip" / "_bundled").mkdir(parents=True)
        with zipfile.ZipFile(root / "ensurepip" / "_bundled" / "pip-1.0-py3-none-any.whl", "w") as z:
            z.writestr("pip/__init__.py", "__version__ = '1.0'\n")
            z.writestr("pip-1.0.dist-info/METADATA", "Name: pip\n")


def test_documents_included_and_excluded(tmp_path):
    make_tree(tmp_path, n=3, extras=True)
    paths = [d.path for d in data.load_corpus(root=tmp_path).documents]
    assert paths == [
        "ensurepip/pip-1.0-py3-none-any.whl/pip/__init__.py",
        "pkg0/m0.py",
        "pkg1/m1.py",
        "pkg2/m2.py",
        "test/test_x.py",
    ]


def test_export_reads_back_the_same_corpus(tmp_path):
    make_tree(tmp_path / "src", n=5, extras=True)
    corpus = data.load_corpus(root=tmp_path / "src")
    assert data.export(corpus, tmp_path / "copy") == len(corpus.documents) == 7  # 5 + test + wheel
    copy = data.load_corpus(root=tmp_path / "copy")
    assert copy.documents == corpus.documents and copy.checksum == corpus.checksum


def test_split_deterministic_disjoint_covering(stdlib, tmp_path):
    make_tree(tmp_path)
    corpus = data.load_corpus(root=tmp_path, val_percent=30)
    assert len(corpus.documents) == 40 and all(d.path.startswith("pkg") for d in corpus.documents)
    for d in corpus.documents:  # membership is the documented hash of the path
        h = int(hashlib.sha1(d.path.encode()).hexdigest(), 16) % 100
        assert (h < 30) == (d in corpus.split("validation"))
    assert [d.path for d in corpus.documents] == sorted(d.path for d in corpus.documents)
    for c in (corpus, stdlib):
        train, val = c.split("train"), c.split("validation")
        assert train == c.split("train") and val == c.split("validation")
        paths_t, paths_v = {d.path for d in train}, {d.path for d in val}
        assert not paths_t & paths_v and paths_t | paths_v == {d.path for d in c.documents}
        assert val and train
    # The split depends on the path alone: a fixed, machine-independent hash.
    assert data.split_of("json/decoder.py", 100) == "validation" and data.split_of("json/decoder.py", 0) == "train"
    assert data.load_corpus(root=tmp_path, val_percent=30).split("validation") == corpus.split("validation")


def test_checksum_stable_and_sensitive(tmp_path):
    make_tree(tmp_path)
    first = data.load_corpus(root=tmp_path).checksum
    assert data.load_corpus(root=tmp_path).checksum == first and len(first) == 64
    (tmp_path / "pkg1" / "m5.py").write_text("changed = 1\n")
    assert data.load_corpus(root=tmp_path).checksum != first


def test_byte_tokenizer_round_trip():
    tok = data.get_tokenizer("byte")
    assert isinstance(tok, data.Tokenizer) and tok.vocab_size == 257 and tok.name == "byte"
    text = "naïve café — 日本語 🙂\n"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == text and tok.decode(ids + [tok.eos_id]) == text


def test_token_windows(stdlib):
    tok = data.get_tokenizer()
    w = data.token_windows(stdlib, tok, "train", ctx=256, n=8, seed=3)
    assert w.shape == (8, 256) and w.dtype == torch.long
    assert torch.equal(w, data.token_windows(stdlib, tok, "train", ctx=256, n=8, seed=3))
    assert not torch.equal(w, data.token_windows(stdlib, tok, "train", ctx=256, n=8, seed=4))
    assert 0 <= w.min() and w.max() < tok.vocab_size
    e = data.token_windows(stdlib, tok, "validation", ctx=4096, n=4, concat=False)
    assert e.shape == (4, 4096) and (e != tok.eos_id).all()  # inside one document: no EOS


def test_unknown_corpus_and_tokenizer_one_line():
    with pytest.raises(UserError) as e:
        data.load_corpus("pg-99")
    msg = str(e.value)
    assert "\n" not in msg and "'pg-99'" in msg and "python-stdlib" in msg
    with pytest.raises(UserError, match="'wordpiece'.*byte, bpe, llama2"):
        data.get_tokenizer("wordpiece")


def test_ctx_too_long(tmp_path):
    make_tree(tmp_path, n=6)
    corpus, tok = data.load_corpus(root=tmp_path, val_percent=0), data.get_tokenizer()
    longest = max(len(d.text.encode()) for d in corpus.documents)
    with pytest.raises(UserError) as e:
        data.token_windows(corpus, tok, "train", ctx=10_000, n=2, concat=False)
    assert "ctx=10000" in str(e.value) and f"{longest} tokens" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="ctx=10000"):
        data.token_windows(corpus, tok, "train", ctx=10_000, n=2)
    assert data.long_documents(corpus, "train", tok, 10_000) == []


def test_stdlib_has_32k_documents(stdlib):
    tok = data.get_tokenizer()
    long = [d for s in data.SPLITS for d in data.long_documents(stdlib, s, tok, 32_768)]
    assert long and all(len(d.text.encode()) >= 32_768 for d in long)


@pytest.mark.skipif(
    not (Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_descr.py").is_file(),
    reason="this Python's stdlib comes without its test suite (e.g. Ubuntu's python3.x): few long documents",
)
def test_stdlib_has_hundreds_of_32k_documents(stdlib):
    tok = data.get_tokenizer()
    assert sum(len(data.long_documents(stdlib, s, tok, 32_768)) for s in data.SPLITS) >= 200
    assert len(data.long_documents(stdlib, "validation", tok, 32_768)) >= 5
    assert data.load_corpus() is stdlib  # read once per process


def test_packed_windows(tmp_path):
    make_tree(tmp_path / "src")
    stdlib, tok = data.load_corpus(root=tmp_path / "src", val_percent=0), data.get_tokenizer()
    w = data.PackedWindows(stdlib, tok, "train", ctx=63, seed=1)
    first = w.take(0, 5)
    assert first.shape == (5, 64) and first.dtype == torch.long
    assert torch.equal(first, data.PackedWindows(stdlib, tok, "train", ctx=63, seed=1).take(0, 5))
    assert torch.equal(w.take(2, 3), first[2:])  # a position says exactly what comes next
    assert not torch.equal(first, data.PackedWindows(stdlib, tok, "train", ctx=63, seed=2).take(0, 5))
    # The stream is the documents in the epoch's order, each followed by EOS.
    docs = stdlib.tokens("train", tok)
    i0 = w.order(0)[0]
    n0 = min(len(docs[i0]), 64)
    assert torch.equal(first[0, :n0], docs[i0][:n0]) and w.order(1) != w.order(0)
    # Crossing into the next epoch: its own order, no gap.
    last = w.per_epoch - 1
    cross = w.take(last, 2)
    assert torch.equal(cross[0], w.epoch(0)[last].long()) and torch.equal(cross[1], w.epoch(1)[0].long())
    # Too short a split: one line naming ctx.
    with pytest.raises(UserError, match="ctx=100000 needs windows of 100001 tokens"):
        data.PackedWindows(stdlib, tok, "train", ctx=100_000)


needs_tokenizers = pytest.mark.skipif(
    importlib.util.find_spec("tokenizers") is None, reason="the 'tokenizers' package is not installed"
)


@needs_tokenizers
def test_bpe_trains_caches_round_trips(tmp_path, monkeypatch):
    make_tree(tmp_path / "src", n=40, extras=True)
    corpus = data.load_corpus(root=tmp_path / "src", val_percent=30)
    monkeypatch.setenv("TTT_BENCH_CACHE", str(tmp_path / "cache"))
    tok = data.get_tokenizer("bpe", corpus=corpus, vocab_size=300)
    assert isinstance(tok, data.Tokenizer) and tok.name == "bpe300" and tok.vocab_size == 300
    path = tmp_path / "cache" / "tokenizers" / f"python-stdlib-{corpus.checksum[:12]}-bpe300.json"
    assert tok.path == path and path.is_file()
    text = "x_7 = 7\n\tnaïve café — 日本語 🙂\r\n  "
    ids = tok.encode(text)
    assert tok.decode(ids) == text and tok.decode(ids + [tok.eos_id]) == text and max(ids) < 300
    assert len(tok.encode("x_7 = 7\n" * 8)) < len(("x_7 = 7\n" * 8).encode())  # merges learned
    # Cached: read back, not trained again; the name builds the same tokenizer.
    mtime = path.stat().st_mtime_ns
    again = data.get_tokenizer(tok.name, corpus=corpus)
    assert path.stat().st_mtime_ns == mtime and again.encode(text) == ids
    # Deterministic: a fresh training gives the same vocabulary and merges.
    monkeypatch.setenv("TTT_BENCH_CACHE", str(tmp_path / "cache2"))
    data.get_tokenizer("bpe300", corpus=corpus)
    fresh = tmp_path / "cache2" / "tokenizers" / path.name
    assert json.loads(fresh.read_text())["model"] == json.loads(path.read_text())["model"]
    # Trained on the train split only: a word only in validation documents is not one token.
    toks = corpus.tokens("train", tok)
    assert len(toks) == len(corpus.split("train")) and all(t.dtype == torch.long for t in toks)
    with pytest.raises(UserError, match="vocab_size=100"):
        data.get_tokenizer("bpe", corpus=corpus, vocab_size=100)


@needs_tokenizers
def test_bpe_ignores_validation_text(tmp_path, monkeypatch):
    make_tree(tmp_path, n=8)
    word = "zqxjkvzqxjkv"
    docs = [data.Document(f"d{i}.py", f"{word if data.split_of(f'd{i}.py', 50) == 'validation' else 'ab'} \n" * 50)
            for i in range(20)]  # fmt: skip
    corpus = data.Corpus("python-stdlib", docs, val_percent=50)
    assert {data.split_of(d.path, 50) for d in docs} == set(data.SPLITS)
    monkeypatch.setenv("TTT_BENCH_CACHE", str(tmp_path / "cache"))
    tok = data.get_tokenizer("bpe", corpus=corpus, vocab_size=280)
    assert len(tok.encode(word)) == len(word) and len(tok.encode("ab")) == 1


def test_llama2_missing_is_one_line(tmp_path):
    with pytest.raises(UserError) as e:  # MissingPackageError (no transformers) or UserError (no files): one line
        data.get_tokenizer("llama2", path=tmp_path / "no-such-dir")
    msg = str(e.value)
    assert "\n" not in msg and ("transformers" in msg or "Llama-2" in msg)


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="the 'datasets' package is not installed")
def test_hf_corpus_local_json(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"doc {i} é", "id": i}) + "\n" for i in range(3)))
    docs = list(data.hf_corpus("json", "train", "text", data_files=str(path)))
    assert [d.text for d in docs] == [f"doc {i} é" for i in range(3)]
    with pytest.raises(UserError, match="'body'"):
        list(data.hf_corpus("json", "train", "body", data_files=str(path)))


@pytest.mark.skipif(importlib.util.find_spec("datasets") is not None, reason="the 'datasets' package is installed")
def test_hf_corpus_without_datasets_one_line():
    with pytest.raises(MissingPackageError) as e:
        data.hf_corpus("pg19", "test")
    assert "ttt-bench[eval]" in str(e.value) and "'pg19'" in str(e.value) and "\n" not in str(e.value)
