#!/usr/bin/env bash
# Session 7, device run 2: the Gluon main-loop screen (explicit layouts: the state's accumulator fragments are the
# B operand of Z = K W with no data movement; q, k, v by cp.async one mini-batch ahead; offline sm_90a 168 registers,
# 643 instructions a warp and mini-batch, 12 bar.sync, no spills; production 243 / 660 / 15) against the production
# kernel at (a) and (b), output and final
# W checked against it. Usage: bash bench/notes/session7_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 400 python3 bench/notes/session7_gluon_screen.py "$OUTDIR" 2>&1 | tail -40
echo "[screen at $(( $(date +%s) - start )) s]"
