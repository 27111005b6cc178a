#!/usr/bin/env bash
# Session 10, device run 4, at the commit that lands: GPU tests of the decode changes, the A/B of the two opt-in
# skinny fusions (SCREEN=final bench/notes/session10_decode_screen.py), then the committed model sweep
# (`make bench-latency`: every model's prefill and decode; stops cleanly after LIMIT s).
# Usage: [LIMIT=...] bash bench/notes/session10_run4_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_skinny.py \
  tests/ttt/test_ttt_fused.py tests/ops/test_ttt_linear_triton.py -k "skinny or gpu or graph or step or decode" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
SCREEN=final timeout 120 python3 bench/notes/session10_decode_screen.py "$OUTDIR" 2>&1 | grep -v -i warn \
  | tee "$OUTDIR"/screen.txt | head -8
echo "[screen at $(( $(date +%s) - start )) s]"
timeout 300 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-280} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4
echo "[latency at $(( $(date +%s) - start )) s]"
