#!/usr/bin/env bash
# Session 6, device run 2: the new skewed TTT-Linear prefill loop (`-skew`: the outputs of mini-batch c-1 finished
# inside the chain of c, their LN statistics in the chain's first reduction; offline sm_90a uncapped 246 registers,
# 700 instructions a warp and mini-batch, 14 bar.sync, no local memory) against the default and fla at (a) and (b),
# after the TTT-Linear GPU tests (which include a bf16 skew case). Usage: bash bench/notes/session6_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 90 python3 -m pytest -m gpu tests/ops/test_ttt_linear_triton.py -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR" | tail -8 | tee "$OUTDIR"/pytest_gpu_linear.txt; el pytest
L=ttt_linear/triton,ttt_linear/triton-skew,ttt_linear/triton-skew-r168,fla/chunk_ttt_linear
timeout 300 python3 -m bench.op --shapes a,b --rep-ms 40 --out "$OUTDIR" --name lin_skew --impls $L \
  2>&1 | grep -E "^ratio|rror" | head -40; el lin_skew
