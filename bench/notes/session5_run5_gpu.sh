#!/usr/bin/env bash
# Session 5, device run 5, with mma_fold the TTT-Linear prefill default (run 4: 3-6% faster at every op shape): the
# TTT-Linear GPU tests, then the op sweep (`make bench-op`). Usage: bash bench/notes/session5_run5_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 60 python3 -m pytest -m gpu tests/ops/test_ttt_linear_triton.py -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR" | tail -8 | tee "$OUTDIR"/pytest_gpu_linear.txt; el pytest
timeout 220 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3
el op
