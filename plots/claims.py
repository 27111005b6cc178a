"""The paper's headline claims, checked against the measured rows: yes / no / not measured, with the ratio.

Every verdict is computed from the numbers, so it flips when they do. Latency claims compare each model's
fastest measured impl, per GPU (a ratio across two GPUs would say nothing); "not measured" when a needed
point is missing or failed (OOM counts as not measured for that point, and the claim says so).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from plots.latency import DECODE_METRICS, PREFILL_METRICS, latency_points
from plots.ppl import EVAL_SET
from plots.provenance import claim_provenance
from plots.series import fmt_x

MATCH_TOLERANCE = 1.25  # "matches Mamba": TTT-Linear within this factor of Mamba's time
GROW_MIN = 1.5  # "grows with context": long/short decode ratio above this
FLAT_MAX = 1.2  # "stays flat": long/short decode ratio below this


@dataclass
class Claim:
    text: str
    verdict: str  # "yes" | "no" | "not measured"
    detail: str
    provenance: str = ""


def _best(pts: pd.DataFrame, model: str, ctx: float) -> tuple[float, str] | None:
    """Fastest ok point of `model` at `ctx`: (value, impl)."""
    sel = pts[(pts["model"] == model) & (pts["x"] == ctx) & (pts["status"] == "ok")]
    if sel.empty:
        return None
    r = sel.loc[sel["value"].idxmin()]
    return float(r["value"]), str(r["impl"])


def _status(pts: pd.DataFrame, model: str, ctx: float) -> str:
    sel = pts[(pts["model"] == model) & (pts["x"] == ctx)]
    return "no rows" if sel.empty else "/".join(sorted(set(sel["status"])))


def _per_gpu(rows: pd.DataFrame, mode: str, metrics: list[str]) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(gpu_name, rows used, points) for each GPU with rows of `mode`."""
    out = []
    for gpu, grp in rows[rows["mode"] == mode].groupby(rows["gpu_name"].fillna("?")):
        used, pts, metric = latency_points(grp, mode, metrics)
        if metric is not None:
            out.append((str(gpu), used, pts))
    return out


def prefill_faster_than_transformer(rows: pd.DataFrame, ctx: int = 8192) -> list[Claim]:
    """Paper: TTT-Linear prefill is faster than the Transformer at 8k."""
    text = f"TTT-Linear prefill faster than the Transformer at {fmt_x(ctx)}"
    claims = []
    for gpu, used, pts in _per_gpu(rows, "prefill", PREFILL_METRICS):
        t, tr = _best(pts, "ttt_linear", ctx), _best(pts, "transformer", ctx)
        prov = claim_provenance(used[used["ctx"] == ctx])
        if t is None or tr is None:
            detail = f"ttt_linear: {_status(pts, 'ttt_linear', ctx)}, transformer: {_status(pts, 'transformer', ctx)}"
            claims.append(Claim(f"{text} on {gpu}", "not measured", detail, prov))
            continue
        ratio = tr[0] / t[0]
        claims.append(Claim(f"{text} on {gpu}", "yes" if ratio > 1 else "no",
                            f"ratio {ratio:.2f} ({tr[1]} ÷ {t[1]})", prov))  # fmt: skip
    return claims or [Claim(text, "not measured", "no prefill rows")]


def prefill_matches_mamba(rows: pd.DataFrame, tol: float = MATCH_TOLERANCE) -> list[Claim]:
    """Paper: TTT-Linear matches Mamba in wall-clock time (here: within `tol`x at every common ctx)."""
    text = f"TTT-Linear prefill within {tol:g}x of Mamba at each ctx"
    claims = []
    for gpu, used, pts in _per_gpu(rows, "prefill", PREFILL_METRICS):
        ctxs = sorted(set(pts.loc[pts["model"] == "ttt_linear", "x"]) & set(pts.loc[pts["model"] == "mamba", "x"]))
        ratios = {}
        for c in ctxs:
            t, m = _best(pts, "ttt_linear", c), _best(pts, "mamba", c)
            if t and m:
                ratios[c] = t[0] / m[0]
        prov = claim_provenance(used[used["model"].isin(["ttt_linear", "mamba"])])
        if not ratios:
            claims.append(Claim(f"{text} on {gpu}", "not measured", "no context with both models ok", prov))
            continue
        worst = max(ratios.values())
        listed = ", ".join(f"{fmt_x(c)}: {r:.2f}" for c, r in ratios.items())
        claims.append(Claim(f"{text} on {gpu}", "yes" if worst <= tol else "no",
                            f"ttt_linear/mamba ratio per ctx {listed} (max {worst:.2f})", prov))  # fmt: skip
    return claims or [Claim(text, "not measured", "no prefill rows")]


def prefill_mlp_slower(rows: pd.DataFrame, ctx: int = 8192) -> list[Claim]:
    """Paper: TTT-MLP is slower than TTT-Linear (memory I/O)."""
    text = f"TTT-MLP prefill slower than TTT-Linear at {fmt_x(ctx)}"
    claims = []
    for gpu, used, pts in _per_gpu(rows, "prefill", PREFILL_METRICS):
        m, t = _best(pts, "ttt_mlp", ctx), _best(pts, "ttt_linear", ctx)
        prov = claim_provenance(used[used["ctx"] == ctx])
        if m is None or t is None:
            claims.append(Claim(f"{text} on {gpu}", "not measured", f"ttt_mlp: {_status(pts, 'ttt_mlp', ctx)}", prov))
            continue
        ratio = m[0] / t[0]
        claims.append(Claim(f"{text} on {gpu}", "yes" if ratio > 1 else "no",
                            f"ratio {ratio:.2f} ({m[1]} ÷ {t[1]})", prov))  # fmt: skip
    return claims or [Claim(text, "not measured", "no prefill rows")]


