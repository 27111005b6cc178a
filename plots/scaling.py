"""Perplexity vs training FLOPs (scaling): mode=ppl rows with a `flops` column, one panel per context length,
one line per model/impl through its sizes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots.figure import FigureResult, skipped
from plots.provenance import caption_lines
from plots.series import fmt_x
from plots.style import MODEL_COLORS, caption, legend_outside, new_figure, save, series_styles

NAME, TITLE = "ppl_vs_flops", "Perplexity vs training FLOPs"


def draw_scaling(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Log-x FLOPs vs perplexity; panels by ctx (and dataset, when rows name one)."""
    used = rows[(rows["mode"] == "ppl") & rows["metric"].isin(["ppl", "perplexity"]) & rows["flops"].notna()]
    used = used[(used["status"] == "ok") & used["variant"].isna()]
    if used.empty:
        return skipped(NAME, TITLE, "no mode=ppl rows with a flops column")
    used = used.assign(series=used["model"].astype(str) + "/" + used["impl"].astype(str))
    used = used.assign(
        panel=used["dataset"].fillna("").astype(str).str.cat(used["ctx"].map(fmt_x), sep=" ").str.strip()
    )
    panels = sorted(used["panel"].unique(), key=lambda p: (p.split(" ")[0], len(p), p))
    fig, axes = new_figure(ncols=len(panels), width=7.0, height=4.6)
    styles = series_styles(used.drop_duplicates("series"))
    tables = []
    for ax, panel in zip(axes, panels):
        sub = used[used["panel"] == panel]
        agg = sub.groupby(["series", "size"], as_index=False).agg(flops=("flops", "median"), value=("value", "median"))
        for series, grp in agg.groupby("series"):
            grp = grp.sort_values("flops")
            st = styles.get(
                series, {"color": MODEL_COLORS.get(series.split("/")[0], "gray"), "marker": "o", "linestyle": "-"}
            )
            ax.plot(grp["flops"], grp["value"], label=series, **st)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("perplexity")
        ax.set_title(f"context {panel}")
        tables.append(
            agg.pivot(index="size", columns="series", values="value").map("{:.4g}".format).add_prefix(f"{panel}: ")
        )
    fig.suptitle(TITLE, y=1.02)
    legend_outside(fig, axes)
    caption(fig, caption_lines(used))
    return FigureResult(NAME, TITLE, save(fig, out_dir, NAME), pd.concat(tables, axis=1), [])
