"""Perplexity of trained checkpoints against context length, and loss against token index (the paper's Figs. 4-5).

    python -m bench.ppl 'checkpoints=[ckpt/ttt_linear,ckpt/mamba]' 'ctxs=[1024,2048,4096,8192,16384,32768]'
    python -m bench.ppl protocol=trained_per_ctx 'checkpoints=[ckpt/ttt_linear-2k,ckpt/ttt_linear-32k]'

Evaluation set (the same tokens at every ctx): N documents of the validation split with >= L = max(ctxs) tokens
(`bench.data.long_documents`; a seeded draw of N of them, in path order; all of them, said on stderr and in the
rows' `n_sequences`, when fewer exist), each taken as one sequence EOS + its first L tokens: the EOS that preceded
every document in training, so the document's first token is predicted too. At ctx c every sequence is cut into
L / c windows of c input tokens, each run from a fresh state, and each input position predicts the next token:
every ctx scores the same N x L tokens (`n_tokens`), and `loss` is their mean next-token loss (nats/token),
`ppl` = exp(loss). Every ctx must divide L for that reason.

Protocols (the `protocol` column): `single_model_eval_ctx` evaluates each checkpoint at every ctx (one long-context
model, the RNNs at any ctx with their train ctx recorded, a Transformer only up to its train ctx unless
allow_extrapolation=true: RoPE positions beyond it were never trained); `trained_per_ctx` (the paper's) evaluates
each of several checkpoints at its own train ctx only, on the same L-token sequences.

Loss by token (`loss_by_token` rows): at each checkpoint's largest evaluated ctx (under trained_per_ctx only for
the checkpoint trained at L), the mean loss over the positions of a bucket inside the window; `token_index` is the
bucket's last position (1-based: position p predicts the p-th token of the window's targets), `token_index_start`
its first; the buckets cover every position once, and their edges are the same for every ctx (bucket_ranges).

Rows also carry, beyond the schema: train_ctx, corpus_checksum (12 hex), n_sequences, seq_len (L),
windows_per_forward, checkpoint_dir, train_tokens, and for loss_by_token token_index_start and buckets. `batch` is
the number of sequences N (constant over ctx, so a figure's line is never split by it).

Each checkpoint runs with the fastest implementation on the device (bench/registry.py), checked against the
reference on a short random input first; bf16 on CUDA, fp32 on CPU. Rows are appended per (checkpoint, ctx), so a
failure (OOM at 32k) is a status row and never costs finished rows; a rerun skips (checkpoint, protocol, ctx,
metric) already in the results file for the same evaluation set (the `config_hash` column) unless force=true.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench import checkpoint, data, latency, registry, results
from bench.cli import explicit_keys, guarded
from bench.plan import DTYPES, dtype_name, resolve_device
from ttt.errors import UserError

PROTOCOLS = ("single_model_eval_ctx", "trained_per_ctx")
NATS = "nats/token"
LBT = "loss_by_token"
UNITS = {"ppl": "ppl", "loss": NATS, LBT: NATS}
CE_CHUNK = 8192  # positions per float32 cross-entropy chunk: a 32k x vocab float copy never exists at once


# ---- the evaluation set --------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """N sequences of EOS + the first `length` tokens of one long document each: (N, length + 1) int64."""

    tokens: torch.Tensor
    paths: list[str]
    asked: int
    corpus: data.Corpus
    tokenizer: data.Tokenizer
    split: str
    seed: int

    @property
    def length(self) -> int:
        return self.tokens.shape[1] - 1

    def identity(self) -> dict[str, Any]:
        """What makes two evaluations comparable: the rows' config_hash and the resume key hash this."""
        return {
            "corpus": self.corpus.name,
            "corpus_checksum": self.corpus.checksum,
            "tokenizer": self.tokenizer.name,
            "split": self.split,
            "length": self.length,
            "n_sequences_asked": self.asked,
            "seed": self.seed,
        }


def eos_id(tokenizer: data.Tokenizer) -> int:
    return int(getattr(tokenizer, "eos_id", tokenizer.vocab_size - 1))


