#!/usr/bin/env bash
# Session 12, device run 2: why the fused step's one-wave variants (run 1: 12 us against 15.6 us a kernel with PDL
# off) make the PDL step 0.1 ms slower. The state's L2 prefetch under PDL on and off, and each form without PDL.
# Usage: bash bench/notes/session12_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
v() { echo "{\"TTT_STEP_ONE_TILE\": \"$1\", \"TTT_STEP_MAXNREG\": \"$2\", \"TTT_STEP_PREFETCH\": \"$3\", \"TTT_PDL\": \"$4\", \"TTT_STEP_WARPS\": \"4\"}"; }
V="[$(v 0 0 1 1), $(v 0 128 1 1), $(v 0 0 0 1), $(v 0 128 0 1), $(v 1 128 0 1), $(v 0 0 1 0), $(v 0 128 1 0)]"
timeout 300 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt | tail -70
echo "[ab at $(( $(date +%s) - start )) s]"
