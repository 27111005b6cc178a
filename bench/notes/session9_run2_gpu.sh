#!/usr/bin/env bash
# Session 9, device run 2: at the commit that lands, the GPU tests of both TTT-MLP kernels (the Gluon one with its
# dz/load placement mend after run 1), then the committed op sweep (`make bench-op`, now with ttt_mlp/gluon) and
# model sweep (`make bench-latency`, whose TTT-MLP rows now run the Gluon kernel; stops cleanly after LIMIT s).
# Usage: [LIMIT=...] bash bench/notes/session9_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_ttt_mlp_gluon.py \
  tests/ops/test_ttt_mlp_triton.py 2>&1 | grep -v -i warn | tail -20 | tee "$OUTDIR"/pytest_mlp_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
timeout 150 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3
echo "[op sweep at $(( $(date +%s) - start )) s]"
timeout 300 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-280} results="$OUTDIR"/latency.csv \
  2>&1 | grep -v -i warn | tail -4
echo "[latency at $(( $(date +%s) - start )) s]"
