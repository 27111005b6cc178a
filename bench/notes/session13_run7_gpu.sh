#!/usr/bin/env bash
# Session 13, device run 7, at the landing code: GPU tests of the decode path (skinny GEMMs, one-grid FFN, the fused
# step and head, graphs) and of the op kernels' steps.
# Usage: bash bench/notes/session13_run7_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_ffn_step.py tests/ttt/test_ttt_skinny.py \
  tests/ttt/test_ttt_fused.py tests/ops/test_ttt_linear_triton.py -k "head or ffn or skinny or gpu or graph or step or decode" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
