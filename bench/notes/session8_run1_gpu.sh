#!/usr/bin/env bash
# Session 8, device run 1: the Gluon TTT-Linear prefill kernel (ttt/ops/ttt_linear/prefill_gluon.py, backend="auto"
# picks it on a GPU) checked by the GPU tests (against the float64 definition and the Triton kernel: head chunk,
# ragged tail, accumulators, token_eta[-1] = 0, strided views, every knob; the fused model layers that now run it),
# then the committed op sweep (`make bench-op`: every op impl at shapes (a) and (b), decode steps) with the Gluon
# kernel's variants beside it (one-barrier row sums or gl.reduce's, ring of 2 or 3, off-chain products early, output
# LayerNorm one mini-batch late, register cap), every row checked against the fp32 dual form.
# Usage: bash bench/notes/session8_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_ttt_linear_gluon.py \
  tests/ops/test_ttt_linear_triton.py tests/ttt/test_ttt_fused.py 2>&1 | grep -v -i warn | tail -25 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
variants=ttt_linear/gluon-bar2,ttt_linear/gluon-nb3,ttt_linear/gluon-early,ttt_linear/gluon-defer,ttt_linear/gluon-early-defer,ttt_linear/gluon-r0,ttt_linear/gluon-defer-r0
impls=ttt_linear/gluon,ttt_linear/triton,ttt_mlp/triton,fla/chunk_ttt_linear,fla/fused_chunk_ttt_linear,sdpa/flash,sdpa/cudnn,$variants
timeout 330 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv "bench.impls=[$impls]" 2>&1 \
  | grep -v -i warn | tail -6
echo "[op sweep at $(( $(date +%s) - start )) s]"
python3 - "$OUTDIR"/op.csv <<'PY' 2>&1 | tail -60
import sys, pandas as pd
d = pd.read_csv(sys.argv[1]); d = d[d["mode"] == "op"]
t = d.pivot_table(index=["shape_set", "ctx"], columns="impl", values="value")
pd.set_option("display.width", 250); pd.set_option("display.max_columns", 30)
print(t.round(3).to_string())
print((1 / d[d["impl"].str.startswith("ttt_linear/gluon")].pivot_table(index=["shape_set", "ctx"], columns="impl", values="frac_hbm")).round(2).to_string())
print(d[["impl", "check_rel_err", "op_kernels"]].groupby("impl").agg({"check_rel_err": "max", "op_kernels": "first"}).to_string())
PY
