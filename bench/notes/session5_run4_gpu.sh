#!/usr/bin/env bash
# Session 5, device run 4: TTT-Linear prefill with the weight update folded into the MMA's accumulate (`-mf`;
# offline sm_90a: 674 instructions a warp and mini-batch vs 742, 15 bar.sync both, no local memory in the loop) next to
# the default and fla at (a) and (b), after the TTT-Linear GPU tests (which include an mma_fold bf16 case).
# Usage: bash bench/notes/session5_run4_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 90 python3 -m pytest -m gpu tests/ops/test_ttt_linear_triton.py -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR" | tail -8 | tee "$OUTDIR"/pytest_gpu_linear.txt; el pytest
L=ttt_linear/triton,ttt_linear/triton-mf,fla/chunk_ttt_linear
timeout 200 python3 -m bench.op --shapes a,b --ts 1024,2048,4096,8192,32768 --rep-ms 40 --out "$OUTDIR" --name lin_mf --impls $L \
  2>&1 | grep -E "^ratio|rror" | head -30; el lin_mf
