#!/usr/bin/env bash
# Session 3, device run 2: matched training of the four small models at ctx 32k (the same windows, TOKENS tokens
# each, BATCH windows a step; TTT with its step captured in a CUDA graph) on the CPython 3.11 stdlib corpus carried
# as .corpus/stdlib311.tar.xz, then perplexity at 1k-32k and loss by token index on 16 validation sequences.
# Checkpoints stay in checkpoints/s3 (ignored, so kept by a warm device machine between calls): a rerun resumes.
# Usage: TOKENS=... BATCH=... MODELS="..." bash bench/notes/session3_run2_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
CK=checkpoints/s3; mkdir -p $CK /tmp/corp
[ -d /tmp/corp/corp ] || tar xJf .corpus/stdlib311.tar.xz -C /tmp/corp
ROOT=/tmp/corp/corp
TOKENS=${TOKENS:-8388608}; BATCH=${BATCH:-4}; MODELS=${MODELS:-"transformer:60 mamba:70 ttt_linear:150 ttt_mlp:240"}
for spec in $MODELS; do
  m=${spec%%:*}; tb=${spec##*:}
  python3 -m bench.train model=$m size=small train.ctx=32768 train.batch=$BATCH train.tokens=$TOKENS \
    train.val_windows=2 data.root=$ROOT out=$CK/$m results=$CK/train.csv train.time_budget_s=$tb \
    train.progress=false 2>&1 | grep -v -i warn | tail -3
  tail -2 $CK/$m/train_log.csv; el "$m"
done
if [ "${PPL:-1}" = 1 ]; then
  ck=$(for spec in $MODELS; do printf "%s," "$CK/${spec%%:*}"; done)
  python3 -m bench.ppl "checkpoints=[${ck%,}]" corpus_root=$ROOT bench.n_sequences=16 results=$CK/ppl.csv \
    time_limit_s=${PPL_LIMIT:-150} progress=false 2>&1 | grep -v -i warn | tail -12
  el ppl
fi
cp $CK/train.csv $CK/ppl.csv "$OUTDIR"/ 2>/dev/null
tar czf "$OUTDIR"/train_logs_s3.tgz -C $CK $(cd $CK && ls -d */train_log.csv */meta.json 2>/dev/null)
ls -la "$OUTDIR"
