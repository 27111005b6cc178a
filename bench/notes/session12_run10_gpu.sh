#!/usr/bin/env bash
# Session 12, device run 10, at the landing commit: the GPU tests of the decode path (fused step with both launches,
# the step in a graph, skinny GEMMs) and of the op kernels' steps.
# Usage: bash bench/notes/session12_run10_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 200 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_skinny.py tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py -k "skinny or gpu or graph or step or decode or launch" 2>&1 | tail -15 \
  | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
