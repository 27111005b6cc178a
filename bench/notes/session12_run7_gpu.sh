#!/usr/bin/env bash
# Session 12, device run 7: the fused step under PDL with its dependents triggered at the end and no L2 prefetch
# (TTT_STEP_PDL=late), against the plain launch (default) and session 11's; GPU tests of the three launches first.
# The late mode existed at commit f0ec6d9 only: measured slower than the plain launch (1.455 vs 1.441 ms), then removed.
# Usage: bash bench/notes/session12_run7_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_fused.py -k "gpu or launch" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_STEP_PDL": "0", "TTT_STEP_MAXNREG": "128"}, {"TTT_STEP_PDL": "late", "TTT_STEP_MAXNREG": "128"},
    {"TTT_STEP_PDL": "late", "TTT_STEP_MAXNREG": "0"}, {"TTT_STEP_PDL": "1", "TTT_STEP_MAXNREG": "0"}]'
timeout 120 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
