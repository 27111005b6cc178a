#!/usr/bin/env bash
# Next session's first device call (written in session 4, not yet run): time the hidden-split TTT-MLP decode step
# (`ttt_mlp/triton_split-step`, interpreter-tested only) against the one-program step and Mamba.step, one layer,
# B = 16, CUDA graph and eager, each checked against the PyTorch step first (hidden chunk 16: 96 registers offline,
# vs 168 at 32), and the TTT-Linear step at 2 warps / capped at 128 registers (one wave of 512 programs instead of
# 1.3; offline 210 regs no spills / 120 B spills); TTT-Linear prefill without register prefetch; then every GPU test.
# If the split step wins, make it `_triton_step`'s default (ttt/ops/ttt_mlp/__init__.py) and rerun `make bench-latency`
# for ttt_mlp (its 1.3B decode spends ~24 x 192 us of 6.08 ms in the step). Usage: bash bench/notes/session5_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 120 python3 -m bench.op --decode --rep-ms 100 --out "$OUTDIR" --name decode_split \
  --impls ttt_mlp/triton-step,ttt_mlp/triton_split-step,ttt_mlp/triton_split-step-h16,ttt_linear/triton-step,ttt_linear/triton-step-w2,ttt_linear/triton-step-r128,mamba_ssm/Mamba.step 2>&1 \
  | grep -v -i warn | tail -24; el decode
# TTT-Linear prefill without the register prefetch (offline: 23 -> 15 bar.sync and 749 -> 723 instructions per warp and
# mini-batch; capped at 168 registers no local memory in the loop, vs 10 + 10 LDL/STL with prefetch), next to fla.
L=ttt_linear/triton,ttt_linear/triton-nopf,ttt_linear/triton-r0,ttt_linear/triton-nopf-r0,fla/chunk_ttt_linear
timeout 150 python3 -m bench.op --shapes a,b --ts 1024,2048,8192 --rep-ms 40 --out "$OUTDIR" --name lin_nopf --impls $L \
  2>&1 | grep -E "^ratio|rror" | head -30; el lin_nopf
timeout 300 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfs 2>&1 | grep -E "passed|failed|FAILED|ERROR|SKIPPED" \
  | tail -30 | tee "$OUTDIR"/pytest_gpu.txt; el pytest
