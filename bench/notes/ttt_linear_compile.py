"""Compile the TTT-Linear prefill kernel for sm_90a on a machine without a GPU and print, per bench.op variant:
registers, spills (ptxas -v), and every mini-batch loop in the SASS (backward branches over 100 instructions):
instructions a warp and mini-batch, bar.sync, SHFL, LDS/STS/LDSM, HMMA, LDL/STL. Shape (a) specialisation: d = 64,
mini-batch 16, bf16 q/k/v/eta/out, fp32 state, 16-aligned pointers and strides, stride_et = 1.

    PYTHONPATH=/tmp/t36 TRITON_PTXAS_PATH=$P .venv/bin/python bench/notes/ttt_linear_compile.py "" la2 gluon gluon-r0

A name 'gluon[-...]' compiles the Gluon kernel (ttt/ops/ttt_linear/prefill_gluon.py) with bench.op's knobs for
'ttt_linear/gluon[-...]' (e.g. gluon-r0: no register cap, gluon-nb2: a ring of 2, gluon-defer, gluon-bar2).
"""

from __future__ import annotations

import collections
import inspect
import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from ttt_mlp_spills_compile import TARGET, parse_sass, ptxas_report  # noqa: E402

from bench.op import triton_variant  # noqa: E402
from ttt.ops.ttt_linear import prefill  # noqa: E402

KW2CONST = {"precision": "PREC", "skew": "SKEW", "one_pass_ln": "ONE_PASS", "prefetch": "PREFETCH",
            "mma_fold": "MMA_FOLD", "lookahead": "LOOKAHEAD"}  # fmt: skip


def compile_variant(name: str):
    kw = triton_variant("ttt_linear/triton" + (f"-{name}" if name else ""))
    opts = {"num_warps": kw.pop("num_warps", 4), "maxnreg": kw.pop("maxnreg", prefill.CAP_REGS)}
    if not opts["maxnreg"]:
        del opts["maxnreg"]
    if "num_stages" in kw:
        opts["num_stages"] = kw.pop("num_stages")
    sig_defaults = inspect.signature(prefill.ttt_linear_prefill).parameters
    fused_ln_grad = kw.pop("fused_ln_grad", False)
    kw.pop("backend")
    consts = {c: sig_defaults[k].default for k, c in KW2CONST.items()}
    consts |= {KW2CONST[k]: v for k, v in kw.items()}
    if fused_ln_grad:
        consts["ONE_PASS"] = 2
    consts |= dict(PREC=kw.get("precision", "bf16"), FLA_RESIDUAL=False, D=64, BT=16, stride_et=1)
    return _compile(prefill._ttt_linear_prefill_kernel, consts, opts, ASTSource)


def compile_gluon(name: str):
    """The Gluon kernel of bench.op's 'ttt_linear/<name>' (its knobs parsed there, defaults from launch's)."""
    from triton.experimental.gluon._runtime import GluonASTSource

    from ttt.ops.ttt_linear import prefill_gluon

    kw = triton_variant(f"ttt_linear/{name}")
    launch = {n: p.default for n, p in inspect.signature(prefill_gluon.launch).parameters.items()} | kw
    cap = prefill_gluon.MAXNREG if launch["maxnreg"] is None else launch["maxnreg"]
    opts = {"num_warps": 4} | ({"maxnreg": cap} if cap else {})
    consts = dict(
        FLA_RESIDUAL=False, BAR1=launch["bar1"], EARLY=launch["early"], SKEW=launch["defer_out"] and launch["bar1"],
        NBUF=launch["nbuf"], D=64, BT=16, stride_et=1,
    )  # fmt: skip
    return _compile(prefill_gluon._ttt_linear_prefill_gluon_kernel, consts, opts, GluonASTSource)


def _compile(fn, consts, opts, source):
    bf = {"q_ptr", "k_ptr", "v_ptr", "eta_ptr", "o_ptr"}
    sig = {}
    for n in fn.arg_names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in bf:
            sig[n] = "*bf16"
        elif n == "off_ptr":
            sig[n] = "*i64"
        elif n.endswith("_ptr"):
            sig[n] = "*fp32"
        elif n == "eps":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    attrs = {
        (i,): [["tt.divisibility", 16]]
        for i, n in enumerate(fn.arg_names)
        if sig[n] not in ("constexpr", "fp32") and n not in ("T", "BS", "H")
    }
    src = source(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
                    attrs=attrs)  # fmt: skip
    return triton.compile(src, target=TARGET, options=opts), opts


def loops(ins, labels):
    out = []
    for i, (op, text) in enumerate(ins):
        if op.startswith("BRA"):
            lo = labels.get(text.split()[-1].rstrip(";"))
            if lo is not None and lo <= i and i - lo > 100:
                out.append(ins[lo : i + 1])
    return out


def print_loops(ins, labels, keys) -> None:
    """One line per loop of the SASS: its length, bar.syncs and the count of each opcode in `keys`."""
    for body in loops(ins, labels):
        ops = collections.Counter(op.split(".")[0] for op, _ in body)
        bar = sum(1 for op, _ in body if op.startswith("BAR"))
        print(f"  loop {len(body)} instr, BAR {bar} " + " ".join(f"{o}:{ops[o]}" for o in keys))


def main() -> int:
    names = sys.argv[1:] or [""]
    print(f"triton {triton.__version__}")
    for name in names:
        k, opts = compile_gluon(name) if name.startswith("gluon") else compile_variant(name)
        rep = ptxas_report(k.asm["ptx"])
        ins, labels = parse_sass(k.asm["sass"])
        print(f"{name or 'default'}: {opts} regs {rep['regs']} stack {rep['stack']} spill st/ld "
              f"{rep['spill_st']}/{rep['spill_ld']} smem {k.metadata.shared}")  # fmt: skip
        print_loops(ins, labels, ("HMMA", "SHFL", "LDS", "LDSM", "STS", "LDG", "STG", "LDL", "STL", "MUFU", "FFMA",
                                  "FADD", "FMUL"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
