#!/usr/bin/env bash
# Session 12, device run 8: the op-level TTT-Linear step (ttt_linear_step_triton, the op sweep's decode row) with the
# fused step's lesson: a 128-register cap (one wave of 512 programs) and 2 warps, against the default launch, beside
# Mamba.step; bench.op's own decode rows (the prefill part cut to one cheap impl at shape (b)).
# Usage: bash bench/notes/session12_run8_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
d="ttt_linear/triton-step,ttt_linear/triton-step-r128,ttt_linear/triton-step-w2,ttt_linear/triton-step-w2-r128,mamba_ssm/Mamba.step"
for pdl in 1 0; do
  TTT_PDL=$pdl timeout 200 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op_step_pdl$pdl.csv \
    "bench.impls=[sdpa/flash]" bench.shapes=b "bench.decode_impls=[$d]" 2>&1 | grep -v -i warn | tail -2
  python3 - "$OUTDIR"/op_step_pdl$pdl.csv <<'PY'
import sys, pandas as pd
df = pd.read_csv(sys.argv[1])
print(df[df["mode"] == "decode_op"][["impl", "value", "unit", "cuda_graph", "status"]].to_string())
PY
done
echo "[op step at $(( $(date +%s) - start )) s]"
