#!/usr/bin/env bash
# Session 12, device run 6: after the epilogue's math moved into one device function (ttt_io.norm_gate_rows),
# the GPU tests of the fused decode and run 4's A/B again, so the landing commit's step time is measured.
# Usage: bash bench/notes/session12_run6_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_fused.py \
  tests/ops/test_ttt_linear_triton.py -k "gpu or graph or step or decode" 2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_STEP_PDL": "1", "TTT_STEP_MAXNREG": "0"}, {"TTT_STEP_PDL": "0", "TTT_STEP_MAXNREG": "128"}]'
timeout 120 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
