"""Text corpora and tokenizers behind one interface, with a default that works offline on a fresh machine.

Default corpus `python-stdlib`: every `.py` file of the running Python's standard library, test suites included
(`site-packages`/`dist-packages` and non-UTF-8 files left out), plus the `.py` files inside the wheels that
`ensurepip/_bundled` ships (read from the zip, named `ensurepip/<wheel>/<path>`); one document per file, sorted by
path. The test suites hold most of the long files, and the long-context evaluation needs documents of >= 32k
tokens: with byte tokens, CPython 3.11.7 gives 2,500 documents (40.6 MB), 325 of them >= 32,768 tokens
(train 307 / validation 18); without the test suites it was 96. Other Python versions differ a little (3.12 bundles
pip only, no setuptools; a distribution that strips the `test` package has far fewer long documents); rows
record the corpus checksum for that reason.
Split (fixed, same on every machine): `int(sha1(relpath).hexdigest(), 16) % 100 < val_percent` -> "validation",
else "train". `Corpus.checksum` = sha256 over the sorted `path \\0 sha256(content) \\n` lines. The default corpus is
read once per process. `hf_corpus` streams a Hugging Face `datasets` corpus (e.g. PG-19).

Tokenizers (`get_tokenizer`): `byte` (UTF-8 bytes + EOS, vocab 257, the default); `bpe` / `bpe<N>`: a byte-level
BPE of N tokens (default 4096) trained with the `tokenizers` package on the corpus's train split only, cached at
`$TTT_BENCH_CACHE/tokenizers/<corpus>-<checksum[:12]>-bpe<N>.json` (default root ~/.cache/ttt-bench), the same
merges for the same corpus; `llama2`: the Llama-2 tokenizer through `transformers`, only from local files.

Training stream (`PackedWindows`): documents packed with EOS between them into consecutive windows (see there).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import re
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ttt.errors import UserError, require

SPLITS = ("train", "validation")
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
BUNDLED_WHEELS = "ensurepip/_bundled"
EOS_TOKEN = "<|endoftext|>"
DEFAULT_BPE_VOCAB = 4096
LLAMA2_TOKENIZER = "meta-llama/Llama-2-7b-hf"


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus EOS = 256 (vocab 257); needs no download."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenization, so any text round-trips) from a `tokenizers` JSON file."""

    def __init__(self, path: str | Path) -> None:
        tk = require("tokenizers", "eval", what="tokenizer 'bpe'")
        self.path = Path(path)
        self._tok = tk.Tokenizer.from_file(str(self.path))
        self.vocab_size = self._tok.get_vocab_size()
        self.name = f"bpe{self.vocab_size}"
        eos = self._tok.token_to_id(EOS_TOKEN)
        if eos is None:
            raise UserError(f"BPE tokenizer file '{path}' has no {EOS_TOKEN} token")
        self.eos_id = eos

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))  # EOS is a special token: skipped


class HFTokenizer:
    """A `transformers` tokenizer read from local files only (no download at run time); no BOS/EOS added."""

    def __init__(self, name: str, source: str) -> None:
        transformers = require("transformers", "eval", what=f"tokenizer {name!r}")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as e:
            raise UserError(
                f"tokenizer {name!r} needs the Llama-2 tokenizer files on this machine, and {source!r} is not there "
                f"({type(e).__name__}); fetch them once with `huggingface-cli download {LLAMA2_TOKENIZER} "
                "tokenizer.model tokenizer.json tokenizer_config.json special_tokens_map.json` (a gated repo: accept "
                "its license first), or give a local directory with data.tokenizer_path=DIR"
            ) from None
        tok.model_max_length = 1 << 60  # documents are long on purpose: no truncation warning
        self._tok, self.name, self.source = tok, name, source
        self.vocab_size = len(tok)
        self.eos_id = int(tok.eos_token_id)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._tok(texts, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)


