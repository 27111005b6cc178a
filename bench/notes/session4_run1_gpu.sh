#!/usr/bin/env bash
# Session 4, device run 1: TTT-Linear register caps now that the accumulators are not live across the main loop
# (3-4 programs per SM instead of 2) next to fla at (a) T = 1k, 2k, 8k; the TTT-MLP register-pressure knobs at
# (a) T = 2k; where a 1.3B TTT-Linear decode step's time goes (profiler); the graphed-training GPU tests.
# Usage: bash bench/notes/session4_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
L=ttt_linear/triton,ttt_linear/triton-r168,ttt_linear/triton-r152,ttt_linear/triton-r128,fla/chunk_ttt_linear
timeout 150 python3 -m bench.op --shapes a --ts 1024,2048,8192 --rep-ms 40 --out "$OUTDIR" --name lin_screen --impls $L \
  2>&1 | grep -E "^(ttt_|fla)|ratio|regs|rror" | head -40; el lin_screen
M=ttt_linear/triton,ttt_mlp/triton,ttt_mlp/triton-nopf,ttt_mlp/triton-nopf-lq1-h1,ttt_mlp/triton-nopf-lq1,ttt_mlp/triton-lq1
timeout 100 python3 -m bench.op --shapes a --ts 2048 --rep-ms 40 --out "$OUTDIR" --name mlp_screen --impls $M \
  2>&1 | grep -E "^ttt_|ratio|regs|rror" | head -30; el mlp_screen
timeout 120 python3 bench/notes/session4_decode_prof.py "$OUTDIR" ttt_linear 16 2>&1 | grep -v -i warn | head -60; el prof
timeout 90 python3 -m pytest -m gpu tests/bench/test_train_graph.py -q -p no:cacheprovider 2>&1 | tail -4 \
  | tee "$OUTDIR"/pytest_graph.txt; el pytest
