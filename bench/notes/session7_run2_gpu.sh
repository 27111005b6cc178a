#!/usr/bin/env bash
# Session 7, device run 2: the Gluon main-loop screen (`session7_gluon_screen.py`: explicit layouts, the state's
# accumulator fragments are the B operand of Z = K W as they stand, Q K^T replicated over the warps so that it is
# the A operand of its product with eg' as it stands, eg' through shared memory once, q/k/v by cp.async one
# mini-batch ahead) with and without the fused LayerNorm reduction (`-lng`, also in the production kernel), against
# the production kernel at (a) and (b), output and final W checked against it. Offline sm_90a, instructions a warp
# and mini-batch / bar.sync / registers: gluon 640 / 10 / 187, gluon-lng 770 / 7 / 216, production 660 / 15 / 243,
# production-lng 798 / 12 / 255. Usage: bash bench/notes/session7_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
timeout 400 python3 bench/notes/session7_gluon_screen.py "$OUTDIR" 2>&1 | tail -40
echo "[screen at $(( $(date +%s) - start )) s]"
