"""bench.data: hash split, checksum, byte tokenizer, token windows and their one-line errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from bench import data
from ttt.errors import MissingPackageError, UserError


@pytest.fixture(scope="module")
def stdlib() -> data.Corpus:
    return data.load_corpus("python-stdlib")


def make_tree(root, n: int = 40) -> None:
    for i in range(n):
        sub = root / f"pkg{i % 4}"
        sub.mkdir(exist_ok=True)
        (sub / f"m{i}.py").write_text(f"# module {i}\n" + f"x_{i} = {i}\n" * (i + 1))
    for skipped in ("test", "site-packages", "idlelib"):
        (root / skipped).mkdir()
        (root / skipped / "skip.py").write_text("skipped = True\n")
    (root / "latin1.py").write_bytes(b"s = '\xe9'\n")  # not UTF-8: left out
    (root / "notes.txt").write_text("not python\n")


def test_split_deterministic_disjoint_covering(stdlib, tmp_path):
    make_tree(tmp_path)
    corpus = data.load_corpus(root=tmp_path, val_percent=30)
    assert len(corpus.documents) == 40 and all(d.path.startswith("pkg") for d in corpus.documents)
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
    with pytest.raises(UserError, match="'bpe'.*byte"):
        data.get_tokenizer("bpe")


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
