#!/usr/bin/env bash
# Session 2 device run: matched training of the four small models at ctx 2048 on the offline corpus, then
# perplexity vs ctx (1k-32k) and loss by token index. Usage: bash bench/notes/ppl_run_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; CK=/tmp/ck; mkdir -p "$CK" "$OUTDIR"
COMMON="size=small train.ctx=2048 train.batch=32 train.tokens=6291456 train.progress=false"
start=$(date +%s)
for spec in transformer:60 mamba:60 ttt_linear:170 ttt_mlp:230; do
  m=${spec%%:*}; tb=${spec##*:}
  python3 -m bench.train model=$m $COMMON train.time_budget_s=$tb out=$CK/$m 2>&1 | grep -v -i warn | tail -4
  echo "[$m done at $(( $(date +%s) - start )) s]"
done
python3 -m bench.ppl "checkpoints=[$CK/transformer,$CK/mamba,$CK/ttt_linear,$CK/ttt_mlp]" allow_extrapolation=true \
  impls.ttt_linear=dual impls.ttt_mlp=dual bench.n_sequences=8 time_limit_s=150 progress=false 2>&1 | grep -v -i warn | tail -8
echo "[ppl done at $(( $(date +%s) - start )) s]"
cp results/train.csv results/ppl.csv "$OUTDIR"/ 2>/dev/null
tar czf "$OUTDIR"/train_logs.tgz -C "$CK" $(cd $CK && ls -d */train_log.csv */meta.json)
tar cf - -C "$CK" ttt_linear | split -b 15M - "$OUTDIR"/ckpt_ttt_linear.tar.part-
ls -la "$OUTDIR"
