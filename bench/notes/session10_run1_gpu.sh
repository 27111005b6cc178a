#!/usr/bin/env bash
# Session 10, device run 1: GPU tests of the skinny decode GEMM + PDL chain (and the decode tests they touch), then
# the screen (bench/notes/session10_decode_screen.py: model decode for TTT_SKINNY x TTT_PDL, GEMM tile configs).
# Usage: bash bench/notes/session10_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/ttt/test_ttt_skinny.py tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py -k "skinny or gpu or graph or step" 2>&1 | grep -v -i warn | tail -25 \
  | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
timeout 330 python3 bench/notes/session10_decode_screen.py "$OUTDIR" 2>&1 | grep -v -i warn | tee "$OUTDIR"/screen.txt | tail -120
echo "[screen at $(( $(date +%s) - start )) s]"
