#!/usr/bin/env bash
# Session 12, device run 4, at the commit that lands: GPU tests of the decode step, the A/B of the fused step's new
# launch (plain, 128-register cap) against session 11's (PDL + L2 prefetch, uncapped), then the committed model
# sweep (`make bench-latency`'s +sweep=latency; stops cleanly after LIMIT s). bench-op is run 5.
# Usage: [LIMIT=...] bash bench/notes/session12_run4_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py -k "gpu or graph or step or decode" 2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_STEP_PDL": "1", "TTT_STEP_MAXNREG": "0"}, {"TTT_STEP_PDL": "0", "TTT_STEP_MAXNREG": "128"}]'
timeout 120 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
timeout 300 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-280} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4
echo "[latency at $(( $(date +%s) - start )) s]"
