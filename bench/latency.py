"""Prefill and decode latency of one built model at one (ctx, batch), and its check against the reference.

Partial rows come out (metric, value, unit, spread, repeats, peak memory, ...); `bench.run` adds the point's
identity and the run's provenance. Out-of-memory and other failures become rows too (`guarded`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.timing import median, spread, time_calls
from ttt.generation import GraphedDecode, _tensors, restore_cache, snapshot_cache

# (metric, unit) each mode reports; a failed point gets one status row per metric so any pivot shows the gap.
METRICS: dict[str, list[tuple[str, str]]] = {
    "prefill": [("ms_per_token", "ms/token"), ("total_ms", "ms")],
    "decode": [("ms_per_step", "ms/step"), ("ms_per_token", "ms/token")],
}
# Whole-model logits: two correct attention kernels on a 24-layer random-init 1.3B model in bf16 differ by ~3e-2
# (flash_attn vs sdpa_math, H100, measured); a wrong kernel differs by O(1). Op-level tests hold tighter bounds.
CHECK_TOL: dict[str, float] = {"bfloat16": 6e-2, "float16": 3e-2, "float32": 1e-4, "float64": 1e-8}


@dataclass(frozen=True)
class Timing:
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 20
    budget_s: float = 2.0
    decode_steps: int = 16  # graph replays per timed repeat: one event pair per ~16 ms, not per 1 ms step


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _tokens(vocab: int, batch: int, length: int, device: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen).to(device)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


@torch.inference_mode()
def check_against_reference(model: torch.nn.Module, ref_impl: str, *, vocab: int, batch: int, tokens: int) -> float:
    """Largest relative error of the fast impl against `ref_impl` over a forward (last logits), a prefill, and
    one decode step after it, on the same random tokens. The model's impl is restored whatever happens."""
    device = _device(model)
    x = _tokens(vocab, batch, tokens + 1, device, seed=1234)

    def outputs() -> list[torch.Tensor]:
        fwd = model.forward(x[:, :tokens], logits_to_keep=1)[:, -1]
        cache = model.allocate_cache(batch, tokens + 1)
        pre = model.prefill(x[:, :tokens], cache)
        dec = model.decode_step(x[:, tokens:], cache)
        return [fwd, pre, dec]

    fast_impl = model.impl
    fast = outputs()
    model.impl = ref_impl
    try:
        ref = outputs()
    finally:
        model.impl = fast_impl
    return max(rel_err(a, b) for a, b in zip(fast, ref, strict=True))


def _stats_rows(mode: str, values: dict[str, list[float]], tokens_per_call: int) -> list[dict[str, Any]]:
    rows = []
    for metric, unit in METRICS[mode]:
        times = values[metric]
        lo, hi = spread(times)
        med = median(times)
        rows.append(
            {
                "metric": metric,
                "value": med,
                "unit": unit,
                "stat": "median",
                "spread_lo": lo,
                "spread_hi": hi,
                "repeats": len(times),
                "tokens_per_s": tokens_per_call / (median(values["_call_ms"]) * 1e-3),
            }
        )
    return rows


@torch.inference_mode()
def measure_prefill(
    model: torch.nn.Module, *, batch: int, ctx: int, vocab: int, timing: Timing, via: str = "forward"
) -> list[dict[str, Any]]:
    """One forward over batch x ctx tokens, LM head on the last position only.

    via=forward: `forward(x, logits_to_keep=1)`, what the paper and the anchors time (no cache to fill);
    via=prefill: `prefill(x, cache)` on a cache allocated fresh, untimed, before every call.
    """
    device = _device(model)
    x = _tokens(vocab, batch, ctx, device, seed=0)
    _reset_peak(device)
    state: dict[str, Any] = {}
    if via == "forward":
        setup, fn = None, lambda: model.forward(x, logits_to_keep=1)
    elif via == "prefill":

        def setup() -> None:
            state.pop("cache", None)  # drop the last cache before the next one exists
            state["cache"] = model.allocate_cache(batch, ctx)

        def fn() -> torch.Tensor:
            return model.prefill(x, state["cache"])
    else:
        raise ValueError(f"prefill_via must be 'forward' or 'prefill', not {via!r}")
    times = time_calls(
        fn,
        device,
        setup=setup,
        warmup=timing.warmup,
        min_repeats=timing.min_repeats,
        max_repeats=timing.max_repeats,
        budget_s=timing.budget_s,
    )
    state.clear()
    peak = _peak(device)
    rows = _stats_rows(
        "prefill",
        {"ms_per_token": [t / (batch * ctx) for t in times], "total_ms": times, "_call_ms": times},
        batch * ctx,
    )
    return [dict(r, peak_mem_bytes=peak) for r in rows]


