#!/usr/bin/env bash
# Session 13, device run 5, at 2782d0f: `make bench-latency`'s sweep (the committed rows in results/latency.csv).
# Usage: bash bench/notes/session13_run5_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"
timeout 330 python3 -m bench.run +sweep=latency progress=false time_limit_s=280 results="$OUTDIR"/latency.csv \
  > "$OUTDIR"/latency_log.txt 2>&1
