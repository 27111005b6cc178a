#!/usr/bin/env bash
# Session 13, device run 6: the fused TTT-Linear step's state L2 prefetch in its plain launch (TTT_STEP_STATE_PF=1),
# issued before the prologue's loads; session 12 measured it only under PDL. 1.3B decode A/B.
# Usage: bash bench/notes/session13_run6_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
V='[{"TTT_STEP_STATE_PF": "0"}, {"TTT_STEP_STATE_PF": "1"}]'
timeout 200 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt | grep "round"
echo "[ab at $(( $(date +%s) - start )) s]"
for f in "$OUTDIR"/profile_*.txt; do echo "== $f"; cat "$f"; done > "$OUTDIR"/profiles.txt && rm -f "$OUTDIR"/profile_*.txt
