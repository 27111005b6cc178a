"""Compile the Gluon TTT-MLP prefill kernel (ttt/ops/ttt_mlp/prefill_gluon.py) for sm_90a on a machine without a GPU
and print registers, spills and, per mini-batch loop in the SASS, instructions a warp and the main opcodes. Every
layout conversion the kernel asserts trivial is checked here too (compilation fails otherwise). Set-up as for
ttt_linear_compile.py (triton 3.6 in /tmp/t36, ptxas from the nvidia-cuda-nvcc 13.0 wheel):

    PYTHONPATH=/tmp/t36 TRITON_PTXAS_PATH=$P .venv/bin/python bench/notes/ttt_mlp_gluon_compile.py [NBUF]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402
from ttt_linear_compile import _compile, print_loops  # noqa: E402
from ttt_mlp_spills_compile import parse_sass, ptxas_report  # noqa: E402

from ttt.ops.ttt_mlp import prefill_gluon  # noqa: E402

KEYS = ("HMMA", "SHFL", "LDS", "LDSM", "STS", "LDL", "STL", "MUFU", "FFMA", "FADD", "FMUL", "F2FP", "MOV")


def main() -> int:
    nbuf = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    consts = dict(NBUF=nbuf, D=64, HID=256, BT=16, stride_et=1)
    k, opts = _compile(prefill_gluon._ttt_mlp_prefill_gluon_kernel, consts, {"num_warps": 8}, GluonASTSource)
    rep = ptxas_report(k.asm["ptx"])
    ins, labels = parse_sass(k.asm["sass"])
    print(f"triton {triton.__version__} nbuf {nbuf}: regs {rep['regs']} stack {rep['stack']} spill st/ld "
          f"{rep['spill_st']}/{rep['spill_ld']} smem {k.metadata.shared}")  # fmt: skip
    print_loops(ins, labels, KEYS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
