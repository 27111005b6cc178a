"""Mini-batch size trade-off: perplexity (mode=ppl) and time (mode=prefill/op) vs the TTT mini-batch size b.

Reads rows whose `mini_batch_size` column is set: left panel ppl vs b, right panel a time metric vs b.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots.figure import FigureResult, skipped
from plots.lines import draw_series
from plots.provenance import caption_lines
from plots.rows import pick_metric
from plots.series import add_series, pivot, points, to_ms
from plots.style import caption, ctx_axis, legend_outside, new_figure, plain_log_y, save, ylabel

NAME, TITLE = "minibatch_tradeoff", "Mini-batch size b: perplexity vs time"
TIME_METRICS = ["ms_per_token", "time_ms"]


def draw_minibatch(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Two panels sharing the b axis; a panel with no rows is left out."""
    sweep = rows[rows["mini_batch_size"].notna()]
    ppl = sweep[(sweep["mode"] == "ppl") & sweep["metric"].isin(["ppl", "perplexity"])]
    timed = sweep[sweep["mode"].isin(["prefill", "op"])]
    metric = pick_metric(timed, TIME_METRICS)
    timed = to_ms(timed[timed["metric"] == metric]) if metric else timed.iloc[0:0]
    panels = [(p, lab, m) for p, lab, m in ((ppl, "perplexity", "ppl"), (timed, "time", metric)) if not p.empty]
    if not panels:
        return skipped(NAME, TITLE, "no rows with a mini_batch_size column")
    fig, axes = new_figure(ncols=len(panels), width=7.5, height=4.6)
    notes, tables = [], []
    for ax, (sub, lab, m) in zip(axes, panels):
        pts = points(add_series(sub), "mini_batch_size")
        notes += draw_series(ax, pts, spread=False)
        ax.set_xscale("log", base=2)
        ctx_axis(ax, list(pts["x"]), label="TTT mini-batch size b")
        ax.set_xticklabels([f"{int(x)}" for x in sorted(pts["x"].unique())])
        if lab == "time":
            plain_log_y(ax)
        ax.set_ylabel(ylabel(m, next(iter(sub["unit"].dropna()), "")) if lab == "time" else "perplexity")
        ax.set_title(f"{lab} vs b")
        tables.append(pivot(pts).add_prefix(f"{lab}: "))
    fig.suptitle(TITLE, y=1.02)
    legend_outside(fig, axes)
    caption(fig, caption_lines(sweep, notes))
    return FigureResult(NAME, TITLE, save(fig, out_dir, NAME), pd.concat(tables, axis=1), notes)
