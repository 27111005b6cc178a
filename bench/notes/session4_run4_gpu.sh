#!/usr/bin/env bash
# Session 4, device run 4: the 1.3B latency sweep (`make bench-latency`: four models, 1k-32k, prefill and decode,
# B = 16, bf16), the first H200 run with the Transformer; stops cleanly after LIMIT s (MODELS=a,b picks models).
# Usage: [MODELS=...] [LIMIT=...] bash bench/notes/session4_run4_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 580 python3 -m bench.run +sweep=latency progress=false time_limit_s=${LIMIT:-500} ${MODELS:+"sweep.models=[$MODELS]"} results="$OUTDIR"/latency.csv 2>&1 | grep -v -i warn \
  | tail -6
echo "[latency at $(( $(date +%s) - start )) s]"
