"""Regression gate: a new results CSV against a committed baseline.

    python -m bench.regress results/latency.csv --baseline results/baselines/latency_h100.csv [--tolerance 0.15]

Points are matched on (model, impl, size, mode, ctx, batch, dtype, gpu_name, metric); only time metrics (unit
ms...) are compared, lower being better. Several rows of one point (repeated runs) count as their median.
A point whose median got slower by more than the tolerance, or that ran in the baseline but is oom/error now,
is a regression: the table is printed and the exit status is 1. No point in common: exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from bench import results

MATCH_KEY: list[str] = ["model", "impl", "size", "mode", "ctx", "batch", "dtype", "gpu_name", "metric"]


def _points(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point: median value of ok rows, and whether any ok row exists."""
    df = df[df["unit"].fillna("").str.startswith("ms")].copy()
    df["gpu_name"] = df["gpu_name"].fillna("")
    df["ok_value"] = df["value"].where(df["status"] == "ok")
    out = df.groupby(MATCH_KEY, dropna=False).agg(
        value=("ok_value", "median"), status=("status", lambda s: "ok" if (s == "ok").any() else s.iloc[-1])
    )
    return out.reset_index()


def compare(new: pd.DataFrame, baseline: pd.DataFrame, tolerance: float = 0.15) -> pd.DataFrame:
    """Matched points with baseline and new medians, their ratio, and a `regressed` flag."""
    merged = _points(baseline).merge(_points(new), on=MATCH_KEY, suffixes=("_base", "_new"))
    merged = merged[merged["status_base"] == "ok"]
    merged["ratio"] = merged["value_new"] / merged["value_base"]
    slower = merged["ratio"] > 1 + tolerance
    broke = merged["status_new"] != "ok"
    merged["regressed"] = slower | broke
    merged["verdict"] = "ok"
    merged.loc[slower, "verdict"] = "SLOWER"
    merged.loc[broke, "verdict"] = merged.loc[broke, "status_new"].str.upper()
    return merged.sort_values(["model", "impl", "mode", "metric", "ctx"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.regress", description=__doc__.split("\n\n")[0])
    ap.add_argument("new", type=Path, help="results CSV of the new run")
    ap.add_argument("--baseline", type=Path, required=True, help="committed baseline CSV (results/baselines/...)")
    ap.add_argument("--tolerance", type=float, default=0.15, help="allowed slowdown, as a fraction (default 0.15)")
    args = ap.parse_args(argv)
    for path in (args.new, args.baseline):
        if not path.is_file():
            print(f"error: no results file at {path}", file=sys.stderr)
            return 2
    table = compare(results.read(args.new), results.read(args.baseline), args.tolerance)
    if table.empty:
        print(f"error: no ok point of {args.baseline} is in {args.new} (same model/impl/size/ctx/batch/dtype/GPU)")
        return 2
    cols = MATCH_KEY[:-2] + ["metric", "value_base", "value_new", "ratio", "verdict"]
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.float_format", "{:.4g}".format):
        print(table[[c for c in cols if c != "gpu_name"]].to_string(index=False))
    n_bad = int(table["regressed"].sum())
    print(f"{n_bad} of {len(table)} point(s) regressed (tolerance {args.tolerance:.0%})")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
