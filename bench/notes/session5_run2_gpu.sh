#!/usr/bin/env bash
# Session 5, device run 2, after promoting run 1's winners (TTT-Linear prefill without register prefetch; the
# hidden-split TTT-MLP decode step as `triton`, the one-program step now `triton_single`): every GPU test, the split
# step at 2 / 8 warps (explicit num_warps is now honoured), then the op sweep (`make bench-op`).
# Usage: bash bench/notes/session5_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 200 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfs 2>&1 | grep -E "passed|failed|FAILED|ERROR|SKIPPED|Error" \
  | tail -30 | tee "$OUTDIR"/pytest_gpu.txt; el pytest
timeout 60 python3 -m bench.op --decode --rep-ms 100 --out "$OUTDIR" --name decode_w \
  --impls ttt_mlp/triton-step,ttt_mlp/triton-step-w2,ttt_mlp/triton-step-w8,ttt_mlp/triton_single-step 2>&1 \
  | grep -E "^decode" | grep "graph=True"; el decode_w
timeout 240 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -4
el op
