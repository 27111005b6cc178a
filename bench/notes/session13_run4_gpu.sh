#!/usr/bin/env bash
# Session 13, device run 4: the fused decode's head (embedding as a gather, the final RMSNorm as one kernel) against
# the modules (TTT_DECODE_HEAD=0), after the NextWeight hints were dropped (run 3: slower). GPU tests, then the 1.3B
# decode A/B.
# Usage: bash bench/notes/session13_run4_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_ffn_step.py tests/ttt/test_ttt_skinny.py \
  tests/ttt/test_ttt_fused.py tests/ops/test_ttt_linear_triton.py -k "head or ffn or skinny or gpu or graph or step or decode" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_DECODE_HEAD": "1"}, {"TTT_DECODE_HEAD": "0"}]'
timeout 200 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear,ttt_mlp "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round" 
echo "[ab at $(( $(date +%s) - start )) s]"
for f in "$OUTDIR"/profile_*.txt; do echo "== $f"; cat "$f"; done > "$OUTDIR"/profiles.txt && rm -f "$OUTDIR"/profile_*.txt