def _snapshot_fits(cache: Any, device: torch.device) -> bool:
    """A Transformer's KV cache at 16k x 16 is half the GPU: a full copy to undo two warm-up steps would turn a
    point that fits into an OOM. Without the copy the timed steps start two positions later, which no
    timing can see."""
    if device.type != "cuda":
        return True
    nbytes = sum(t.numel() * t.element_size() for t in _tensors(cache))
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.25 * free


@torch.inference_mode()
def measure_decode(
    model: torch.nn.Module, *, batch: int, ctx: int, vocab: int, timing: Timing, graphs: bool = True
) -> list[dict[str, Any]]:
    """Per-step latency with the model's own cache after a real prefill of ctx tokens (untimed).

    Each timed repeat is `timing.decode_steps` steps (graph replays, or eager `decode_step` calls); the cache
    has room for every step taken, so positions only move forward and nothing is recomputed.
    """
    device = _device(model)
    steps = timing.decode_steps
    total_steps = (timing.warmup + timing.max_repeats) * steps + 4  # + capture warm-up
    _reset_peak(device)
    cache = model.allocate_cache(batch, ctx + total_steps)
    model.prefill(_tokens(vocab, batch, ctx, device, seed=0), cache)
    tok = _tokens(vocab, batch, 1, device, seed=1)
    use_graphs = graphs and device.type == "cuda"
    step: Callable[[torch.Tensor], torch.Tensor]
    if use_graphs:
        snapshot = snapshot_cache(cache) if _snapshot_fits(cache, device) else None
        step = GraphedDecode(model, cache, batch)  # type: ignore[arg-type]
        if snapshot is not None:
            restore_cache(cache, snapshot)
        del snapshot
    else:

        def step(t: torch.Tensor) -> torch.Tensor:
            return model.decode_step(t, cache)

    def run() -> None:
        for _ in range(steps):
            step(tok)

    times = time_calls(
        run,
        device,
        warmup=timing.warmup,
        min_repeats=timing.min_repeats,
        max_repeats=timing.max_repeats,
        budget_s=timing.budget_s,
    )
    peak = _peak(device)
    per_step = [t / steps for t in times]
    rows = _stats_rows(
        "decode", {"ms_per_step": per_step, "ms_per_token": [t / batch for t in per_step], "_call_ms": per_step}, batch
    )
    return [dict(r, peak_mem_bytes=peak, decode_graph=use_graphs) for r in rows]


def failure_rows(mode: str, status: str, error: str, **extra: Any) -> list[dict[str, Any]]:
    return [dict(extra, metric=m, unit=u, status=status, error=error) for m, u in METRICS[mode]]


def guarded(mode: str, measure: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run one measurement; OOM -> status=oom rows, any other exception -> status=error rows (one line)."""
    status, error = "ok", ""
    try:
        rows = measure()
    except torch.OutOfMemoryError as e:
        status, error = "oom", str(e).splitlines()[0] if str(e) else "out of memory"
    except Exception as e:  # a broken point must not end the sweep; its row says what broke
        status, error = "error", f"{type(e).__name__}: {e}"
    if status == "ok":
        return rows
    # The exception (and the frames holding the point's tensors) is gone here, so the memory can go back.
    free_memory()
    return failure_rows(mode, status, error)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