TOKENIZERS = ("byte", "bpe", "llama2")


def cache_root() -> Path:
    """Where trained tokenizers are kept: $TTT_BENCH_CACHE, else ~/.cache/ttt-bench."""
    env = os.environ.get("TTT_BENCH_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ttt-bench"


def bpe_path(corpus: Corpus, vocab_size: int) -> Path:
    return cache_root() / "tokenizers" / f"{corpus.name}-{corpus.checksum[:12]}-bpe{vocab_size}.json"


def train_bpe(corpus: Corpus, vocab_size: int = DEFAULT_BPE_VOCAB) -> Path:
    """Train a byte-level BPE of `vocab_size` tokens (EOS included) on the corpus's train split, unless the cache
    already holds it; returns the JSON file. Deterministic: the same corpus gives the same merges."""
    if vocab_size < 258:
        raise UserError(f"a BPE vocabulary needs more than the 256 bytes + EOS, got bpe vocab_size={vocab_size}")
    path = bpe_path(corpus, vocab_size)
    if path.is_file():
        return path
    tk = require("tokenizers", "eval", what="tokenizer 'bpe'")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),  # every byte: nothing is ever unknown
        show_progress=False,
    )
    docs = corpus.split("train")
    tok.train_from_iterator((d.text for d in docs), trainer=trainer, length=len(docs))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tok.save(str(tmp))
    os.replace(tmp, path)  # atomic: a parallel run reads either no file or a whole one
    return path


def get_tokenizer(
    name: str = "byte",
    *,
    corpus: Corpus | None = None,
    vocab_size: int | None = None,
    path: str | Path | None = None,
) -> Tokenizer:
    """`byte`; `bpe` (vocab_size, default 4096) or `bpe<N>`, trained on `corpus` (default python-stdlib) or read
    from `path`; `llama2` (from `path`, default the Hugging Face cache of meta-llama/Llama-2-7b-hf).
    A tokenizer's `name` given back here builds the same tokenizer (for the same corpus)."""
    name = str(name)
    if name == "byte":
        return ByteTokenizer()
    m = re.fullmatch(r"bpe(\d*)", name)
    if m:
        if path is not None:
            return BPETokenizer(path)
        n = int(m.group(1)) if m.group(1) else int(vocab_size or DEFAULT_BPE_VOCAB)
        if m.group(1) and vocab_size is not None and int(vocab_size) != n:
            raise UserError(f"tokenizer {name!r} names vocab {n}, but vocab_size={vocab_size} was given")
        return BPETokenizer(train_bpe(corpus if corpus is not None else load_corpus(), n))
    if name == "llama2":
        return HFTokenizer(name, str(path) if path is not None else LLAMA2_TOKENIZER)
    raise UserError(f"unknown tokenizer {name!r}; known: {', '.join(TOKENIZERS)} (bpe<N>: a BPE of N tokens)")


