#!/usr/bin/env bash
# Session 13, device run 8: the skinny GEMM's fixed cost and streaming rate (bench/notes/session13_gemm_fit.py).
# Usage: bash bench/notes/session13_run8_gpu.sh OUTDIR
set -uo pipefail
timeout 150 python3 bench/notes/session13_gemm_fit.py "$1"
