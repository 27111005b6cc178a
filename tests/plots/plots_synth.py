"""Synthetic results tables in the bench/results.py schema, for the figure tests (and a manual look)."""

from __future__ import annotations

import pandas as pd

from plots.rows import SCHEMA_COLUMNS

CTXS = [1024, 2048, 4096, 8192, 16384, 32768]
MODELS = {"ttt_linear": "dual", "ttt_mlp": "dual", "transformer": "flash_attn", "mamba": "mamba_ssm"}
GPU = "NVIDIA H100 80GB HBM3"


def row(**kw: object) -> dict:
    """One schema row with realistic provenance; keyword arguments override."""
    base = {c: None for c in SCHEMA_COLUMNS}
    base.update(
        run_id="run-a", time="2025-01-01T00:00:00", git_commit="0123456789abcdef", size="1.3b", batch=16,
        dtype="bf16", stat="median", repeats=10, status="ok", device="cuda", gpu_name=GPU, driver="550.54",
        cuda="12.4", torch="2.11.0", triton="3.6.0", config_hash="abc",
    )  # fmt: skip
    base.update(kw)
    return base


def prefill_ms(model: str, ctx: int) -> float:
    """Shapes like the paper's: attention grows with ctx, the RNNs stay flat-ish."""
    return {
        "ttt_linear": 0.020 + 1e-7 * ctx,
        "ttt_mlp": 0.045 + 2e-7 * ctx,
        "transformer": 0.012 + 2.4e-6 * ctx,
        "mamba": 0.019 + 1e-7 * ctx,
    }[model]


def decode_ms(model: str, ctx: int) -> float:
    return {"ttt_linear": 11.0, "ttt_mlp": 14.0, "transformer": 9.0 + ctx / 1500, "mamba": 10.5}[model]


def latency_table(oom_32k: tuple[str, ...] = ("transformer",), runs: int = 2) -> pd.DataFrame:
    """4 models x 6 contexts of prefill and decode rows; `oom_32k` models OOM at 32k."""
    rows = []
    for r in range(runs):
        for model, impl in MODELS.items():
            for ctx in CTXS:
                for mode, fn, metric in (
                    ("prefill", prefill_ms, "ms_per_token"),
                    ("decode", decode_ms, "ms_per_token"),
                ):
                    common = dict(
                        run_id=f"run-{r}", model=model, impl=impl, mode=mode, ctx=ctx, metric=metric, unit="ms"
                    )
                    if ctx == 32768 and model in oom_32k:
                        rows.append(row(**common, status="oom", value=None, error="CUDA out of memory"))
                        continue
                    v = fn(model, ctx) * (1 + 0.01 * r)
                    rows.append(row(**common, value=v, spread_lo=v * 0.97, spread_hi=v * 1.04))
    return pd.DataFrame(rows)


def op_table() -> pd.DataFrame:
    rows = []
    for impl, eff in (("dual", 0.2), ("triton", 0.6)):
        for t in [1024, 4096, 16384, 65536]:
            ms = t * 2e-4 / eff
            rows.append(row(model="ttt_linear", impl=impl, mode="op", ctx=t, metric="time_ms", value=ms, unit="ms",
                            bytes_moved=t * 1e6, frac_hbm=eff * 0.5))  # fmt: skip
    return pd.DataFrame(rows)


def ppl_table() -> pd.DataFrame:
    rows = []
    base = {"ttt_linear": 14.0, "ttt_mlp": 13.8, "transformer": 13.9, "mamba": 14.2}
    for model in base:
        for i, ctx in enumerate(CTXS):
            plateau = model == "mamba" and ctx >= 16384
            v = base[model] - (0.5 * 3 if plateau else 0.5 * i)
            rows.append(
                row(
                    model=model,
                    impl="ref",
                    size="125m",
                    mode="ppl",
                    ctx=ctx,
                    metric="ppl",
                    value=v,
                    unit="ppl",
                    batch=8,
                    dataset="books",
                )
            )
        for tok in range(1024, 32769, 1024):
            loss = 2.6 - 0.08 * (tok / 1024) ** (0.3 if model != "mamba" else 0.1)
            rows.append(row(model=model, impl="ref", size="125m", mode="ppl", ctx=32768, token_index=tok,
                            metric="loss_by_token", value=loss, unit="nats", batch=8, dataset="books"))  # fmt: skip
    return pd.DataFrame(rows)


def ablation_table() -> pd.DataFrame:
    vals = {"linear_attention": 17.0, "mini_batch_ttt": 13.1, "mamba_backbone": 12.0}
    return pd.DataFrame(
        [row(model="ttt_linear", impl="ref", size="125m", mode="ppl", ctx=2048, metric="ppl", value=v, variant=k)
         for k, v in vals.items()]
    )  # fmt: skip


def minibatch_table() -> pd.DataFrame:
    rows = []
    for b in [1, 4, 16, 64, 256]:
        rows.append(row(model="ttt_linear", impl="ref", size="125m", mode="ppl", ctx=2048, metric="ppl",
                        value=12 + 0.3 * b ** 0.5, mini_batch_size=b, variant=f"b={b}"))  # fmt: skip
        rows.append(row(model="ttt_linear", impl="dual", size="125m", mode="prefill", ctx=2048, metric="ms_per_token",
                        value=0.5 / b ** 0.7 + 0.01, unit="ms", mini_batch_size=b, variant=f"b={b}"))  # fmt: skip
    return pd.DataFrame(rows)


def scaling_table() -> pd.DataFrame:
    rows = []
    for model, off in (("ttt_linear", 0.0), ("transformer", 0.3), ("mamba", 0.2)):
        for size, flops in (("125m", 2e19), ("350m", 1e20), ("760m", 4e20)):
            for ctx in (2048, 8192):
                rows.append(row(model=model, impl="ref", size=size, mode="ppl", ctx=ctx, metric="ppl",
                                value=30 * (flops / 1e19) ** -0.1 + off, flops=flops, dataset="pile"))  # fmt: skip
    return pd.DataFrame(rows)


def full_table() -> pd.DataFrame:
    return pd.concat(
        [latency_table(), op_table(), ppl_table(), ablation_table(), minibatch_table(), scaling_table()],
        ignore_index=True,
    )
