"""Turning rows into plotted points: one series per model/impl, one point per x, repeated runs summarised.

A series is `model/impl`; where rows differ in size, dtype, batch or GPU, that field joins the label so two
different setups are never averaged into one line. Repeated runs of one point are summarised by their median
(each row's value is already a median over repeats), and the number of distinct run_ids is kept.
"""

from __future__ import annotations

import pandas as pd

SPLIT_COLUMNS: list[str] = ["size", "dtype", "batch", "gpu_name", "dataset"]
UNIT_TO_MS: dict[str, float] = {"ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}


def _fmt(col: str, value: object) -> str:
    if col == "batch" and pd.notna(value):
        return f"b={int(value)}"
    return str(value)


def add_series(rows: pd.DataFrame, base: tuple[str, ...] = ("model", "impl")) -> pd.DataFrame:
    """Rows with a `series` label column: `model/impl`, plus any split column that varies within `rows`."""
    rows = rows.copy()
    if rows.empty:  # agg(axis=1) on no rows returns a frame, not a column
        rows["series"] = pd.Series(dtype="string")
        return rows
    varying = [c for c in SPLIT_COLUMNS if rows[c].nunique(dropna=True) > 1]
    label = rows[list(base)].astype("string").fillna("?").agg("/".join, axis=1)
    if base == ("model", "impl"):
        # The harness writes impl as `<model>/<impl>` already: don't repeat the model.
        named = rows["impl"].astype(str)
        prefixed = [i.startswith(f"{m}/") for m, i in zip(rows["model"].astype(str), named)]
        label = label.where(~pd.Series(prefixed, index=rows.index), named)
    for col in varying:
        label = label + " · " + rows[col].map(lambda v, c=col: _fmt(c, v))
    rows["series"] = label
    return rows


def to_ms(rows: pd.DataFrame) -> pd.DataFrame:
    """Time values converted to ms where the unit is a plain time unit (others left as they are)."""
    rows = rows.copy()
    factor = rows["unit"].map(lambda u: UNIT_TO_MS.get(str(u).split("/")[0].strip(), 1.0) if pd.notna(u) else 1.0)
    for col in ("value", "spread_lo", "spread_hi"):
        rows[col] = rows[col] * factor
    rows["unit"] = rows["unit"].map(
        lambda u: (
            "ms" + ("/" + str(u).split("/", 1)[1] if pd.notna(u) and "/" in str(u) else "")
            if pd.notna(u) and str(u).split("/")[0].strip() in UNIT_TO_MS
            else u
        )
    )
    return rows


def _status(statuses: pd.Series) -> str:
    s = set(statuses)
    for status in ("ok", "oom", "error", "skipped"):
        if status in s:
            return status
    return str(next(iter(s)))


def points(rows: pd.DataFrame, x: str = "ctx") -> pd.DataFrame:
    """One point per (series, x): median value of ok rows, status ok > oom > error > skipped, run count.

    Columns: series, model, impl, x, value, spread_lo, spread_hi, status, runs, error, n_error.
    """
    cols = ["series", "model", "impl", "x", "value", "spread_lo", "spread_hi", "status", "runs", "error", "n_error"]
    rows = rows[rows[x].notna()]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (series, xv), grp in rows.groupby(["series", x], sort=True):
        ok = grp[grp["status"] == "ok"]
        errors = grp.loc[grp["status"] == "error", "error"].dropna().astype(str)
        out.append(
            {
                "series": series,
                "model": grp["model"].iloc[0],
                "impl": grp["impl"].iloc[0],
                "x": xv,
                "value": ok["value"].median() if not ok.empty else float("nan"),
                "spread_lo": ok["spread_lo"].median() if not ok.empty else float("nan"),
                "spread_hi": ok["spread_hi"].median() if not ok.empty else float("nan"),
                "status": _status(grp["status"]),
                "runs": grp["run_id"].nunique(dropna=True) or len(grp),
                "error": errors.iloc[0] if not errors.empty else "",
                # Error rows are noted even where another run of the same point succeeded.
                "n_error": int((grp["status"] == "error").sum()),
            }
        )
    return pd.DataFrame(out, columns=cols)


def pivot(pts: pd.DataFrame, fmt: str = "{:.4g}") -> pd.DataFrame:
    """Report table: rows = x, columns = series, cells = value, or OOM / error / skipped."""
    if pts.empty:
        return pd.DataFrame()
    cell = pts.apply(lambda r: fmt.format(r["value"]) if r["status"] == "ok" else str(r["status"]).upper(), axis=1)
    table = pts.assign(cell=cell).pivot(index="x", columns="series", values="cell").fillna("—")
    table.index = [fmt_x(v) for v in table.index]
    return table


def fmt_x(v: object) -> str:
    """Context lengths as 1k/2k/…; other x values as compact numbers."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if f >= 1024 and f % 1024 == 0:
        return f"{int(f // 1024)}k"
    return f"{f:.4g}"
