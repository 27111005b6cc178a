#!/usr/bin/env bash
# Session 8, device run 2: the committed op sweep (`make bench-op`) and model sweep (`make bench-latency`, stops
# cleanly after LIMIT s) with the Gluon kernel's measured-fastest knobs as its default (bar1, nbuf=3: run 1).
# Usage: [LIMIT=...] bash bench/notes/session8_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 220 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3
echo "[op sweep at $(( $(date +%s) - start )) s]"
timeout 330 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-300} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4
echo "[latency at $(( $(date +%s) - start )) s]"
