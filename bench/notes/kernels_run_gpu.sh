#!/usr/bin/env bash
# Session 2 device run: GPU tests of the new kernels, then model-level latency rows (fused TTT-Linear vs Mamba, same
# run), then the TTT-MLP Triton check/timing and the fused-layer profile. Usage: bash bench/notes/kernels_run_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
timeout 150 python3 -m pytest -q -m gpu tests/ttt/test_ttt_fused.py tests/ops/test_ttt_mlp_triton.py tests/ops/test_ttt_linear_triton.py \
  -p no:cacheprovider 2>&1 | tail -25 | tee "$OUTDIR"/gpu_tests.txt; el tests
timeout 210 python3 -m bench.run +sweep=latency 'sweep.models=[mamba,ttt_linear]' time_limit_s=170 progress=false 2>&1 \
  | grep -v -i warn | tail -8; el latency
cp results/latency.csv "$OUTDIR"/latency.csv
timeout 120 python3 bench/notes/ttt_mlp_triton_gpu_check.py --out "$OUTDIR" --budget-s 80 2>&1 | tail -40; el mlp
timeout 90 python3 bench/notes/ttt_linear_fused_gpu_check.py --out "$OUTDIR"/fused --ctx 2048 2>&1 | tail -30; el fused
tar czf "$OUTDIR"/fused.tgz -C "$OUTDIR" fused && rm -r "$OUTDIR"/fused; ls -la "$OUTDIR"