def decode_growth(rows: pd.DataFrame, long: int = 32768, short: int = 1024) -> list[Claim]:
    """Paper: Transformer decode grows with context (KV cache); TTT and Mamba stay flat."""
    text = f"Transformer decode grows with context while TTT/Mamba stay flat ({fmt_x(long)}/{fmt_x(short)} ratio)"
    claims = []
    for gpu, used, pts in _per_gpu(rows, "decode", DECODE_METRICS):
        ratios, missing = {}, []
        # If the Transformer OOMs at `long`, compare at the longest context where it ran, and say so.
        tr_ok = pts[(pts["model"] == "transformer") & (pts["status"] == "ok") & (pts["x"] <= long)]["x"]
        use_long = int(tr_ok.max()) if not tr_ok.empty and tr_ok.max() > short else long
        if use_long != long:
            missing.append(
                f"transformer at {fmt_x(long)} ({_status(pts, 'transformer', long)}), compared at {fmt_x(use_long)}"
            )
        long_ = use_long
        for model in ("transformer", "ttt_linear", "ttt_mlp", "mamba"):
            a, b = _best(pts, model, long_), _best(pts, model, short)
            if a and b:
                ratios[model] = a[0] / b[0]
            elif (pts["model"] == model).any():
                missing.append(f"{model} ({fmt_x(long_)}: {_status(pts, model, long_)})")
        rnn = {m: r for m, r in ratios.items() if m != "transformer"}
        prov = claim_provenance(used[used["ctx"].isin([long_, short])])
        detail = f"{fmt_x(long_)}/{fmt_x(short)}: " + ", ".join(f"{m} {r:.2f}" for m, r in ratios.items())
        detail += f"; note: {'; '.join(missing)}" if missing else ""
        if "transformer" not in ratios or not rnn:
            claims.append(Claim(f"{text} on {gpu}", "not measured", detail or "missing points", prov))
            continue
        ok = ratios["transformer"] > GROW_MIN and all(r < FLAT_MAX for r in rnn.values())
        claims.append(Claim(f"{text} on {gpu}", "yes" if ok else "no",
                            f"{detail} (grow > {GROW_MIN:g}, flat < {FLAT_MAX:g})", prov))  # fmt: skip
    return claims or [Claim(text, "not measured", "no decode rows")]


def ppl_long_context(rows: pd.DataFrame, long: int = 32768, mid: int = 16384) -> list[Claim]:
    """Paper: TTT keeps improving past 16k; Mamba plateaus. One claim per evaluation set (corpus, checksum,
    tokenizer) and train ctx: perplexities of other text, other tokens or other training runs are never pooled."""
    base = f"TTT-Linear perplexity still falls from {fmt_x(mid)} to {fmt_x(long)}; Mamba's does not"
    sel = rows[(rows["mode"] == "ppl") & (rows["metric"] == "ppl") & rows["variant"].isna() & (rows["status"] == "ok")]
    if sel.empty:
        return [Claim(base, "not measured", "needs ppl at both contexts for ttt_linear and mamba", "")]
    # The figure's evaluation-set key (plots.ppl.EVAL_SET): the same text, tokenized the same way. normalize() gives
    # every frame the columns; a missing tokenizer (rows from before it was recorded) is left out of the label.
    key = {c: sel[c].astype("string") for c in EVAL_SET}
    label = key["dataset"].fillna("?") + " " + key["corpus_checksum"].fillna("?") + (" " + key["tokenizer"]).fillna("")
    sel = sel.assign(_set=label)
    sel = sel.assign(_tc=sel["train_ctx"].map(lambda t: fmt_x(t) if pd.notna(t) else "?"))
    claims = []
    for (eval_set, tc), grp in sel.groupby(["_set", "_tc"], sort=True):
        text = f"{base} ({eval_set}, trained at {tc})"
        vals = grp.groupby(["model", "ctx"])["value"].median()

        def get(m: str, c: int, vals: pd.Series = vals) -> float | None:
            return float(vals[(m, c)]) if (m, c) in vals.index else None

        t_l, t_m, m_l, m_m = get("ttt_linear", long), get("ttt_linear", mid), get("mamba", long), get("mamba", mid)
        prov = claim_provenance(grp[grp["ctx"].isin([long, mid])])
        if None in (t_l, t_m, m_l, m_m):
            claims.append(Claim(text, "not measured", "needs ppl at both contexts for ttt_linear and mamba", prov))
            continue
        rt, rm = t_l / t_m, m_l / m_m
        # Mamba "plateaus" (under 1 % better) and TTT gains more than it does: a shared 0.1 % drift is no trend.
        ok = rt < 1.0 and rm >= 0.99 and rt < rm
        nums = f"ppl {fmt_x(long)}/{fmt_x(mid)}: ttt_linear {rt:.4f}, mamba {rm:.4f}"
        claims.append(Claim(text, "yes" if ok else "no", nums, prov))
    return claims


def all_claims(rows: pd.DataFrame) -> list[Claim]:
    """Every claim the report checks, in the paper's order."""
    return (
        prefill_faster_than_transformer(rows)
        + prefill_matches_mamba(rows)
        + prefill_mlp_slower(rows)
        + decode_growth(rows)
        + ppl_long_context(rows)
    )
