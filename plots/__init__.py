"""Figures and the results report: read tidy rows from `results/**/*.csv`, never measure.

`python -m plots` regenerates every figure into `plots/out/` and writes `results/REPORT.md`.
"""
