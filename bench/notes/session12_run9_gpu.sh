#!/usr/bin/env bash
# Session 12, device run 9: o_proj's L2 prefetch of its weight slice was screened (session 10) with the fused step
# before it under PDL; the step is now a plain launch, so o_proj can no longer start early. The prefetch on and off
# (TTT_SKINNY_PREFETCH), 1.3B TTT-Linear and TTT-MLP decode.
# Usage: bash bench/notes/session12_run9_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
V='[{"TTT_SKINNY_PREFETCH": "1"}, {"TTT_SKINNY_PREFETCH": "0"}]'
timeout 200 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear,ttt_mlp "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
