"""ttt-bench's own kernel targets (issue 5), checked against the op-level rows like the paper's claims: every
verdict is computed from the numbers, per GPU, from the newest commit's rows (plots.rows.load_results)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from plots.claims import Claim
from plots.provenance import claim_provenance

PEER = "fla/chunk_ttt_linear"
# Our ops are what `backend="auto"` runs: the Gluon kernel on a GPU where it ran, else the Triton kernel.
GLUON, TRITON = "ttt_linear/gluon", "ttt_linear/triton"
OURS = "ttt_linear/default"
MLP_GLUON, MLP_TRITON = "ttt_mlp/gluon", "ttt_mlp/triton"
MLP = "ttt_mlp/default"
PEERS = ("fla/chunk_ttt_linear", "fla/fused_chunk_ttt_linear")
BEST_PEER = "fla/best"  # per point, the faster of PEERS that ran there (fused_chunk wins at long T, shape (a))
STEP, MAMBA_STEP = "ttt_linear/triton-step", "mamba_ssm/Mamba.step"


def _op_times(rows: pd.DataFrame) -> pd.DataFrame:
    """ok op rows -> one time per (gpu, shape_set, ctx, batch) x impl."""
    ok = rows[(rows["mode"] == "op") & (rows["status"] == "ok") & (rows["metric"] == "time")]
    if ok.empty or "shape_set" not in ok.columns:
        return pd.DataFrame()
    t = ok.pivot_table(index=["gpu_name", "shape_set", "ctx", "batch"], columns="impl", values="value")
    for name, kernels in ((OURS, (GLUON, TRITON)), (MLP, (MLP_GLUON, MLP_TRITON))):
        ours = [c for c in kernels if c in t.columns]
        if ours:
            t[name] = t[ours[0]].fillna(t[ours[-1]])
    peers = [c for c in PEERS if c in t.columns]
    if peers:
        t[BEST_PEER] = t[peers].min(axis=1)
    return t


def _ratio_claim(
    rows: pd.DataFrame, text: str, num: str, den: str, ok: Callable[[float], bool], worst: str, label: str
) -> list[Claim]:
    """One claim per GPU over every shape: the ratio num/den at each point, judged at its worst point."""
    t = _op_times(rows)
    if t.empty or num not in t.columns or den not in t.columns:
        return [Claim(text, "not measured", f"no op rows with both {num} and {den}")]
    claims = []
    for gpu, g in t.groupby(level="gpu_name"):
        r = (g[num] / g[den]).dropna()
        if r.empty:
            claims.append(Claim(f"{text} on {gpu}", "not measured", f"no shape with both {num} and {den}"))
            continue
        at = r.idxmin() if worst == "min" else r.idxmax()
        points = ", ".join(f"({s}) {int(c)}x{int(b)}: {v:.2f}" for (_, s, c, b), v in r.items())
        detail = f"{label} worst {r[at]:.2f} at ({at[1]}) T={int(at[2])} B={int(at[3])}; all: {points}"
        impls = [*(PEERS if num == BEST_PEER else [num]), *((GLUON, TRITON) if den == OURS else [den])]
        used = rows[(rows["mode"] == "op") & (rows["gpu_name"] == gpu) & rows["impl"].isin(impls)]
        verdict = "yes" if all(ok(v) for v in r) else "no"
        claims.append(Claim(f"{text} on {gpu}", verdict, detail, claim_provenance(used)))
    return claims


def linear_vs_fla(rows: pd.DataFrame, target: float = 2.0) -> list[Claim]:
    return _ratio_claim(
        rows, f"TTT-Linear op >= {target:g}x faster than fla chunk_ttt_linear at every T, shapes (a) and (b)",
        PEER, OURS, lambda v: v >= target, "min", "fla/ours",
    )  # fmt: skip


def linear_vs_best_fla(rows: pd.DataFrame, target: float = 2.0) -> list[Claim]:
    """The same target against the faster of fla's two TTT-Linear kernels at each point (what a user would pick)."""
    return _ratio_claim(
        rows, f"TTT-Linear op >= {target:g}x faster than the faster of fla's chunk and fused_chunk kernels at every T",
        BEST_PEER, OURS, lambda v: v >= target, "min", "best fla/ours",
    )  # fmt: skip


def mlp_vs_linear(rows: pd.DataFrame, target: float = 2.5) -> list[Claim]:
    return _ratio_claim(
        rows, f"TTT-MLP op <= {target:g}x the time of TTT-Linear at the same shape",
        MLP, OURS, lambda v: v <= target, "max", "mlp/linear",
    )  # fmt: skip


