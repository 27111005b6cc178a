"""Op-level kernel comparison (mode=op): time vs sequence length T per impl, one panel per op, memory floor.

The floor is the time to move `bytes_moved` at the device's measured copy bandwidth. Rows carry either a
bandwidth row (metric in BANDWIDTH_METRICS, unit GB/s) or `frac_hbm` (= achieved / measured bandwidth), from
which floor = time x frac_hbm. Rows without either get no floor line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots.figure import FigureResult, skipped
from plots.lines import draw_series
from plots.provenance import caption_lines
from plots.rows import pick_metric, select
from plots.series import add_series, pivot, points, to_ms
from plots.style import caption, ctx_axis, legend_outside, new_figure, plain_log_y, save, ylabel

NAME, TITLE = "op_kernels", "TTT op kernels: time vs sequence length"
OP_METRICS = ["time", "time_ms", "ms", "latency_ms"]  # bench/op.py writes metric "time", unit "ms"
BANDWIDTH_METRICS = ["hbm_bandwidth", "copy_bandwidth", "bandwidth"]
SHAPE_TITLES = {"a": "(a) B·T = 65,536 tokens", "b": "(b) B = 16"}


def floor_ms(used: pd.DataFrame, all_rows: pd.DataFrame) -> pd.Series:
    """Per-row memory floor in ms (NaN where the row carries neither bytes_moved+bandwidth nor frac_hbm)."""
    bw = all_rows[all_rows["metric"].isin(BANDWIDTH_METRICS) & (all_rows["status"] == "ok")]
    floor = used["value"] * used["frac_hbm"]
    if "copy_bw" in used.columns:  # bench/op.py's per-row measured copy bandwidth, bytes/s
        direct = used["bytes_moved"] / pd.to_numeric(used["copy_bw"], errors="coerce") * 1e3
        floor = direct.where(direct.notna(), floor)
    if not bw.empty and used["bytes_moved"].notna().any():
        # A measured bandwidth (GB/s) of the same device wins: it needs no assumption about frac_hbm's base.
        gbps = bw.groupby("gpu_name")["value"].median()
        per_row = used["gpu_name"].map(gbps)
        direct = used["bytes_moved"] / (per_row * 1e9) * 1e3
        floor = direct.where(direct.notna(), floor)
    return floor


def draw_op(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Time vs T per impl for each op (model), with the bytes-moved floor where the rows carry it."""
    metric = pick_metric(select(rows, "op"), OP_METRICS)
    if metric is None:
        return skipped(NAME, TITLE, "no rows with mode=op and a measured value")
    used = to_ms(add_series(select(rows, "op", [metric])))
    used = used.assign(floor=floor_ms(used, rows))
    # One panel per shape set where bench/op.py names it ((a) fixed B*T, (b) fixed B): every op of a shape set in
    # one panel is the comparison that matters; within a panel B follows T, so the label is the impl alone.
    by_shape = "shape_set" in used.columns and used["shape_set"].notna().any()
    if by_shape:
        used = used.assign(series=used["impl"].astype(str))
    key = "shape_set" if by_shape else "model"
    if used["gpu_name"].nunique(dropna=True) > 1:
        # Each GPU in panels of its own: one chip's kernel next to another's is no comparison (op times differ
        # with bandwidth; a ratio is only meaningful within one run).
        gpu = used["gpu_name"].astype("string").fillna("?")
        used = used.assign(panel=used[key].astype("string") + " · " + gpu)
        key = "panel"
    ops = sorted(used[key].dropna().astype(str).unique())
    fig, axes = new_figure(ncols=len(ops), width=8.0, height=4.8)
    notes, tables = [], []
    for ax, op in zip(axes, ops):
        sub = used[used[key].astype(str) == op]
        pts = points(sub, "ctx")
        notes += draw_series(ax, pts)
        fl = sub[sub["status"] == "ok"].groupby("ctx")["floor"].min().dropna()
        if not fl.empty:
            # The least any impl must move is the op's floor; drawn once per op, not per impl.
            ax.plot(fl.index, fl.values, color="black", linestyle=":", lw=1.8, label="memory floor (bytes / bandwidth)")
        plain_log_y(ax)
        ax.set_xscale("log", base=2)
        ctx_axis(ax, list(pts["x"]), label="sequence length T (tokens)")
        ax.set_ylabel(ylabel(metric, next(iter(sub["unit"].dropna()), "ms")))
        shape, _, gpu_label = op.partition(" · ")
        title = SHAPE_TITLES.get(shape, f"shape set {shape}") if by_shape else shape
        ax.set_title(f"{title}\n{gpu_label}" if gpu_label else title, fontsize=9 if gpu_label else None)
        # Both shape sets share impl names: prefix the table's columns with the shape set so they stay apart.
        tables.append(pivot(pts).add_prefix(f"({op}) ") if by_shape else pivot(pts))
    fig.suptitle(TITLE, y=1.02)
    legend_outside(fig, axes)
    caption(fig, caption_lines(used, notes))
    table = pd.concat(tables, axis=1) if tables else None
    return FigureResult(NAME, TITLE, save(fig, out_dir, NAME), table, notes)
