#!/usr/bin/env bash
# Session 7, device run 1: the lookahead TTT-Linear prefill loops against the default and fla at (a) and (b), after
# the TTT-Linear GPU tests. `-la1`: the weight update one mini-batch behind the chain, Z_c = K_c W_{c-1} + b_{c-1} +
# (K_c K_{c-1}^T + 1) eg'_{c-1}; `-la2`: the same software-pipelined, Zk_{c+1} = K_{c+1} W_c + b_c beside the chain of
# c. Offline sm_90a uncapped: 248 / 244 registers, no spills, 738 / 737 instructions a warp and mini-batch, 19 / 17
# bar.sync (default 243 / 660 / 15). Usage: bash bench/notes/session7_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 120 python3 -m pytest -m gpu tests/ops/test_ttt_linear_triton.py -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR" | tail -8 | tee "$OUTDIR"/pytest_gpu_linear.txt; el pytest
L=ttt_linear/triton,ttt_linear/triton-la1,ttt_linear/triton-la2,ttt_linear/triton-la2-r0,ttt_linear/triton-la2-r168,fla/chunk_ttt_linear
timeout 330 python3 -m bench.op --shapes a,b --rep-ms 40 --ts 1024,2048,4096,8192,16384 --out "$OUTDIR" --name lin_la --impls $L \
  2>&1 | grep -E "^ratio|rror" | head -40; el lin_la