def _encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Token ids as a LongTensor; bytes go through a buffer instead of a list of Python ints."""
    if isinstance(tokenizer, ByteTokenizer):
        raw = text.encode("utf-8")
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long() if raw else torch.zeros(0, dtype=torch.long)
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def _encode_all(tokenizer: Tokenizer, texts: list[str]) -> list[torch.Tensor]:
    batch = getattr(tokenizer, "encode_batch", None)
    if batch is None:
        return [_encode(tokenizer, t) for t in texts]
    return [torch.tensor(ids, dtype=torch.long) for ids in batch(texts)]  # the Rust side encodes in parallel


def _eos(tokenizer: Tokenizer) -> int:
    return getattr(tokenizer, "eos_id", tokenizer.vocab_size - 1)


@dataclass(frozen=True)
class Document:
    path: str  # relative path (stdlib) or a row id (datasets): the key of the split hash
    text: str


def split_of(path: str, val_percent: int = 5) -> str:
    """The fixed split of a document: the same on every machine and Python version."""
    return "validation" if int(hashlib.sha1(path.encode()).hexdigest(), 16) % 100 < val_percent else "train"


class Corpus:
    """Documents sorted by path, a hash split and a checksum; token streams are cached per (tokenizer, split)."""

    def __init__(self, name: str, documents: list[Document], val_percent: int = 5) -> None:
        if not 0 <= val_percent <= 100:
            raise UserError(f"val_percent={val_percent} must lie in 0..100")
        self.name, self.val_percent = name, val_percent
        self.documents = sorted(documents, key=lambda d: d.path)
        self._tokens: dict[tuple[str, str], list[torch.Tensor]] = {}
        self._packed: dict[tuple[str, str], tuple[torch.Tensor, list[int]]] = {}

    @cached_property
    def checksum(self) -> str:
        h = hashlib.sha256()
        for d in self.documents:
            h.update(f"{d.path}\0{hashlib.sha256(d.text.encode()).hexdigest()}\n".encode())
        return h.hexdigest()

    def split(self, split: str) -> list[Document]:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        return [d for d in self.documents if split_of(d.path, self.val_percent) == split]

    def tokens(self, split: str, tokenizer: Tokenizer) -> list[torch.Tensor]:
        """One LongTensor per document of the split, in path order."""
        key = (tokenizer.name, split)
        if key not in self._tokens:
            self._tokens[key] = _encode_all(tokenizer, [d.text for d in self.split(split)])
        return self._tokens[key]


def _wheel_documents(wheel: Path, prefix: str) -> list[Document]:
    docs = []
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.filename.endswith(".py") or info.is_dir():
                continue
            try:
                docs.append(Document(f"{prefix}/{wheel.name}/{info.filename}", z.read(info).decode("utf-8")))
            except UnicodeDecodeError:
                continue
    return docs


def _stdlib_documents(base: Path) -> list[Document]:
    docs = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]  # prune: site-packages alone is ~10k files
        for f in filenames:
            p = Path(dirpath, f)
            if not p.is_file():
                continue
            rel = p.relative_to(base).as_posix()
            if f.endswith(".whl") and rel.startswith(BUNDLED_WHEELS + "/"):
                docs.extend(_wheel_documents(p, "ensurepip"))
            elif f.endswith(".py"):
                try:
                    docs.append(Document(rel, p.read_bytes().decode("utf-8")))
                except UnicodeDecodeError:
                    continue
    return docs


_DEFAULT_STDLIB: dict[int, Corpus] = {}  # val_percent -> corpus of the running Python (it does not change)


def python_stdlib(root: str | Path | None = None, val_percent: int = 5) -> Corpus:
    """The standard library's `.py` files (and bundled wheels' `.py` files) under `root` (default: the running
    Python's stdlib, read once per process; an explicit root is read afresh each call)."""
    if root is None and val_percent in _DEFAULT_STDLIB:
        return _DEFAULT_STDLIB[val_percent]
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    corpus = Corpus("python-stdlib", _stdlib_documents(base), val_percent)
    if root is None:
        _DEFAULT_STDLIB[val_percent] = corpus
    return corpus


CORPORA = {"python-stdlib": python_stdlib}


def load_corpus(name: str = "python-stdlib", root: str | Path | None = None, val_percent: int = 5) -> Corpus:
    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; known: {', '.join(sorted(CORPORA))} (or bench.data.hf_corpus)")
    return CORPORA[name](root=root, val_percent=val_percent)


def hf_corpus(name: str, split: str = "train", text_field: str = "text", **load_kwargs) -> Iterator[Document]:
    """Documents of a Hugging Face `datasets` corpus (needs a network unless local), e.g. hf_corpus("pg19", "test").

    Imports and loads at the call, so a missing package or field fails here, not at the first document.
    """
    datasets = require("datasets", "eval", what=f"corpus {name!r}")
    ds = datasets.load_dataset(name, split=split, **load_kwargs)
    if text_field not in ds.column_names:
        raise UserError(f"corpus {name!r} has no field {text_field!r}; fields: {', '.join(ds.column_names)}")
    return (Document(f"{name}/{split}/{i}", row[text_field]) for i, row in enumerate(ds))


def long_documents(corpus: Corpus, split: str, tokenizer: Tokenizer, min_tokens: int) -> list[Document]:
    """Documents of the split with at least `min_tokens` tokens (for long-context evaluation); may be empty."""
    toks = corpus.tokens(split, tokenizer)
    return [d for d, t in zip(corpus.split(split), toks) if len(t) >= min_tokens]


def token_windows(
    corpus: Corpus, tokenizer: Tokenizer, split: str, ctx: int, n: int, seed: int = 0, concat: bool = True
) -> torch.Tensor:
    """`n` windows of `ctx` tokens as a LongTensor (n, ctx), the same for the same arguments.

    concat=True (training): windows at uniform offsets of the split's documents joined by EOS.
    concat=False (long-context evaluation): each window lies inside one document of >= ctx tokens,
    offsets uniform over all such positions; no such document -> UserError naming ctx and the longest length.
    """
    if ctx < 1 or n < 0:
        raise UserError(f"token_windows needs ctx >= 1 and n >= 0, got ctx={ctx}, n={n}")
    toks = corpus.tokens(split, tokenizer)
    longest = max((len(t) for t in toks), default=0)
    g = torch.Generator().manual_seed(seed)
    if concat:
        eos = torch.tensor([_eos(tokenizer)])
        stream = torch.cat([x for t in toks for x in (t, eos)]) if toks else torch.zeros(0, dtype=torch.long)
        if len(stream) < ctx:
            raise UserError(
                f"ctx={ctx} exceeds the {len(stream)} tokens of {corpus.name}/{split} (longest document: {longest})"
            )
        starts = torch.randint(0, len(stream) - ctx + 1, (n,), generator=g)
        return stream[starts[:, None] + torch.arange(ctx)]
    docs = [t for t in toks if len(t) >= ctx]
    if not docs:
        raise UserError(
            f"ctx={ctx} is longer than every document of {corpus.name}/{split}; the longest has {longest} tokens"
        )
    cum, total = [], 0
    for t in docs:
        total += len(t) - ctx + 1
        cum.append(total)
    out = torch.empty(n, ctx, dtype=torch.long)
    for i, k in enumerate(torch.randint(0, total, (n,), generator=g).tolist()):
        j = bisect.bisect_right(cum, k)
        off = k - (cum[j - 1] if j else 0)
        out[i] = docs[j][off : off + ctx]
    return out


class PackedWindows:
    """The training stream of a split: in each epoch the split's documents, in an order drawn from (seed, epoch),
    joined with EOS after every document and cut into consecutive windows of ctx + 1 tokens (inputs and their
    next-token targets); the epoch's last partial window is dropped.

    Packing, not long documents only: it trains on every token of the split (the >= 32k documents are ~1/3 of it),
    as the paper's runs pack their corpora into fixed-length sequences, and a 32k window still holds long
    documents whole or in large parts. Window i overall is window i % n of epoch i // n, so the number of windows
    consumed is the whole data position: a resumed run sees exactly the windows an uninterrupted one would.
    """

    def __init__(self, corpus: Corpus, tokenizer: Tokenizer, split: str, ctx: int, seed: int = 0) -> None:
        if ctx < 1:
            raise UserError(f"ctx must be >= 1, got {ctx}")
        self.flat, self.offsets = _packed(corpus, tokenizer, split)
        self.key = (corpus.name, corpus.checksum, corpus.val_percent, tokenizer.name, split, int(seed))
        self.length, self.seed = ctx + 1, int(seed)
        self.per_epoch = len(self.flat) // self.length
        if self.per_epoch < 1:
            raise UserError(
                f"ctx={ctx} needs windows of {self.length} tokens, but {corpus.name}/{split} has {len(self.flat)} "
                f"({tokenizer.name} tokens, EOS included)"
            )

    def order(self, epoch: int) -> list[int]:
        """The documents' order in `epoch` (indices into the split's path order)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.offsets) - 1, generator=g).tolist()

    def epoch(self, epoch: int) -> torch.Tensor:
        """All windows of one epoch, (per_epoch, ctx + 1), int32."""
        key = (*self.key, epoch)
        if key not in _EPOCHS:
            off = self.offsets
            stream = torch.cat([self.flat[off[i] : off[i + 1]] for i in self.order(epoch)])
            while len(_EPOCHS) >= 2:  # the epoch in use and the next one
                _EPOCHS.pop(next(iter(_EPOCHS)))
            _EPOCHS[key] = stream
        return _EPOCHS[key][: self.per_epoch * self.length].view(self.per_epoch, self.length)

    def take(self, position: int, n: int) -> torch.Tensor:
        """Windows position .. position + n - 1 overall, as a LongTensor (n, ctx + 1)."""
        rows = [self.epoch(i // self.per_epoch)[i % self.per_epoch] for i in range(position, position + n)]
        return torch.stack(rows).long()


# Epoch streams, shared by the PackedWindows of one process (runs in one process, e.g. tests, build each once).
_EPOCHS: dict[tuple, torch.Tensor] = {}


def _packed(corpus: Corpus, tokenizer: Tokenizer, split: str) -> tuple[torch.Tensor, list[int]]:
    """The split's documents in path order, each followed by EOS, as one int32 tensor, and the documents' offsets
    into it (len = documents + 1); cached on the corpus."""
    key, cache = (tokenizer.name, split), corpus._packed
    if key not in cache:
        toks = corpus.tokens(split, tokenizer)
        eos = torch.tensor([_eos(tokenizer)], dtype=torch.int32)
        flat = torch.cat([x for t in toks for x in (t.to(torch.int32), eos)]) if toks else eos[:0]
        offsets = [0]
        for t in toks:
            offsets.append(offsets[-1] + len(t) + 1)
        cache[key] = (flat, offsets)
    return cache[key]


def export(corpus: Corpus, root: str | Path) -> int:
    """Write every document to root/<path> (UTF-8, bytes as they are). `load_corpus(root=root)` then reads back the
    same documents, so the same checksum: the way to carry one machine's corpus to another (e.g. to a GPU image
    whose Python lacks the test suite). Returns the number of documents."""
    root = Path(root)
    for d in corpus.documents:
        p = root / d.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(d.text.encode("utf-8"))
    return len(corpus.documents)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.data` prints the default corpus's counts; `python -m bench.data export DIR` writes it out."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.data", description=main.__doc__)
    ap.add_argument("command", nargs="?", choices=("stats", "export"), default="stats")
    ap.add_argument("dir", nargs="?", help="export: the directory to write the documents into")
    ap.add_argument("--root", default=None, help="read the corpus from this directory instead of the stdlib")
    a = ap.parse_args(argv)
    corpus, tok = load_corpus(root=a.root), ByteTokenizer()
    if a.command == "export":
        if not a.dir:
            ap.error("export needs a directory")
        n = export(corpus, a.dir)
        print(f"{n} documents of {corpus.name} ({corpus.checksum[:12]}) written under {a.dir}")
        return
    size = sum(len(d.text.encode()) for d in corpus.documents)
    print(f"{corpus.name}: {len(corpus.documents)} documents, {size / 1e6:.1f} MB, checksum {corpus.checksum[:12]}")
    for s in SPLITS:
        long = len(long_documents(corpus, s, tok, 32_768))
        print(f"  {s}: {len(corpus.split(s))} documents, {long} of >= 32,768 byte tokens")


if __name__ == "__main__":
    main()
