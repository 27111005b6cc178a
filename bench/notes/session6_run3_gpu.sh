#!/usr/bin/env bash
# Session 6, device run 3: every GPU test at this commit, then the committed model sweep (`make bench-latency`: four
# models, 1k-32k, B = 16, bf16; stops cleanly after LIMIT s), so that the 1.3B TTT-Linear rows carry mma_fold (the
# session 5 sweep predates it). Usage: [LIMIT=...] bash bench/notes/session6_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 170 python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfs 2>&1 \
  | grep -E "passed|failed|FAILED|ERROR|SKIPPED" | tail -12 | tee "$OUTDIR"/pytest_gpu.txt; el pytest
timeout 400 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-330} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4; el latency