def eval_set(
    corpus: data.Corpus, tokenizer: data.Tokenizer, length: int, n: int, *, split: str = "validation", seed: int = 0
) -> EvalSet:
    """The first `length` tokens of `n` documents with >= `length` tokens, each after an EOS (all such documents
    when there are fewer than `n`; none -> one-line UserError)."""
    docs = data.long_documents(corpus, split, tokenizer, length)
    if not docs:
        longest = max((len(t) for t in corpus.tokens(split, tokenizer)), default=0)
        raise UserError(
            f"no document of {corpus.name}/{split} has {length} {tokenizer.name} tokens (the longest has {longest}); "
            f"use a smaller max(ctxs) or a corpus with longer documents"
        )
    g = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(docs), generator=g)[:n].tolist())
    by_path = dict(zip((d.path for d in corpus.split(split)), corpus.tokens(split, tokenizer)))
    eos = torch.tensor([eos_id(tokenizer)], dtype=torch.long)
    seqs = [torch.cat([eos, by_path[docs[i].path][:length].long()]) for i in chosen]
    return EvalSet(torch.stack(seqs), [docs[i].path for i in chosen], n, corpus, tokenizer, split, seed)


def bucket_ranges(
    ctx: int, kind: str = "log", n: int = 64, width: int = 512, length: int | None = None
) -> list[tuple[int, int]]:
    """Buckets of window positions 1..ctx as (first, last), 1-based and inclusive, covering each position once.
    log: about n buckets over 1..length (default ctx), equal steps in log2(position) with every power of two an
    edge, merged where two round to the same position; linear: `width` each. The edges come from `length` and stop
    at ctx, so a model evaluated at a shorter power-of-two ctx than the others (a Transformer at its train ctx)
    has exactly their buckets up to its ctx."""
    length = max(length or ctx, ctx)
    if kind == "log":
        octaves = max(math.log2(length), 1.0)
        per_octave = max(1, round(n / octaves))
        ends = {round(2 ** (j / per_octave)) for j in range(1, math.ceil(octaves * per_octave) + 1)}
    elif kind == "linear":
        if width < 1:
            raise UserError(f"bucket_width must be >= 1, got {width}")
        ends = set(range(width, length, width))
    else:
        raise UserError(f"unknown buckets '{kind}'; known: log, linear")
    ends = sorted({e for e in ends if e < ctx} | {ctx})
    return [(prev + 1, end) for prev, end in zip([0, *ends[:-1]], ends)]