def linear_memory_floor(rows: pd.DataFrame, target: float = 3.0, max_t: int = 8192) -> list[Claim]:
    """time / floor = 1 / frac_hbm, shape (a), T <= max_t, of our default kernel (see OURS)."""
    text = f"TTT-Linear op within {target:g}x of the memory floor at T <= {max_t // 1024}k, shape (a)"
    sel = rows[
        (rows["mode"] == "op") & rows["impl"].isin([GLUON, TRITON]) & (rows["status"] == "ok")
        & (rows["ctx"] <= max_t) & (rows.get("shape_set", pd.Series(index=rows.index, dtype=object)) == "a")
        & rows["frac_hbm"].notna()
    ]  # fmt: skip
    if sel.empty:
        return [Claim(text, "not measured", "no shape (a) op rows with frac_hbm")]
    claims = []
    for gpu, g in sel.groupby("gpu_name"):
        g = g[g["impl"] == (GLUON if (g["impl"] == GLUON).any() else TRITON)]
        x = 1.0 / g["frac_hbm"]
        verdict = "yes" if (x <= target).all() else "no"
        claims.append(
            Claim(f"{text} on {gpu}", verdict, f"time/floor {x.min():.2f}-{x.max():.2f}", claim_provenance(g))
        )
    return claims


def decode_step_vs_mamba(rows: pd.DataFrame) -> list[Claim]:
    """One layer's step at B=16 under a CUDA graph: ours vs mamba-ssm's Mamba.step, same GPU."""
    text = "One TTT-Linear layer's decode step (B=16, CUDA graph) faster than mamba-ssm's Mamba.step"
    sel = rows[(rows["mode"] == "decode_op") & (rows["status"] == "ok")]
    if "cuda_graph" in sel.columns:
        sel = sel[sel["cuda_graph"].astype(str).str.lower() == "true"]
    claims = []
    for gpu, g in sel.groupby("gpu_name"):
        ours, ref = g[g["impl"] == STEP]["value"], g[g["impl"] == MAMBA_STEP]["value"]
        if ours.empty or ref.empty:
            continue
        o, m = float(ours.median()), float(ref.median())
        claims.append(
            Claim(f"{text} on {gpu}", "yes" if o < m else "no", f"{o:.1f} vs {m:.1f} us (ratio {o / m:.2f})",
                  claim_provenance(g[g["impl"].isin([STEP, MAMBA_STEP])]))
        )  # fmt: skip
    return claims or [Claim(text, "not measured", "no decode_op rows of both under a CUDA graph")]


_ELT_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def decode_vs_weight_floor(rows: pd.DataFrame, target: float = 1.5, model: str = "ttt_linear") -> list[Claim]:
    """Full-model decode step vs reading every weight once at the run's measured copy bandwidth, per GPU (the
    state's own traffic is not in the floor)."""
    text = f"1.3B {model} decode step (B=16) within {target:g}x of the weight-bandwidth floor"
    need = {"n_params", "hw_copy_gbps", "dtype"}
    if not need <= set(rows.columns):
        return [Claim(text, "not measured", f"rows lack {sorted(need - set(rows.columns))}")]
    sel = rows[
        (rows["mode"] == "decode") & (rows["model"] == model) & (rows["status"] == "ok")
        & (rows["metric"] == "ms_per_step") & (rows["size"] == "1.3b") & rows["hw_copy_gbps"].notna()
    ]  # fmt: skip
    claims = []
    for gpu, g in sel.groupby("gpu_name"):
        elt = g["dtype"].map(_ELT_BYTES)
        floor_ms = g["n_params"] * elt / (g["hw_copy_gbps"] * 1e9) * 1e3
        x = (g["value"] / floor_ms).dropna()
        if x.empty:
            continue
        detail = f"step/floor {x.min():.2f}-{x.max():.2f} (floor {floor_ms.median():.3f} ms, step {g['value'].median():.3f} ms)"
        claims.append(Claim(f"{text} on {gpu}", "yes" if (x <= target).all() else "no", detail, claim_provenance(g)))
    return claims or [Claim(text, "not measured", f"no 1.3B {model} decode rows with n_params and copy bandwidth")]


def all_targets(rows: pd.DataFrame) -> list[Claim]:
    return (
        linear_vs_fla(rows) + linear_vs_best_fla(rows) + linear_memory_floor(rows) + mlp_vs_linear(rows)
        + decode_step_vs_mamba(rows) + decode_vs_weight_floor(rows)
    )  # fmt: skip
