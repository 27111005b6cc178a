#!/usr/bin/env bash
# Session 8, device run 3: the Gluon kernel's knobs again, now around its default ring of 3 (run 1 measured them
# around the ring of 2): off-chain products early, output LayerNorm one mini-batch late, gl.reduce's row sums, no
# register cap, and the ring of 2 for reference; (a) and (b) at 1k, 4k, 8k. Usage: bash bench/notes/session8_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"
impls=ttt_linear/gluon,ttt_linear/gluon-nb2,ttt_linear/gluon-early,ttt_linear/gluon-defer,ttt_linear/gluon-early-defer,ttt_linear/gluon-bar2,ttt_linear/gluon-r0
timeout 170 python3 -m bench.op --shapes a,b --ts 1024,4096,8192 --impls $impls --rep-ms 100 --out "$OUTDIR" --name run3 2>&1 \
  | grep -E "^ *[ab] +[0-9]+ +[0-9]+ ttt" | awk '{print $1, $2, $3, $4, $5, $8, $9}'