# ---- measuring -----------------------------------------------------------------------------------------------------


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token next-token loss (B, T) in float32, from logits (B, T, V) in any dtype, a chunk of positions at a time."""
    B, T = targets.shape
    out = torch.empty(B, T, dtype=torch.float32, device=logits.device)
    for s in range(0, T, CE_CHUNK):
        lg = logits[:, s : s + CE_CHUNK].float()
        tg = targets[:, s : s + CE_CHUNK]
        out[:, s : s + CE_CHUNK] = F.cross_entropy(lg.flatten(0, 1), tg.flatten(), reduction="none").view(tg.shape)
    return out


@dataclass
class WindowLoss:
    loss_sum: float  # nats over every predicted token
    n_tokens: int
    n_windows: int
    by_position: torch.Tensor | None  # (ctx,) float64: loss summed over windows at each window position


@torch.inference_mode()
def window_losses(
    net: torch.nn.Module,
    seqs: torch.Tensor,
    ctx: int,
    *,
    batch: int,
    by_position: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> WindowLoss:
    """Cut each (length + 1)-token sequence into length / ctx windows of ctx inputs, run each window from a fresh
    state, and score every input position's prediction of the next token."""
    n, total = seqs.shape
    length = total - 1
    if length % ctx:
        raise UserError(f"ctx={ctx} does not divide the sequence length {length}")
    inputs = seqs[:, :-1].reshape(-1, ctx)
    targets = seqs[:, 1:].reshape(-1, ctx)
    device = next(net.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    pos = torch.zeros(ctx, dtype=torch.float64, device=device) if by_position else None
    for i in range(0, len(inputs), batch):
        x = inputs[i : i + batch].to(device)
        y = targets[i : i + batch].to(device)
        nll = token_nll(net(x), y)
        loss_sum += nll.sum(dtype=torch.float64)
        if pos is not None:
            pos += nll.sum(0, dtype=torch.float64)
        if on_batch is not None:
            on_batch()
    return WindowLoss(float(loss_sum), n * length, len(inputs), pos.cpu() if pos is not None else None)


def measure_rows(
    net: torch.nn.Module,
    es: EvalSet,
    ctx: int,
    *,
    batch: int,
    metrics: set[str],
    buckets: dict[str, Any],
    on_batch: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Partial rows (ppl, loss, and loss_by_token buckets where asked) of one model at one ctx. Out of memory, the
    windows per forward are halved and the ctx run again; only a single window that does not fit raises."""
    device = next(net.parameters()).device
    while True:
        latency._reset_peak(device)
        start = time.perf_counter()
        try:
            wl = window_losses(net, es.tokens, ctx, batch=batch, by_position=LBT in metrics, on_batch=on_batch)
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
        # Outside the except block: its frames (and the batch's tensors) are gone, so the memory can go back.
        latency.free_memory()
        batch //= 2
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    common = {
        "stat": "mean",
        "peak_mem_bytes": latency._peak(device),
        "tokens_per_s": wl.n_tokens / elapsed,
        "windows_per_forward": batch,
    }
    mean = wl.loss_sum / wl.n_tokens
    rows = [
        dict(common, metric="ppl", value=math.exp(mean), unit="ppl", n_tokens=wl.n_tokens),
        dict(common, metric="loss", value=mean, unit=NATS, n_tokens=wl.n_tokens),
    ]
    if wl.by_position is not None:
        spec = _bucket_label(buckets)
        for first, last in bucket_ranges(ctx, buckets["kind"], buckets["n"], buckets["width"], es.length):
            count = wl.n_windows * (last - first + 1)
            value = float(wl.by_position[first - 1 : last].sum()) / count
            rows.append(
                dict(common, metric=LBT, value=value, unit=NATS, n_tokens=count, token_index=last)
                | {"token_index_start": first, "buckets": spec}
            )
    return [r for r in rows if r["metric"] in metrics]


def _bucket_label(buckets: dict[str, Any]) -> str:
    return f"log{buckets['n']}" if buckets["kind"] == "log" else f"linear{buckets['width']}"


def check_impl(
    net: torch.nn.Module, model: str, dtype: str, *, vocab: int, tokens: int = 64, tol: float | None = None
) -> tuple[float | None, str]:
    """(relative error, error text) of the model's impl against its reference on random tokens (bench/latency.py's
    check); (None, '') when the impl is the reference itself."""
    ref = registry.reference_impl(model, net.impl)
    if ref is None:
        return None, ""
    tol = latency.CHECK_TOL[dtype] if tol is None else tol
    try:
        err = latency.check_against_reference(net, ref, vocab=vocab, batch=1, tokens=tokens)
    except Exception as e:  # the check itself broke (OOM included): nothing of this impl is trusted
        latency.free_memory()
        return None, f"check against {model}/{ref} failed: {type(e).__name__}: {e}"
    if not err <= tol:  # NaN fails too
        return err, f"{model}/{net.impl} differs from {model}/{ref}: rel err {err:.3g} > tol {tol:g}"
    return err, ""


# ---- what to run ---------------------------------------------------------------------------------------------------


@dataclass
class Ckpt:
    path: Path
    meta: dict[str, Any]
    model: str
    family: str
    digest: str
    impl: str
    train_ctx: int | None
    ctxs: list[int]
    evalset: EvalSet

    @property
    def lbt_ctx(self) -> int:
        return max(self.ctxs)


@dataclass
class Setup:
    device: torch.device
    dtype: str
    protocol: str
    ckpts: list[Ckpt]
    length: int
    results: Path
    force: bool
    progress: bool
    time_limit_s: float | None
    cpu_default: bool
    tokens_per_batch: int
    loss_by_token: bool
    buckets: dict[str, Any]
    check: bool
    check_tokens: int
    check_tol: float | None


def _ints(what: str, values: Any) -> list[int]:
    vals = list(OmegaConf.to_container(values)) if OmegaConf.is_list(values) else [values]
    out = []
    for v in vals:
        try:
            n = int(v)
        except (TypeError, ValueError):
            n = 0
        if n <= 0 or str(n) != str(v).strip():
            raise UserError(f"{what} must be positive integers, not '{v}'")
        out.append(n)
    return sorted(set(out))


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in OmegaConf.to_container(value)] if OmegaConf.is_list(value) else [str(value)]


class _Corpora:
    """Corpora, tokenizers and evaluation sets, each built once per run (several checkpoints share them)."""

    def __init__(self, length: int, n: int, split: str, seed: int) -> None:
        self.length, self.n, self.split, self.seed = length, n, split, seed
        self._corpora: dict[tuple, data.Corpus] = {}
        self._toks: dict[tuple, data.Tokenizer] = {}
        self._sets: dict[tuple, EvalSet] = {}

    def corpus(self, name: str, root: str | None, val_percent: int) -> data.Corpus:
        key = (name, root, val_percent)
        if key not in self._corpora:
            if root is not None and not Path(root).is_dir():
                raise UserError(f"corpus root '{root}' is not a directory here; give corpus_root=DIR")
            self._corpora[key] = data.load_corpus(name, root=root, val_percent=val_percent)
        return self._corpora[key]

    def tokenizer(self, name: str, corpus: data.Corpus, path: str | None) -> data.Tokenizer:
        key = (name, corpus.checksum, path)
        if key not in self._toks:
            self._toks[key] = data.get_tokenizer(name, corpus=corpus, path=path)
        return self._toks[key]

    def evalset(self, corpus: data.Corpus, tok: data.Tokenizer) -> EvalSet:
        key = (corpus.checksum, tok.name)
        if key not in self._sets:
            es = eval_set(corpus, tok, self.length, self.n, split=self.split, seed=self.seed)
            if len(es.paths) < self.n:
                print(
                    f"only {len(es.paths)} document(s) of {corpus.name}/{self.split} have >= {self.length} {tok.name} "
                    f"tokens (asked for {self.n}): evaluating {len(es.paths)} sequence(s); rows say n_sequences",
                    file=sys.stderr,
                )
            self._sets[key] = es
        return self._sets[key]


def _data_of(cfg: DictConfig, meta: dict[str, Any], corpora: _Corpora, path: Path) -> EvalSet:
    dmeta = meta.get("data") or {}
    name = str(cfg.corpus or meta.get("corpus") or "python-stdlib")
    root = cfg.corpus_root or (dmeta.get("root") if name == meta.get("corpus") else None)
    corpus = corpora.corpus(name, str(root) if root else None, int(dmeta.get("val_percent", 5)))
    tok_name = str(meta.get("tokenizer") or "byte")
    tok = corpora.tokenizer(tok_name, corpus, dmeta.get("tokenizer_path") if tok_name == "llama2" else None)
    trained_on = meta.get("corpus_checksum")
    if trained_on and name == meta.get("corpus") and not corpus.checksum.startswith(str(trained_on)):
        msg = (
            f"checkpoint '{path}' was trained on {name} with checksum {str(trained_on)[:12]}, "
            f"this machine's reads {corpus.checksum[:12]}"
        )
        if tok_name != "byte":  # a tokenizer trained on other text maps the same bytes to other ids
            raise UserError(f"{msg}: its {tok_name} tokenizer would differ; give corpus_root=DIR with that corpus")
        print(f"warning: {msg}; rows record the checksum evaluated", file=sys.stderr)
    vocab = int(meta["size"].get("vocab_size", 0))
    if tok.vocab_size > vocab:
        raise UserError(
            f"checkpoint '{path}' has a vocabulary of {vocab}, its tokenizer {tok.name} has {tok.vocab_size}"
        )
    return corpora.evalset(corpus, tok)


def _ctxs_of(
    cfg: DictConfig, protocol: str, ctxs: list[int], path: Path, model: str, family: str, train_ctx: int | None
) -> list[int]:
    length = max(ctxs)
    if protocol == "trained_per_ctx":
        if train_ctx is None:
            raise UserError(
                f"protocol=trained_per_ctx needs each checkpoint's train_ctx; '{path}' has none in meta.json"
            )
        if train_ctx > length or length % train_ctx:
            raise UserError(
                f"checkpoint '{path}' was trained at ctx {train_ctx}, which must divide max(ctxs)={length} "
                f"(the length of the evaluation sequences)"
            )
        return [train_ctx]
    if family == "transformer" and not cfg.allow_extrapolation:
        beyond = [c for c in ctxs if train_ctx is None or c > train_ctx]
        if beyond:
            trained = f"trained at ctx {train_ctx}" if train_ctx else "saved without a train_ctx in meta.json"
            raise UserError(
                f"checkpoint '{path}' ({model}) was {trained}; ctx {','.join(map(str, beyond))} lies beyond it, where "
                f"its RoPE positions were never trained: drop those ctxs or set allow_extrapolation=true"
            )
    return list(ctxs)


def resolve(cfg: DictConfig, explicit: set[str] | None = None) -> Setup:
    """The run `cfg` asks for, checked: every bad request is a one-line UserError before anything is evaluated."""
    explicit = explicit or set()
    device = resolve_device(cfg.get("device", "auto"))
    on_cpu = device.type != "cuda"
    cpu_defaults = cfg.get("cpu_default") or {}
    filled = {}
    if on_cpu and "ctxs" not in explicit and "ctxs" in cpu_defaults:
        filled["ctxs"] = cpu_defaults.ctxs
    if on_cpu and "bench.n_sequences" not in explicit and "n_sequences" in cpu_defaults:
        filled["n_sequences"] = cpu_defaults.n_sequences
    ctxs = _ints("ctxs", filled.get("ctxs", cfg.ctxs))
    if not ctxs:
        raise UserError("ctxs is empty; give e.g. 'ctxs=[1024,2048]'")
    length = max(ctxs)
    odd = [c for c in ctxs if length % c]
    if odd:
        raise UserError(
            f"ctx {','.join(map(str, odd))} does not divide max(ctxs)={length}: every ctx evaluates the same "
            f"{length}-token sequences cut into whole windows"
        )
    protocol = str(cfg.protocol)
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    paths = [Path(p) for p in _strings(cfg.checkpoints)]
    if not paths:
        raise UserError("no checkpoints given; e.g. 'checkpoints=[checkpoints/ttt_linear-small-32k]'")
    expected = _strings(cfg.get("models"))
    if len(expected) == 1:
        expected = expected * len(paths)
    if expected and len(expected) != len(paths):
        raise UserError(f"models names {len(expected)} models for {len(paths)} checkpoints")
    dtype = dtype_name(cfg.dtype or ("float32" if on_cpu else "bfloat16"))
    b = cfg.bench
    n_seq = _ints("bench.n_sequences", filled.get("n_sequences", b.n_sequences))[0]
    corpora = _Corpora(length, n_seq, str(b.split), int(b.seed))
    impls = cfg.get("impls") or {}
    ckpts = []
    for i, path in enumerate(paths):
        meta = checkpoint.load_meta(path)
        model = str(meta["model"])
        if expected and model != expected[i]:
            raise UserError(f"checkpoint '{path}' holds model '{model}', not '{expected[i]}'")
        mcfg = registry.model_config(model)
        if meta.get("model_overrides"):
            mcfg = OmegaConf.merge(mcfg, meta["model_overrides"])
        family = str(mcfg.family)
        impl = registry.resolve_impl(mcfg, impls.get(model) or cfg.get("impl"), device).name
        train_ctx = int(meta["train_ctx"]) if meta.get("train_ctx") else None
        ckpt_ctxs = _ctxs_of(cfg, protocol, ctxs, path, model, family, train_ctx)
        es = _data_of(cfg, meta, corpora, path)
        ckpts.append(Ckpt(path, meta, model, family, checkpoint.weights_hash(path), impl, train_ctx, ckpt_ctxs, es))
    return Setup(
        device=device,
        dtype=dtype,
        protocol=protocol,
        ckpts=ckpts,
        length=length,
        results=Path(cfg.results) if cfg.results else results.default_path("ppl", on_cpu),
        force=bool(cfg.force),
        progress=bool(cfg.get("progress", True)),
        time_limit_s=float(cfg.time_limit_s) if cfg.get("time_limit_s") else None,
        cpu_default=bool(filled),
        tokens_per_batch=int(b.tokens_per_batch),
        loss_by_token=bool(b.loss_by_token),
        buckets={"kind": str(b.buckets), "n": int(b.n_buckets), "width": int(b.bucket_width)},
        check=bool(b.check),
        check_tokens=int(b.check_tokens),
        check_tol=float(b.check_tol) if b.get("check_tol") is not None else None,
    )


def describe(s: Setup) -> str:
    label = "CPU default (not a paper measurement): " if s.cpu_default else ""
    n = sorted({len(c.evalset.paths) for c in s.ckpts})
    return (
        f"{label}{len(s.ckpts)} checkpoint(s) ({','.join(c.model for c in s.ckpts)}), protocol={s.protocol}, "
        f"ctx={','.join(map(str, sorted({x for c in s.ckpts for x in c.ctxs})))}, "
        f"{'/'.join(map(str, n))} sequence(s) of {s.length} tokens, {s.dtype} on {s.device} -> {s.results}"
    )


# ---- running -------------------------------------------------------------------------------------------------------


def _s(v: Any) -> str:
    """A key field as a string that survives a CSV round trip (ints without '.0', empty for missing)."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


KEY = ("checkpoint", "protocol", "ctx", "metric", "dtype", "device", "gpu_name", "config_hash")


def done_keys(path: Path) -> set[tuple[str, ...]]:
    """Keys of ppl rows already final (ok or oom) in the results file: a rerun skips them."""
    df = results.read(path)
    df = df[(df["mode"] == "ppl") & df["status"].isin(results.FINAL_STATUSES)]
    return {tuple(_s(r.get(k)) for k in KEY) for _, r in df.iterrows()}


def _metrics(s: Setup, ck: Ckpt, ctx: int) -> list[str]:
    # Loss by token at the checkpoint's largest ctx; under trained_per_ctx only from the checkpoint trained at the
    # full sequence length (the paper's Fig. 5 is of its 32k models), so one line never mixes two window lengths.
    lbt = s.loss_by_token and ctx == ck.lbt_ctx and (s.protocol != "trained_per_ctx" or ctx == s.length)
    return ["ppl", "loss"] + ([LBT] if lbt else [])


def _key(s: Setup, ck: Ckpt, ctx: int, metric: str, prov: dict[str, Any]) -> tuple[str, ...]:
    cfg_hash = results.config_hash(ck.evalset.identity())
    return tuple(
        _s(v) for v in (ck.digest, s.protocol, ctx, metric, s.dtype, prov["device"], prov["gpu_name"], cfg_hash)
    )


def _windows(s: Setup, ck: Ckpt, ctx: int) -> int:
    return len(ck.evalset.paths) * (s.length // ctx)


def _batch(s: Setup, ck: Ckpt, ctx: int) -> int:
    """Windows per forward: tokens_per_batch // ctx, at least 1, at most all the windows there are."""
    return min(max(1, s.tokens_per_batch // ctx), _windows(s, ck, ctx))


def _n_batches(s: Setup, ck: Ckpt, ctx: int) -> int:
    return -(-_windows(s, ck, ctx) // _batch(s, ck, ctx))


def run(s: Setup) -> int:
    """Evaluate every (checkpoint, ctx) not already in the results file; returns the rows written."""
    prov = results.provenance(s.device)
    done = set() if s.force else done_keys(s.results)
    plan: list[tuple[Ckpt, list[tuple[int, list[str]]]]] = []
    skipped = 0
    for ck in s.ckpts:
        points = []
        for ctx in ck.ctxs:
            want = _metrics(s, ck, ctx)
            todo = [m for m in want if _key(s, ck, ctx, m, prov) not in done]
            skipped += len(want) - len(todo)
            if todo:
                points.append((ctx, todo))
        plan.append((ck, points))
    if skipped:
        print(
            f"resume: {skipped} (checkpoint, ctx, metric) already in {s.results} (force=true evaluates them again)",
            file=sys.stderr,
        )
    total = sum(_n_batches(s, ck, ctx) for ck, points in plan for ctx, _ in points)
    bar = tqdm(total=total, disable=not s.progress or total == 0, unit="batch", file=sys.stderr)
    deadline = time.monotonic() + s.time_limit_s if s.time_limit_s else None
    written = 0
    for ck, points in plan:
        if points:
            n, stopped = _run_checkpoint(s, ck, points, prov, bar, deadline)
            written += n
            latency.free_memory()  # the model went with _run_checkpoint's frame
            if stopped:
                print(f"time_limit_s={s.time_limit_s:g} reached: stopping; run again to resume", file=sys.stderr)
                break
    bar.close()
    return written


def _run_checkpoint(
    s: Setup, ck: Ckpt, points: list[tuple[int, list[str]]], prov: dict[str, Any], bar: tqdm, deadline: float | None
) -> tuple[int, bool]:
    """(rows written, stopped by the time limit) for one checkpoint's points, appended one ctx at a time."""
    bar.set_description(f"{ck.model} {ck.path.name}")
    base = _base(s, ck, prov)
    cfg_hash = results.config_hash(ck.evalset.identity())
    written = 0
    net, error, status = _load(s, ck)
    if net is not None:
        base.update(impl=f"{ck.model}/{net.impl}", n_params=registry.count_params(net))
        if s.check:
            vocab = int(ck.meta["size"]["vocab_size"])
            base["check_rel_err"], error = check_impl(
                net, ck.model, s.dtype, vocab=vocab, tokens=s.check_tokens, tol=s.check_tol
            )
            status = "error"
    for ctx, todo in points:
        if deadline is not None and time.monotonic() > deadline:
            return written, True
        bar.set_postfix_str(f"ctx={ctx}")
        bar_end = bar.n + _n_batches(s, ck, ctx)
        if error or net is None:
            rows = [_failure(m, status, error) for m in todo]
        else:
            rows = _guarded(
                todo,
                lambda: measure_rows(
                    net, ck.evalset, ctx, batch=_batch(s, ck, ctx), metrics=set(todo), buckets=s.buckets,  # noqa: B023
                    on_batch=lambda: bar.update(1),
                ),
            )  # fmt: skip
        point = dict(base, ctx=ctx, windows_per_forward=_batch(s, ck, ctx))
        written += results.append(
            s.results, [_extras_as_text(results.complete(point | r, prov, cfg_hash)) for r in rows]
        )
        bar.update(bar_end - bar.n)  # a failed point's share of the bar, too
    return written, False


def _load(s: Setup, ck: Ckpt) -> tuple[torch.nn.Module | None, str, str]:
    """(model, '', '') or (None, error, status): a checkpoint that cannot be loaded must not stop the others."""
    try:
        net, _ = checkpoint.load(ck.path, device=s.device, dtype=DTYPES[s.dtype], impl=ck.impl, expect_model=ck.model)
    except torch.OutOfMemoryError as e:
        latency.free_memory()
        return None, f"oom while loading: {str(e).splitlines()[0] if str(e) else 'out of memory'}", "oom"
    except UserError:
        raise
    except Exception as e:
        return None, f"load failed: {type(e).__name__}: {e}", "error"
    return net, "", ""


# Integer fields beyond the schema: results.append stores extra columns as text, and one that some rows lack would
# otherwise be a float column ("64.0") in the CSV.
INT_EXTRAS = ("train_ctx", "n_sequences", "seq_len", "token_index_start", "train_tokens", "windows_per_forward")


def _extras_as_text(row: dict[str, Any]) -> dict[str, Any]:
    return row | {k: str(int(row[k])) for k in INT_EXTRAS if row.get(k) is not None}


def _failure(metric: str, status: str, error: str) -> dict[str, Any]:
    return {"metric": metric, "unit": UNITS[metric], "status": status or "error", "error": error}


def _guarded(metrics: list[str], fn: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of fn(), or one status row per metric: oom for out-of-memory, error (one line) for anything else."""
    try:
        return fn()
    except torch.OutOfMemoryError as e:
        status, error = "oom", str(e).splitlines()[0] if str(e) else "out of memory"
    except UserError:
        raise
    except Exception as e:  # a broken point must not end the run; its rows say what broke
        status, error = "error", f"{type(e).__name__}: {e}"
    latency.free_memory()
    return [_failure(m, status, error) for m in metrics]


def _base(s: Setup, ck: Ckpt, prov: dict[str, Any]) -> dict[str, Any]:
    es, meta = ck.evalset, ck.meta
    return {
        "model": ck.model,
        "impl": f"{ck.model}/{ck.impl}",
        "size": (meta.get("size") or {}).get("name"),
        "n_params": meta.get("n_params"),
        "mode": "ppl",
        "batch": len(es.paths),  # the evaluation sequences: constant over ctx, so a figure's line never splits by it
        "dtype": s.dtype,
        "device": prov["device"],
        "checkpoint": ck.digest,
        "corpus": es.corpus.name,
        "tokenizer": es.tokenizer.name,
        "protocol": s.protocol,
        # Beyond the schema: what the rows were measured on, for a reader who holds only the CSV.
        "train_ctx": ck.train_ctx,
        "corpus_checksum": es.corpus.checksum[:12],
        "n_sequences": len(es.paths),
        "seq_len": es.length,
        "checkpoint_dir": str(ck.path),
        "train_tokens": meta.get("tokens_seen"),
    }


# ---- the command line ----------------------------------------------------------------------------------------------


def execute(cfg: DictConfig, explicit: set[str] | None = None) -> int:
    s = resolve(cfg, explicit)
    print(describe(s), file=sys.stderr)
    return run(s)


@hydra.main(config_path="../conf", config_name="ppl", version_base="1.3")
def main(cfg: DictConfig) -> None:
    def go() -> None:
        print(f"{execute(cfg, explicit_keys())} row(s) written", file=sys.stderr)

    guarded(go)


if __name__ == "__main__":
    main()
