"""Shared drawing pieces: Agg backend, fonts, colours per model, the caption box, context axes, saving."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (CI and GPU boxes have no display)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

plt.rcParams.update(
    {
        "font.size": 11,
        "axes.titlesize": 13,
        "axes.labelsize": 11,
        "legend.fontsize": 9.5,
        "xtick.labelsize": 10,
        "ytick.labelsize": 10,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "svg.hashsalt": "ttt-bench",  # stable SVG ids, so regenerated figures diff cleanly
    }
)

MODEL_COLORS: dict[str, str] = {
    "ttt_linear": "#1f77b4",
    "ttt_mlp": "#2ca02c",
    "transformer": "#d62728",
    "mamba": "#9467bd",
}
_FALLBACK = ["#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_LINESTYLES = ["-", "--", "-.", ":"]
REFERENCE_STYLE = {"linestyle": (0, (5, 3)), "linewidth": 1.6, "alpha": 0.75}
CAPTION_WIDTH = 110


def series_styles(pts: pd.DataFrame) -> dict[str, dict]:
    """Colour by model (stable across figures), line style and marker by impl within a model."""
    styles: dict[str, dict] = {}
    fallback = iter(_FALLBACK * 4)
    model_color: dict[str, str] = {}
    impl_index: dict[str, int] = {}
    for series, model in pts[["series", "model"]].drop_duplicates().itertuples(index=False):
        model = str(model)
        if model not in model_color:
            model_color[model] = MODEL_COLORS.get(model) or next(fallback)
        k = impl_index.get(model, 0)
        impl_index[model] = k + 1
        styles[series] = {
            "color": model_color[model],
            "linestyle": _LINESTYLES[k % len(_LINESTYLES)],
            "marker": "osD^v"[k % 5],
        }
    return styles


def new_figure(ncols: int = 1, width: float = 8.5, height: float = 5.0) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure with `ncols` panels side by side."""
    fig, axes = plt.subplots(1, ncols, figsize=(width * (1 if ncols == 1 else 0.62 * ncols), height), squeeze=False)
    return fig, list(axes[0])


def legend_outside(fig: plt.Figure, axes: list[plt.Axes]) -> None:
    """One legend for all panels, right of the last panel, so it never covers data."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    if handles:
        axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def caption(fig: plt.Figure, lines: list[str]) -> None:
    """The provenance caption under the axes (wrapped so it never runs off the figure)."""
    wrapped = []
    for line in lines:
        wrapped.extend(textwrap.wrap(line, CAPTION_WIDTH, subsequent_indent="   ") or [""])
    fig.text(0.01, -0.01, "\n".join(wrapped), ha="left", va="top", fontsize=9, family="monospace", color="#333333")


def ctx_axis(ax: plt.Axes, xs: list[float], label: str = "context length (tokens)", log: bool = True) -> None:
    """Log-2 x axis ticked at the measured contexts, labelled 1k/2k/…"""
    from plots.series import fmt_x

    ticks = sorted({float(x) for x in xs if pd.notna(x) and float(x) > 0})
    if log:
        ax.set_xscale("log", base=2)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([fmt_x(t) for t in ticks])
        if log and len(ticks) > 1:
            ax.set_xlim(ticks[0] / 1.25, ticks[-1] * 1.25)
    ax.set_xlabel(label)


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.svg atomically (a reader never sees half a file); close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{name}.{ext}"
        tmp = out_dir / f"{name}.{ext}.tmp"
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata=_metadata(ext))
        os.replace(tmp, path)
        paths.append(path)
    plt.close(fig)
    return paths


def _metadata(ext: str) -> dict:
    # No creation date in the files: regenerating from the same rows gives the same bytes.
    return {"Date": None} if ext == "svg" else {"Software": "ttt-bench plots"}


METRIC_LABELS: dict[str, str] = {
    "ms_per_token": "time per token",
    "ms_per_step": "time per decode step",
    "time_ms": "kernel time",
    "ppl": "perplexity",
    "loss_by_token": "loss",
}


def ylabel(metric: str, unit: object) -> str:
    """Readable axis label with the unit from the rows."""
    name = METRIC_LABELS.get(metric, metric.replace("_", " "))
    return f"{name} ({unit})" if pd.notna(unit) and str(unit) not in ("", "ppl") else name


def plain_log_y(ax: plt.Axes) -> None:
    """Log y axis with plain numbers (0.02, 0.05) instead of 2×10⁻², on major and minor ticks."""
    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _pos: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    # Label minor ticks at 2x and 5x a power of ten: a range inside one decade still gets numbers.
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))


def headroom(ax: plt.Axes, values: pd.Series, frac: float = 0.18) -> None:
    """Leave the top `frac` of the axes free of data, so OOM marks on the top edge never sit on a point."""
    vals = values.dropna()
    vals = vals[vals > 0] if ax.get_yscale() == "log" else vals
    if vals.empty:
        return
    lo, hi = float(vals.min()), float(vals.max())
    if ax.get_yscale() == "log":
        span = np.log10(hi / lo) if hi > lo else 0.3
        ax.set_ylim(lo / 10 ** (0.06 * span), hi * 10 ** (span * frac / (1 - frac) + 0.02))
    else:
        span = (hi - lo) or abs(hi) or 1.0
        ax.set_ylim(lo - 0.06 * span, hi + span * frac / (1 - frac))
