#!/usr/bin/env bash
# Session 8, device run 1: the Gluon TTT-Linear prefill kernel (ttt/ops/ttt_linear/prefill_gluon.py, backend="auto"
# picks it on a GPU) checked by the GPU tests (against the float64 definition and the Triton kernel: head chunk,
# ragged tail, accumulators, token_eta[-1] = 0, strided views; the fused model layers that now run it), then its
# variants screened at both op shapes (one-barrier row sums or gl.reduce's, ring of 2 or 3,
# off-chain products early, output LayerNorm one mini-batch late, register cap) against the Triton kernel, every row checked against the fp32 dual form.
# Usage: bash bench/notes/session8_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_ttt_linear_gluon.py \
  tests/ops/test_ttt_linear_triton.py tests/ttt/test_ttt_fused.py 2>&1 | grep -v -i warn | tail -25 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
impls=ttt_linear/triton,ttt_linear/gluon,ttt_linear/gluon-bar2,ttt_linear/gluon-nb3,ttt_linear/gluon-early,ttt_linear/gluon-defer,ttt_linear/gluon-early-defer,ttt_linear/gluon-r0,ttt_linear/gluon-defer-r0
timeout 290 python3 -m bench.op --shapes a,b --impls $impls --rep-ms 100 --out "$OUTDIR" --name run1_gluon_caps 2>&1 \
  | grep -v "^ttt_linear/" | tail -120
echo "[op screen at $(( $(date +%s) - start )) s]"
