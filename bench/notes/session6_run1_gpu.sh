#!/usr/bin/env bash
# Session 6, device run 1: the transposed-state TTT-Linear prefill screen and the grid probe
# (bench/notes/session6_transposed_screen.py), then the production kernel at 8 warps capped at 128 registers
# (offline sm_90a: no spills, 564 instructions a warp and mini-batch, two programs an SM) and uncapped, at (a).
# Usage: bash bench/notes/session6_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 150 python3 bench/notes/session6_transposed_screen.py "$OUTDIR" 2>&1 | grep -v -i warn | tail -40; el screen
L=ttt_linear/triton,ttt_linear/triton-w8-r128,ttt_linear/triton-w8-r0
timeout 200 python3 -m bench.op --shapes a --rep-ms 40 --out "$OUTDIR" --name lin_w8 --impls $L \
  2>&1 | grep -E "^ratio|rror" | head -30; el lin_w8
