#!/usr/bin/env bash
# Session 2, second kernel run: op-level rows (our TTT-Linear and TTT-MLP Triton kernels, fla, SDPA, decode steps)
# and model-level TTT-MLP rows with its Triton kernels. Usage: bash bench/notes/kernels_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 250 python3 -m bench.run +sweep=op progress=false 2>&1 | grep -v -i warn | tail -45; el op
cp results/op.csv "$OUTDIR"/op.csv
timeout 160 python3 -m bench.run +sweep=latency 'sweep.models=[ttt_mlp]' impl=triton time_limit_s=130 progress=false 2>&1 \
  | grep -v -i warn | tail -6; el latency
cp results/latency.csv "$OUTDIR"/latency.csv
