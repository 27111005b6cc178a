"""`python -m plots`: regenerate every figure into plots/out/ (PNG + SVG) and write results/REPORT.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from plots.claims import all_claims
from plots.figures import draw_all
from plots.reference import REFERENCE_PATH, load_reference
from plots.report import write_report
from plots.rows import load_results
from plots.targets import all_targets

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plots", description=__doc__)
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="directory of result CSVs (recursive)")
    ap.add_argument("--out", type=Path, default=ROOT / "plots" / "out", help="where figures go")
    ap.add_argument("--report", type=Path, default=None, help="report path (default: <results>/REPORT.md)")
    ap.add_argument("--reference", type=Path, default=REFERENCE_PATH, help="the paper's values (overlay only)")
    args = ap.parse_args(argv)

    rows = load_results(args.results)
    ref = load_reference(args.reference)
    figures = draw_all(rows, args.out, ref)
    for fig in figures:
        print(f"{fig.name}: " + (", ".join(str(p) for p in fig.paths) if fig.drawn else f"skipped ({fig.skipped})"))
    report = write_report(
        args.report or args.results / "REPORT.md", rows, figures, all_claims(rows) + all_targets(rows), args.results
    )
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
