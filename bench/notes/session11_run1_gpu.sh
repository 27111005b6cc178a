#!/usr/bin/env bash
# Session 11, device run 1: GPU tests of the decode changes (skinny row stats, the fused step's post-norm parts,
# the graphed decode), then the TTT_ROW_STATS A/B (bench/notes/session11_decode_ab.py).
# Usage: bash bench/notes/session11_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 200 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_skinny.py \
  tests/ttt/test_ttt_fused.py tests/ops/test_ttt_linear_triton.py -k "skinny or gpu or graph or step or decode or norm or partials or sumsq" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
timeout 240 python3 bench/notes/session11_decode_ab.py "$OUTDIR" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep -v "^ \|^-\|^Name\|^Self" | head -30
echo "[ab at $(( $(date +%s) - start )) s]"
