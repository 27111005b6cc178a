#!/usr/bin/env bash
# Session 10, device run 3 (run 2 + the row-norm prologues and weight preload of the skinny kernel): GPU tests (skinny GEMM, PDL chain, fused TTT-Linear decode step, fused path, op step),
# then the model-level decode screen with a kernel profile (bench/notes/session10_decode_screen.py).
# Usage: bash bench/notes/session10_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/ttt/test_ttt_skinny.py tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py tests/ttt/test_ttt_model.py -k "skinny or gpu or graph or step or decode or cuda" 2>&1 | grep -v -i warn \
  | tail -25 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
timeout 200 python3 bench/notes/session10_decode_screen.py "$OUTDIR" 2>&1 | grep -v -i warn | tee "$OUTDIR"/screen.txt | tail -60
echo "[screen at $(( $(date +%s) - start )) s]"
