"""Line plot of points per series, with gaps: OOM points as an 'x' on the top edge, errors left out and noted."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import pandas as pd

from plots.series import fmt_x
from plots.style import series_styles


def draw_series(ax: plt.Axes, pts: pd.DataFrame, spread: bool = True) -> list[str]:
    """Draw each series' ok points as a line (broken at missing points); return notes on OOM/error gaps."""
    styles = series_styles(pts)
    notes: list[str] = []
    xs_all = sorted(pts["x"].unique())
    for series, grp in pts.groupby("series", sort=True):
        st = styles[series]
        # Reindex on every x so a missing/failed point breaks the line instead of bridging it.
        line = grp.set_index("x").reindex(xs_all)
        ok = line["status"] == "ok"
        y = line["value"].where(ok)
        ax.plot(xs_all, y, label=series, color=st["color"], linestyle=st["linestyle"], marker=st["marker"], ms=5)
        if spread and line["spread_lo"].notna().any():
            ax.fill_between(
                xs_all, line["spread_lo"].where(ok), line["spread_hi"].where(ok), color=st["color"], alpha=0.15, lw=0
            )
        if not ok.any():
            notes.append(f"{series}: no successful point (all {', '.join(sorted(set(grp['status'])))})")
    _mark_oom(ax, pts, styles)
    bad = pts[pts["n_error"] > 0]
    if not bad.empty:
        where = ", ".join(f"{r.series}@{fmt_x(r.x)}" for r in bad.itertuples())
        notes.append(f"error rows skipped: {where}")
    oom = pts[pts["status"] == "oom"]
    if not oom.empty:
        notes.append("OOM (x on top edge): " + ", ".join(f"{r.series}@{fmt_x(r.x)}" for r in oom.itertuples()))
    return notes


def _mark_oom(ax: plt.Axes, pts: pd.DataFrame, styles: dict[str, dict]) -> None:
    """An 'x' per OOM series at the top edge of the axes, stacked downward when several share one x."""
    oom = pts[pts["status"] == "oom"]
    if oom.empty:
        return
    trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
    for xv, grp in oom.groupby("x"):
        for k, r in enumerate(grp.itertuples()):
            ax.plot([xv], [0.97 - 0.045 * k], transform=trans, marker="x", ms=9, mew=2.2,
                    color=styles[r.series]["color"], clip_on=False, linestyle="none", label="_oom")  # fmt: skip
        # One label per x, placed left of the markers so it overlaps neither them nor the next x's label.
        ax.annotate("OOM", (xv, 0.97), xycoords=trans, xytext=(-9, 0), textcoords="offset points",
                    ha="right", va="center", fontsize=8.5, color="#444444")  # fmt: skip
