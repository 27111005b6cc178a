"""Prefill and decode latency vs context: log-log, one line per model/impl, OOM gaps marked, paper overlay."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots import reference
from plots.figure import FigureResult, skipped
from plots.lines import draw_series
from plots.provenance import caption_lines
from plots.rows import pick_metric, select
from plots.series import add_series, pivot, points, to_ms
from plots.style import MODEL_COLORS, caption, ctx_axis, headroom, legend_outside, new_figure, plain_log_y, save, ylabel

PREFILL_METRICS = ["ms_per_token", "latency_ms_per_token", "time_per_token"]
DECODE_METRICS = ["ms_per_token", "ms_per_step", "latency_per_token", "time_per_step"]


def latency_points(
    rows: pd.DataFrame, mode: str, preferred: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, str | None]:
    """(rows used, points, metric) for one latency mode; the metric is the first preferred one present."""
    metric = pick_metric(select(rows, mode), preferred)
    if metric is None:
        return rows.iloc[0:0], pd.DataFrame(), None
    # Ablation / sweep variants (a non-empty `variant`) are not the models the latency figures compare.
    main = rows[rows["variant"].isna()]
    used = to_ms(add_series(select(main, mode, [metric])))
    return used, points(used, "ctx"), metric


def draw_latency(
    rows: pd.DataFrame,
    out_dir: Path,
    ref: pd.DataFrame | None,
    *,
    mode: str,
    preferred: list[str],
    name: str,
    title: str,
) -> FigureResult:
    """The shared body of the prefill and decode figures."""
    used, pts, metric = latency_points(rows, mode, preferred)
    if metric is None or pts.empty:
        return skipped(name, title, f"no rows with mode={mode} and a measured value")
    unit = next(iter(used.loc[used["metric"] == metric, "unit"].dropna()), "ms")
    fig, (ax,) = new_figure()
    notes = draw_series(ax, pts)
    paper = reference.for_figure(ref, name, metric)
    if reference.overlay_lines(ax, paper, MODEL_COLORS):
        notes.append("dashed: the paper's values (plots/paper_reference.csv), not measured here")
    plain_log_y(ax)
    headroom(ax, pd.concat([pts["value"], pts["spread_hi"], paper["value"]]))
    ctx_axis(ax, list(pts["x"]))
    ax.set_ylabel(ylabel(metric, unit))
    ax.set_title(title)
    legend_outside(fig, [ax])
    caption(fig, caption_lines(used, notes))
    return FigureResult(name, title, save(fig, out_dir, name), pivot(pts), notes)


def draw_prefill(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Prefill: forward time per token vs context (mode=prefill; metric ms_per_token preferred)."""
    return draw_latency(
        rows, out_dir, ref, mode="prefill", preferred=PREFILL_METRICS, name="prefill_latency",
        title="Prefill latency vs context (lower is better)",
    )  # fmt: skip


def draw_decode(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Decode: time per generated token (or step) at `ctx` tokens in the cache (mode=decode)."""
    return draw_latency(
        rows, out_dir, ref, mode="decode", preferred=DECODE_METRICS, name="decode_latency",
        title="Decode latency vs context (lower is better)",
    )  # fmt: skip
