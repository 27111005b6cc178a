"""Text corpora and tokenizers behind one interface, with a default that works offline on a fresh machine.

Default corpus `python-stdlib`: the `.py` files of the running Python's standard library, one document per file
(`site-packages`, `test`/`tests`/`idlelib`/`lib2to3` dirs and non-UTF-8 files excluded), sorted by relative path.
Split (fixed, same on every machine): `int(sha1(relpath).hexdigest(), 16) % 100 < val_percent` -> "validation",
else "train". `Corpus.checksum` = sha256 over the sorted `path \\0 sha256(content) \\n` lines; rows record it because
the stdlib differs between Python versions. `hf_corpus` streams a Hugging Face `datasets` corpus (e.g. PG-19).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ttt.errors import UserError, require

SPLITS = ("train", "validation")
EXCLUDED_DIRS = frozenset({"site-packages", "test", "tests", "idlelib", "lib2to3"})


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int

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


TOKENIZERS = {"byte": ByteTokenizer}


def get_tokenizer(name: str = "byte") -> Tokenizer:
    if name not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {name!r}; known: {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[name]()


def _encode(tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Token ids as a LongTensor; bytes go through a buffer instead of a list of Python ints."""
    if isinstance(tokenizer, ByteTokenizer):
        raw = text.encode("utf-8")
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long() if raw else torch.zeros(0, dtype=torch.long)
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


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

    @property
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
            self._tokens[key] = [_encode(tokenizer, d.text) for d in self.split(split)]
        return self._tokens[key]


def python_stdlib(root: str | Path | None = None, val_percent: int = 5) -> Corpus:
    """The standard library's `.py` files under `root` (default: the running Python's stdlib)."""
    base = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    docs = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]  # prune: site-packages alone is ~10k files
        for f in filenames:
            p = Path(dirpath, f)
            if not f.endswith(".py") or not p.is_file():
                continue
            try:
                docs.append(Document(p.relative_to(base).as_posix(), p.read_bytes().decode("utf-8")))
            except UnicodeDecodeError:
                continue
    return Corpus("python-stdlib", docs, val_percent)


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
