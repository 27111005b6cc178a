#!/usr/bin/env bash
# Session 3, device run 1: GPU tests (incl. graphed training == eager), the graphed-training probe at ctx 32k
# (TTT-Linear, TTT-MLP: capture time, s/step, peak memory), TTT-MLP prefill knob variants at T=2k with registers and
# spills, and an Nsight Compute profile of its main loop. Usage: bash bench/notes/session3_run1_gpu.sh OUTDIR
set -uo pipefail
OUTDIR=$1; mkdir -p "$OUTDIR"; start=$(date +%s)
el() { echo "[$1 at $(( $(date +%s) - start )) s]"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
mkdir -p /tmp/corp && tar xJf .corpus/stdlib311.tar.xz -C /tmp
timeout 240 python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | grep -v -i warn | tail -25 | tee "$OUTDIR"/pytest_gpu.txt; el pytest
for m in ttt_linear ttt_mlp; do
  timeout 170 python3 -m bench.train model=$m size=small train.ctx=32768 train.batch=4 train.tokens=16777216 \
    train.stop_after_steps=4 train.val_windows=0 data.root=/tmp/corp out=/tmp/probe/$m results=/tmp/probe/train.csv \
    train.progress=false 2>&1 | grep -v -i warn | tail -4
  cat /tmp/probe/$m/train_log.csv; el "probe $m"
done
cp /tmp/probe/train.csv "$OUTDIR"/probe_train.csv 2>/dev/null
python3 - <<'PY'
import pandas as pd
r = pd.read_csv("/tmp/probe/train.csv")
print(r[["model", "impl", "metric", "value", "peak_mem_bytes"]].to_string())
PY
timeout 100 python3 -m bench.op --shapes a --ts 2048 --rep-ms 40 --out "$OUTDIR" --name mlp_variants \
  --impls ttt_linear/triton,ttt_mlp/triton,ttt_mlp/triton-h1,ttt_mlp/triton-h4,ttt_mlp/triton-nopf,ttt_mlp/triton-ln2,ttt_mlp/triton-tf32,ttt_mlp/triton-w4 \
  2>&1 | grep -v -i warn | tail -22; el variants
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout 120 "$NCU" --clock-control none -k regex:_ttt_mlp_prefill --launch-skip 5 --launch-count 1 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section InstructionStats \
    python3 bench/notes/ttt_mlp_ncu.py > "$OUTDIR"/ncu_ttt_mlp.txt 2>&1
  grep -E "Duration|Registers|Spill|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Issued Ipc|Stall|No Eligible|Local|Compute \(SM\) Throughput|Memory Throughput|Executed Ipc" "$OUTDIR"/ncu_ttt_mlp.txt | head -40
else
  echo "no ncu"
fi
el ncu
