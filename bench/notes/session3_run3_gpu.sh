#!/usr/bin/env bash
# Session 3, device run 3: TTT-MLP register-pressure variants (bench/notes/ttt_mlp_spills_offline.md) screened at op
# shape (a) T=2k next to TTT-Linear; the fastest correct one over every op shape with TTT-Linear in the same run;
# then the graphed-training GPU tests. Usage: bash bench/notes/session3_run3_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
V=ttt_linear/triton,ttt_mlp/triton,ttt_mlp/triton-nopf-lq1-h1,ttt_mlp/triton-nopf-lq1,ttt_mlp/triton-lq1
timeout 60 python3 -m bench.op --shapes a --ts 2048 --rep-ms 40 --out "$OUTDIR" --name screen --impls $V 2>&1 \
  | grep -v -i warn | grep -E "^ttt_|ratio|regs" | head -24; el screen
BEST=$(python3 -c "
import csv
r = [x for x in csv.DictReader(open('$OUTDIR/screen.csv')) if x['impl'].startswith('ttt_mlp/') and x['status'] == 'ok'
     and float(x['check_rel_err']) < 1e-2]
print(min(r, key=lambda x: float(x['value']))['impl'] if r else 'ttt_mlp/triton')")
echo "best: $BEST"
timeout 100 python3 -m bench.run +sweep=op "bench.impls=[ttt_linear/triton,$BEST]" bench.decode=false progress=false \
  results="$OUTDIR"/op.csv 2>&1 | grep -v -i warn | tail -3; el sweep
timeout 60 python3 -m pytest -m gpu tests/bench/test_train_graph.py -q -p no:cacheprovider 2>&1 | tail -4 \
  | tee "$OUTDIR"/pytest_graph.txt; el pytest
