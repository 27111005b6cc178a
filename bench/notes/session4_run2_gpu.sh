#!/usr/bin/env bash
# Session 4, device run 2: TTT-Linear's grid-picked register cap and the now nearly spill-free skewed loop vs fla at
# shapes (a) and (b), T = 1k..8k; TTT-MLP knobs on top of the new default at (a) T = 2k; decode GEMMs at M = 16,
# cuBLAS vs a Triton weight-streaming kernel. Usage: bash bench/notes/session4_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
L=ttt_linear/triton,ttt_linear/triton-r0,ttt_linear/triton-r168,ttt_linear/triton-skew,fla/chunk_ttt_linear
timeout 200 python3 -m bench.op --shapes a,b --ts 1024,2048,4096,8192 --rep-ms 40 --out "$OUTDIR" --name lin_screen2 \
  --impls $L 2>&1 | grep -E "^ratio|regs|rror" | head -60; el lin_screen
M=ttt_linear/triton,ttt_mlp/triton,ttt_mlp/triton-dz16,ttt_mlp/triton-rl-lzo,ttt_mlp/triton-ln2,ttt_mlp/triton-h2,ttt_mlp/triton-pf-h2-eq1
timeout 100 python3 -m bench.op --shapes a --ts 2048 --rep-ms 40 --out "$OUTDIR" --name mlp_screen2 --impls $M \
  2>&1 | grep -E "^ttt_|^ratio|rror" | head -30; el mlp_screen
timeout 200 python3 bench/notes/session4_skinny_screen.py "$OUTDIR" 2>&1 | grep -v -i warn | head -30; el skinny
