#!/usr/bin/env bash
# Session 9, device run 1: the Gluon TTT-MLP prefill kernel (ttt/ops/ttt_mlp/prefill_gluon.py, backend="auto" picks
# it on a GPU) checked by the GPU tests (against the float64 definition and the Triton kernel: head chunk, ragged
# tail, accumulators, token_eta[-1] = 0, strided views), the TTT-Linear Gluon tests at this commit (session 8's
# dispatch mend had not run on a GPU), then the op rows of both MLP kernels and the Linear one at shapes (a), (b).
# Usage: bash bench/notes/session9_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_ttt_mlp_gluon.py \
  tests/ops/test_ttt_mlp_triton.py 2>&1 | grep -v -i warn | tail -30 | tee "$OUTDIR"/pytest_mlp_gpu.txt
echo "[pytest mlp at $(( $(date +%s) - start )) s]"
timeout 120 python3 -m bench.op --shapes a,b --impls ttt_mlp/gluon,ttt_mlp/triton,ttt_linear/gluon --rep-ms 50 \
  --out "$OUTDIR" --name op_mlp 2>&1 | grep -v -i warn | tail -60
echo "[op at $(( $(date +%s) - start )) s]"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_ttt_linear_gluon.py 2>&1 \
  | grep -v -i warn | tail -8 | tee "$OUTDIR"/pytest_linear_gpu.txt
echo "[pytest linear at $(( $(date +%s) - start )) s]"
