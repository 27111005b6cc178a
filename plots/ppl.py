"""Perplexity vs context length (mode=ppl, metric ppl) and loss vs token index (metric loss_by_token).

Loss by token: the x value is the `token_index` column (the end of the bucket of positions the loss is
averaged over); rows without it fall back to `ctx` holding the bucket end. One line per model/impl.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from plots import reference
from plots.figure import FigureResult, skipped
from plots.lines import draw_series
from plots.provenance import caption_lines
from plots.rows import select
from plots.series import add_series, fmt_x, pivot, points
from plots.style import MODEL_COLORS, caption, ctx_axis, legend_outside, new_figure, plain_log_y, save, ylabel

PPL_METRICS = ["ppl", "perplexity"]


# What makes perplexities comparable: the same text, tokenized the same way (bench/ppl.py rows carry all three).
EVAL_SET = ["dataset", "corpus_checksum", "tokenizer"]
PROTOCOL_LABELS = {"single_model_eval_ctx": "one model, eval at ctx", "trained_per_ctx": "trained per ctx"}


def _main(rows: pd.DataFrame) -> pd.DataFrame:
    # Ablation and sweep variants have their own figures; these compare the default models.
    return rows[rows["variant"].isna()]


def _series(rows: pd.DataFrame) -> pd.DataFrame:
    """`add_series`, and two evaluation protocols (bench/ppl.py), or one model's checkpoints trained at different
    contexts and each evaluated at every ctx, are never averaged into one line."""
    rows = add_series(rows)
    if rows.empty:
        return rows
    protocol = rows["protocol"].astype("string")
    if protocol.nunique(dropna=True) > 1:
        rows["series"] = rows["series"] + protocol.map(
            lambda p: f" · {PROTOCOL_LABELS.get(p, p)}", na_action="ignore"
        ).fillna("")
    per_ctx = protocol.fillna("") == "trained_per_ctx"  # there train_ctx == ctx along the line, by design
    several = rows[~per_ctx].groupby("series")["train_ctx"].nunique(dropna=True)
    split = ~per_ctx & rows["series"].isin(several[several > 1].index) & rows["train_ctx"].notna()
    labels = [
        f"{name} · trained at {fmt_x(tc)}" for name, tc in zip(rows.loc[split, "series"], rows.loc[split, "train_ctx"])
    ]
    rows.loc[split, "series"] = labels
    return rows


def _beyond_train_ctx(rows: pd.DataFrame) -> list[str]:
    """A note per series evaluated at a ctx longer than its checkpoint was trained at (a Transformer there runs on
    RoPE positions it never trained on; an RNN's extrapolation is the point of the figure, but still said)."""
    ok = rows[(rows["status"] == "ok") & rows["train_ctx"].notna() & (rows["ctx"] > rows["train_ctx"])]
    return [
        f"evaluated beyond the train ctx {fmt_x(tc)}: {', '.join(sorted(set(grp['series'])))}"
        for tc, grp in ok.groupby("train_ctx", sort=True)
    ]


def _panels(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per evaluation set (corpus, its checksum, tokenizer): perplexities of different text are not
    comparable, so two training campaigns on two corpora never share axes. Series are labelled within a panel."""
    cols = [c for c in EVAL_SET if c in rows.columns and rows[c].notna().any()]
    if not cols:
        return [("", _series(rows))]
    key = rows[cols].astype("string").fillna("?").agg(" · ".join, axis=1)
    out = []
    for k, grp in rows.groupby(key, sort=True):
        tcs = sorted({int(t) for t in grp["train_ctx"].dropna()})
        trained = f" · trained at {', '.join(fmt_x(t) for t in tcs)}" if tcs else ""
        out.append((f"{k}{trained}", _series(grp)))
    return out


def _draw_panels(title: str, used: pd.DataFrame, x: str, spread: bool) -> tuple[object, list, pd.DataFrame, list[str]]:
    """(figure, axes, points of every panel with the panel in the series name when there are several, notes)."""
    panels = _panels(used)
    fig, axes = new_figure(ncols=len(panels))
    notes: list[str] = []
    all_pts = []
    for ax, (label, rows) in zip(axes, panels):
        pts = points(rows, x)
        notes += draw_series(ax, pts, spread=spread) + _beyond_train_ctx(rows)
        _mark_train_ctx(ax, rows)
        if len(panels) > 1:
            ax.set_title(label, fontsize=9)
            pts = pts.assign(series=f"[{label}] " + pts["series"].astype(str))
        all_pts.append(pts)
    if len(panels) > 1:
        fig.suptitle(title)
    else:
        axes[0].set_title(title)
    return fig, axes, pd.concat(all_pts, ignore_index=True), notes


def draw_ppl_ctx(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Perplexity vs evaluation context length, one line per model/impl, one panel per evaluation set."""
    name, title = "ppl_vs_ctx", "Perplexity vs context length (lower is better)"
    used = select(_main(rows), "ppl", PPL_METRICS)
    used = used[used["metric"].isin(PPL_METRICS) | (used["status"] != "ok")]
    if not (used["status"] == "ok").any():
        return skipped(name, title, "no rows with mode=ppl, metric ppl")
    fig, axes, pts, notes = _draw_panels(title, used, "ctx", spread=True)
    if reference.overlay_lines(axes[0], reference.for_figure(ref, name, "ppl"), MODEL_COLORS):
        notes.append("dashed: the paper's values (plots/paper_reference.csv), not measured here")
    for ax in axes:
        ctx_axis(ax, list(pts["x"]))
        plain_log_y(ax)  # one extrapolating model can sit far above the rest; ratios read the same everywhere
    axes[0].set_ylabel("perplexity (log scale)")
    legend_outside(fig, axes)
    caption(fig, caption_lines(used, notes))
    return FigureResult(name, title, save(fig, out_dir, name), pivot(pts), notes)


def draw_loss_by_token(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None = None) -> FigureResult:
    """Loss vs token index inside long sequences (x: token_index, else ctx as the bucket end)."""
    name, title = "loss_vs_token", "Loss vs token index within a sequence"
    used = select(_main(rows), "ppl", ["loss_by_token"])
    used = used[used["metric"] == "loss_by_token"]
    if not (used["status"] == "ok").any():
        return skipped(name, title, "no rows with mode=ppl, metric loss_by_token")
    used = used.assign(pos=used["token_index"].fillna(used["ctx"]))
    fig, axes, pts, notes = _draw_panels(title, used, "pos", spread=False)
    if reference.overlay_lines(axes[0], reference.for_figure(ref, name, "loss_by_token"), MODEL_COLORS):
        notes.append("dashed: the paper's values (plots/paper_reference.csv), not measured here")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("token index (end of bucket, log scale)")
        ax.xaxis.set_major_formatter(_k_formatter())
    axes[0].set_ylabel(ylabel("loss_by_token", next(iter(used["unit"].dropna()), "nats")))
    legend_outside(fig, axes)
    ctxs = sorted({int(c) for c in used["ctx"].dropna()})
    caption(fig, caption_lines(used, [f"sequence length(s): {', '.join(map(str, ctxs))}"] + notes))
    return FigureResult(name, title, save(fig, out_dir, name), _coarse(pivot(pts, "{:.4f}")), notes)


def _mark_train_ctx(ax, used: pd.DataFrame) -> None:
    """A dotted vertical line at each train ctx the rows name: to its right the models extrapolate."""
    for tc in sorted({int(t) for t in used["train_ctx"].dropna()} if "train_ctx" in used.columns else set()):
        ax.axvline(tc, color="grey", linestyle=":", lw=1.2)
        ax.annotate(f"train ctx {fmt_x(tc)}", (tc, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="grey")  # fmt: skip


def _k_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fmt_x(v) if v >= 1 else f"{v:g}")


def _coarse(table: pd.DataFrame, max_rows: int = 16) -> pd.DataFrame:
    """Keep REPORT.md readable: at most `max_rows` evenly spaced token buckets (always the last)."""
    if len(table) <= max_rows:
        return table
    step = -(-len(table) // max_rows)
    keep = list(range(0, len(table), step))
    if keep[-1] != len(table) - 1:
        keep.append(len(table) - 1)
    return table.iloc[keep]
