#!/usr/bin/env bash
# Session 12, device run 1: GPU tests of the decode step (one-tile step_core, the graphed fused decode), then the
# fused step's A/B: one tile against two, register cap, warps (bench/notes/decode_ab.py), 1.3B TTT-Linear.
# Usage: bash bench/notes/session12_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 200 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py -k "gpu or graph or step or decode" 2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_STEP_ONE_TILE": "0", "TTT_STEP_MAXNREG": "0", "TTT_STEP_WARPS": "4"},
    {"TTT_STEP_ONE_TILE": "0", "TTT_STEP_MAXNREG": "128", "TTT_STEP_WARPS": "4"},
    {"TTT_STEP_ONE_TILE": "1", "TTT_STEP_MAXNREG": "0", "TTT_STEP_WARPS": "4"},
    {"TTT_STEP_ONE_TILE": "1", "TTT_STEP_MAXNREG": "128", "TTT_STEP_WARPS": "4"},
    {"TTT_STEP_ONE_TILE": "1", "TTT_STEP_MAXNREG": "64", "TTT_STEP_WARPS": "8"}]'
timeout 300 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt | tail -60
echo "[ab at $(( $(date +%s) - start )) s]"
