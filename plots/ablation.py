"""Table 1 ablation: measured perplexity per variant (mode=ppl, metric ppl, `variant` set, no mini_batch_size)
beside the paper's Table 1 values, drawn as dashed outlines, never merged into the measured bars.

`variant` holds the Table 1 step's key (the `variant` column of paper_reference.csv: linear_attention, …).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from plots import reference
from plots.figure import FigureResult, skipped
from plots.provenance import caption_lines
from plots.style import caption, legend_outside, new_figure, save

NAME, TITLE = "ablation_table1", "Table 1 ablation: perplexity per step (lower is better)"


def draw_ablation(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Horizontal bars of measured ppl per variant, in Table 1's order, with the paper's value as a dashed box."""
    used = rows[(rows["mode"] == "ppl") & rows["variant"].notna() & rows["mini_batch_size"].isna()]
    used = used[used["metric"].isin(["ppl", "perplexity"]) | (used["status"] != "ok")]
    if not (used["status"] == "ok").any():
        return skipped(NAME, TITLE, "no rows with mode=ppl and a Table 1 `variant`")
    paper = reference.for_figure(ref, NAME, "ppl")
    measured = used[used["status"] == "ok"].groupby("variant")["value"].median()
    runs = used.groupby("variant")["run_id"].nunique()
    # Table 1's order; paper steps we have not measured still get a row, so the gap is visible, not silent.
    order = list(paper["variant"]) + sorted(set(used["variant"]) - set(paper["variant"]))
    names = dict(zip(paper["variant"], paper["model"]))
    y = np.arange(len(order))
    fig, (ax,) = new_figure(width=9.0, height=0.55 * len(order) + 2.2)
    vals = [measured.get(v, np.nan) for v in order]
    ax.barh(y, vals, height=0.55, color="#1f77b4", label="measured (median over runs)")
    pvals = [paper.set_index("variant")["value"].get(v, np.nan) for v in order]
    if paper.shape[0]:
        src = "/".join(sorted(set(paper["source"].astype(str))))
        ax.barh(y, pvals, height=0.8, fill=False, edgecolor="#d62728", linestyle="--", lw=1.5,
                label=f"paper Table 1 ({src}; {paper['setting'].iloc[0]})")  # fmt: skip
    for yi, v, p in zip(y, vals, pvals):
        text = f"{v:.2f}" if pd.notna(v) else "not measured"
        text += f"  (paper {p:.2f})" if pd.notna(p) else ""
        ax.text(np.nanmax([v if pd.notna(v) else 0, p if pd.notna(p) else 0]) * 1.01, yi, text, va="center", fontsize=9)
    ax.set_yticks(y, [names.get(v, v) for v in order])
    ax.invert_yaxis()
    top = np.nanmax(np.array(vals + pvals, dtype=float))
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel("perplexity")
    ax.set_title(TITLE)
    legend_outside(fig, [ax])
    notes = [f"{v}: no measured row" for v in order if pd.isna(measured.get(v, np.nan))]
    caption(fig, caption_lines(used, notes))
    table = pd.DataFrame(
        {"measured": [f"{v:.4g}" if pd.notna(v) else "—" for v in vals],
         "paper": [f"{p:.4g}" if pd.notna(p) else "—" for p in pvals],
         "runs": [int(runs.get(v, 0)) for v in order]},
        index=[names.get(v, v) for v in order],
    )  # fmt: skip
    return FigureResult(NAME, TITLE, save(fig, out_dir, NAME), table, notes)
