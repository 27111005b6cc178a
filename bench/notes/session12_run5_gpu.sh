#!/usr/bin/env bash
# Session 12, device run 5, same commit as run 4: the committed op sweep (`make bench-op`'s +sweep=op).
# Usage: bash bench/notes/session12_run5_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 330 python3 -m bench.run +sweep=op progress=false results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3
echo "[op at $(( $(date +%s) - start )) s]"
