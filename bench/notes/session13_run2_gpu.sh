#!/usr/bin/env bash
# Session 13, device run 2: the one grid (ttt/fused/ffn_step.py) with a constexpr K bound: 128 registers offline
# against 208, both counts an artefact of the offline compile without divisibility (session13.md). GPU tests of
# the one grid and of the skinny kernels, then the 1.3B decode A/B: two launches and one grid, with PDL and without
# (per-kernel times in the profiles).
# Usage: bash bench/notes/session13_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_ffn_step.py tests/ttt/test_ttt_skinny.py \
  tests/ttt/test_ttt_fused.py -k "ffn or skinny or gpu or graph or step or decode" 2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_PDL": "1", "TTT_FFN_STEP": "0"}, {"TTT_PDL": "1", "TTT_FFN_STEP": "1"}, {"TTT_PDL": "0", "TTT_FFN_STEP": "0"},
    {"TTT_PDL": "0", "TTT_FFN_STEP": "1"}]'
timeout 300 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear,ttt_mlp "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|preconv"
echo "[ab at $(( $(date +%s) - start )) s]"
for f in "$OUTDIR"/profile_*.txt; do echo "== $f"; cat "$f"; done > "$OUTDIR"/profiles.txt && rm -f "$OUTDIR"/profile_*.txt
