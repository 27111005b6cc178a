"""Compile every fused kernel (ttt/fused/) for sm_90 on a machine without a GPU: Triton's front end, its GPU
passes and ptxas, for bf16/fp16/fp32 and the padded widths 128/1024/2048 (tiny, 125m-350m, 760m-1.3b), with the
value-1 specialisations a decode step or a batch of one produces. The interpreter runs the kernels' arithmetic in
the CPU tests but accepts programs the compiler rejects (e.g. a variable whose shape differs between the branches
of an `if`), so this is the check before a GPU is at hand.

    python bench/notes/ttt_linear_fused_compile_check.py      # prints one line per kernel variant, exits 1 on a failure
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # @triton.jit must build JITFunctions, not interpreted ones
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ttt.fused import mlp, norm, ttt_io  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_one(fn, sig: dict[str, str], consts: dict, num_warps: int) -> bool:
    signature = {n: "constexpr" if n in consts else sig[n] for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=signature, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    try:
        triton.compile(src, target=TARGET, options={"num_warps": num_warps})
    except Exception as e:
        print(f"FAIL {fn.__name__} {consts}: {type(e).__name__}: {e}")
        return False
    print(f"ok   {fn.__name__} {consts}")
    return True


def main() -> int:
    ok = True
    for dt, (BW, BT, nw) in itertools.product(("bf16", "fp16", "fp32"), ((2048, 4, 8), (1024, 8, 4), (128, 16, 4))):
        P = f"*{dt}"
        rms = dict(x_ptr=P, r_ptr=P, w_ptr=P, s_ptr=P, h_ptr=P, M="i32", W="i32", eps="fp32")
        ok &= compile_one(norm._rmsnorm_kernel, rms, dict(HAS_RES=True, BT=BT, BW=BW), nw)
        ok &= compile_one(norm._rmsnorm_kernel, rms, dict(HAS_RES=False, BT=BT, BW=BW, M=1), nw)
        pre = dict(x_ptr=P, nw_ptr=P, cw_ptr=P, cb_ptr=P, sw_ptr=P, x1_ptr=P, h_ptr=P, st_ptr=P, T="i32", W="i32",
                   eps_n="fp32", eps_s="fp32")  # fmt: skip
        ok &= compile_one(norm._preconv_kernel, pre, dict(K=4, KP=4, HAS_STATE=True, BT=BT, BW=BW), nw)
        ok &= compile_one(norm._preconv_kernel, pre, dict(K=4, KP=4, HAS_STATE=False, BT=BT, BW=BW, T=1), nw)
        pre.pop("T")
        ok &= compile_one(norm._preconv_step_kernel, pre, dict(K=4, KP=4, BW=BW), nw)
        pro = dict(p_ptr=P, cqw_ptr=P, cqb_ptr=P, ckw_ptr=P, ckb_ptr=P, cos_ptr="*fp32", sin_ptr="*fp32", lrb_ptr=P,
                   qkv_ptr=P, eta_ptr="*fp32", st_ptr=P, B="i32", T="i32", N="i32", W="i32", H="i32", q_off="i32",
                   k_off="i32", v_off="i32", lr_off="i32", eta_scale="fp32")  # fmt: skip
        step = {k: v for k, v in pro.items() if k != "T"} | {"pos_ptr": "*i64"}
        for share in (True, False):
            one = {"B": 1} if share else {}
            c = dict(D=64, MBS=16, K=4, KP=4, SHARE_QK=share, HAS_STATE=share, BT=16, BC=min(128, BW), BH=32)
            ok &= compile_one(ttt_io._prologue_kernel, pro, c | one, 4)
            c = dict(D=64, K=4, KP=4, SHARE_QK=share, BC=min(256, BW), BH=32)
            ok &= compile_one(ttt_io._prologue_step_kernel, step, c | one, 4)
        epi = dict(z_ptr=P, p_ptr=P, lnw_ptr=P, lnb_ptr=P, a_ptr=P, T="i32", W="i32", N="i32", g_off="i32",
                   zsb="i32", zsh="i32", zst="i32", eps="fp32")  # fmt: skip
        ok &= compile_one(ttt_io._epilogue_kernel, epi, dict(D=64, HAS_GATE=True, BT=BT, BW=BW, T=1), nw)
        ok &= compile_one(ttt_io._epilogue_kernel, epi, dict(D=64, HAS_GATE=False, BT=BT, BW=BW), nw)
        ok &= compile_one(mlp._silu_mul_kernel, dict(gu_ptr=P, a_ptr=P, M="i32", I="i32"), dict(BM=4, BC=1024), 4)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
