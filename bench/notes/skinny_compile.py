"""Compile the decode step's skinny GEMM (ttt/fused/skinny.py) and the PDL TTT-Linear step for sm_90a without a GPU;
print registers, spills, shared memory, and the counts of PDL/prefetch/MMA instructions in the SASS.

    PYTHONPATH=/tmp/t36 TRITON_PTXAS_PATH=$P .venv/bin/python bench/notes/skinny_compile.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from ttt_mlp_spills_compile import TARGET, ptxas_report  # noqa: E402

from ttt.fused import skinny  # noqa: E402
from ttt.ops.ttt_linear import decode  # noqa: E402

# name: (N, K, epilogue, row statistics: 0 none, 1 the folded RMSNorm's 1/rms in the epilogue, 2 the sums of squares
# written for it), as the decode step runs them
SHAPES = {"in_proj": (6176, 2048, 0, 0), "o_proj": (2048, 2048, 1, 2), "gate_up": (5504, 2048, 2, 1),
          "down": (2048, 5504, 1, 0)}  # fmt: skip


def compile_fn(fn, consts, opts, ptr_types, div16=()):
    """The launcher specialises every pointer and every integer argument whose value is a multiple of 16 as such
    (tt.divisibility = 16); without it the loads compile to scalar 16-bit loads, unpipelined, with far more
    registers than the GPU build (before session 13 this script reported that: 152-232 registers for the GEMMs,
    56-96 with it). `div16`: the integer arguments that are multiples of 16 at the decode step's shapes."""
    sig = {n: "constexpr" if n in consts else ptr_types.get(n, "*fp32" if n.endswith("_ptr") else "i32")
           for n in fn.arg_names}  # fmt: skip
    sig.update({n: "fp32" for n in ("eps", "eta_scale", "post_eps") if n in sig})
    aligned = [n for n in fn.arg_names if n not in consts and (sig[n].startswith("*") or n in div16)]
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
                    attrs={(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in aligned})  # fmt: skip
    return triton.compile(src, target=TARGET, options=opts)


def report(name, k):
    rep = ptxas_report(k.asm["ptx"])
    sass = k.asm["sass"]
    counts = {op: sass.count(op) for op in ("CCTL", "HMMA", "ACQBULK", "PREEXIT", "BAR.SYNC", "ATOM", "RED")}
    print(f"{name}: regs {rep['regs']} stack {rep['stack']} spill {rep['spill_st']}/{rep['spill_ld']} "
          f"smem {k.metadata.shared} {counts}")  # fmt: skip
    ptx = k.asm["ptx"]
    print(
        "   ptx: griddepcontrol.wait",
        ptx.count("griddepcontrol.wait"),
        "launch_dependents",
        ptx.count("griddepcontrol.launch_dependents"),
        "prefetch",
        ptx.count("prefetch.global.L2"),
    )


def main() -> int:
    print(f"triton {triton.__version__}")
    for name, (n, k, epi, norm) in SHAPES.items():
        cfg = skinny.default_config(n, k, epi)
        ks = triton.cdiv(triton.cdiv(k, cfg.split), cfg.bk) * cfg.bk
        split = triton.cdiv(k, ks)
        for pdl in (False, True):
            consts = dict(BM=16, BN=cfg.bn, BK=cfg.bk, KS=ks, SPLIT=split, EPI=epi, STAGES=cfg.stages,
                          PREFETCH=cfg.prefetch, LINES=triton.next_power_of_2(triton.cdiv(ks, 64)), PDL=pdl,
                          PRELOAD=pdl, RMS=norm == 1, GP=64, SUMSQ=norm == 2, INTERP=False)  # fmt: skip
            kern = compile_fn(skinny._skinny_kernel, consts, {"num_warps": cfg.warps, "launch_pdl": pdl},
                              {"x_ptr": "*bf16", "w_ptr": "*bf16", "o_ptr": "*bf16", "cnt_ptr": "*i32",
                               "eps": "fp32"}, div16=("N", "K", "sxm", "som"))  # fmt: skip
            report(f"{name} {cfg} split {split} pdl {pdl}", kern)
    from ttt.fused import ffn_step

    c1, c2 = ffn_step.configs(5504, 2048)
    ks = triton.cdiv(triton.cdiv(5504, c2.split), c2.bk) * c2.bk
    for pdl in (False, True):
        consts = dict(BM=16, BN=c1.bn, BK1=c1.bk, BK2=c2.bk, KS2=ks, SPLIT=triton.cdiv(5504, ks), STAGES=c2.stages,
                      RMS=True, GP=64, PREFETCH=False, LINES=32, NS=8, PDL=pdl, INTERP=False)  # fmt: skip
        ptrs = {n: "*bf16" for n in ("x_ptr", "wgu_ptr", "a_ptr", "wd_ptr", "o_ptr")} | {"sync_ptr": "*i32"}
        kern = compile_fn(ffn_step._ffn_step_kernel, consts, {"num_warps": c2.warps, "launch_pdl": pdl}, ptrs,
                          div16=("I", "K", "sxm", "som"))  # fmt: skip
        report(f"ffn one grid {c1} {c2} pdl {pdl}", kern)
    bf = {n: "*bf16" for n in ("q_ptr", "k_ptr", "v_ptr", "o_ptr")} | {"off_ptr": "*i64"}
    kern = compile_fn(decode._ttt_linear_step_kernel, {"D": 64, "PDL": True}, {"num_warps": 4, "launch_pdl": True}, bf)
    report("ttt_linear_step pdl", kern)
    from ttt.fused import linear_step

    bf |= {"p_ptr": "*bf16", "st_ptr": "*bf16", "cqw_ptr": "*bf16", "cqb_ptr": "*bf16", "ckw_ptr": "*bf16",
           "ckb_ptr": "*bf16", "lrb_ptr": "*bf16", "pos_ptr": "*i64"}  # fmt: skip
    bf |= {"a_ptr": "*bf16", "cnt_ptr": "*i32", "pw_ptr": "*bf16", "pb_ptr": "*bf16"}
    _, opts = decode.fused_step_launch()
    for pdl, o in ((False, opts), (True, {"num_warps": 4})):  # the default launch, and session 11's
        consts = {"D": 64, "K": 4, "KP": 4, "SHARE_QK": True, "PDL": pdl, "EPI": True, "GATE": True, "BW": 2048}
        kern = compile_fn(linear_step._linear_decode_kernel, consts, o | {"launch_pdl": pdl}, bf)
        report(f"fused linear decode step {o} pdl {pdl}", kern)
    return 0


if __name__ == "__main__":
    sys.exit(main())
