#!/usr/bin/env bash
# Session 4, device run 3: every GPU test at this commit, then the op sweep (`make bench-op`) with the new TTT-Linear
# register cap and TTT-MLP defaults. Usage: bash bench/notes/session4_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 270 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rs 2>&1 | grep -E "passed|failed|FAILED|ERROR|SKIPPED" \
  | tail -30 | tee "$OUTDIR"/pytest_gpu.txt; el pytest
timeout 290 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -4
el op
