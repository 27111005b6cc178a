#!/usr/bin/env bash
# Session 5, device run 3, with the split TTT-MLP step at 2 warps (run 2: 94 vs 101 us at 4): the TTT-MLP GPU tests,
# then the committed sweeps: `make bench-op` and `make bench-latency` (four models, 1k-32k, B = 16, bf16; stops
# cleanly after LIMIT s). Usage: [LIMIT=...] bash bench/notes/session5_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 60 python3 -m pytest -m gpu tests/ops/test_ttt_mlp_triton.py -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR" | tail -8 | tee "$OUTDIR"/pytest_gpu_mlp.txt; el pytest
timeout 200 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3
el op
timeout 400 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-330} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4; el latency
