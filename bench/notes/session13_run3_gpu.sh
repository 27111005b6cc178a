#!/usr/bin/env bash
# Session 13, device run 3: L2 warming of the next GEMM's weight by the latency-bound kernel before it
# (ttt.ops.pdl.NextWeight): the fused TTT-Linear step warms o_proj's (TTT_PF_OPROJ), the pre-conv step a prefix of
# the in-proj's (TTT_PF_INPROJ, a fraction of K). GPU tests, then the 1.3B decode A/B.
# Usage: bash bench/notes/session13_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/ttt/test_ttt_prefetch.py tests/ttt/test_ttt_ffn_step.py \
  tests/ttt/test_ttt_skinny.py tests/ttt/test_ttt_fused.py -k "prefetch or share or ffn or skinny or gpu or graph or step or decode" \
  2>&1 | tail -15 | tee "$OUTDIR"/pytest_gpu.txt
echo "[pytest at $(( $(date +%s) - start )) s]"
V='[{"TTT_PF_OPROJ": "0", "TTT_PF_INPROJ": "0"}, {"TTT_PF_OPROJ": "1", "TTT_PF_INPROJ": "0"}, {"TTT_PF_OPROJ": "0", "TTT_PF_INPROJ": "0.5"},
    {"TTT_PF_OPROJ": "0", "TTT_PF_INPROJ": "1"}, {"TTT_PF_OPROJ": "1", "TTT_PF_INPROJ": "0.5"}, {"TTT_PF_OPROJ": "1", "TTT_PF_INPROJ": "1"}]'
timeout 300 python3 bench/notes/decode_ab.py "$OUTDIR" ttt_linear,ttt_mlp "$V" 2>&1 | grep -v -i warn | tee "$OUTDIR"/ab.txt \
  | grep "round\|profile:\|_kernel" | grep -v "indexSelect\|nvjet\|_split\|_prologue\|_epilogue"
echo "[ab at $(( $(date +%s) - start )) s]"
for f in "$OUTDIR"/profile_*.txt; do echo "== $f"; cat "$f"; done > "$OUTDIR"/profiles.txt && rm -f "$OUTDIR"/profile_*.txt
