#!/usr/bin/env bash
# Session 12, device run 3: run 2 found the state's L2 prefetch costing 0.045 ms a step, and the one-wave (capped)
# step faster alone but slower under PDL. Here: no prefetch everywhere; cap and one tile with the step launched with
# and without PDL (TTT_STEP_PDL), and the whole chain without PDL.
# Usage: bash bench/notes/session12_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
v() { echo "{\"TTT_STEP_ONE_TILE\": \"$1\", \"TTT_STEP_MAXNREG\": \"$2\", \"TTT_STEP_PREFETCH\": \"0\", \"TTT_STEP_PDL\": \"$3\", \"TTT_PDL\": \"$4\", \"TTT_STEP_WARPS\": \"4\"}"; }
V="[$(v 0 0 1 1), $(v 1 0 1 1), $(v 0 128 0 1), $(v 1 128 0 1), $(v 1 128 1 1), $(v 0 0 0 1), $(v 1 128 1 0)]"
timeout 300 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
