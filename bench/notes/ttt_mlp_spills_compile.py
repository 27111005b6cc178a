"""Compile the TTT-MLP prefill kernel (main launch, HEAD=False) for sm_90a on a machine without a GPU and print,
per knob variant: registers, stack / spill bytes (ptxas -v, with the flags Triton passes), and the SASS of the
main mini-batch loop (instructions, LDL/STL, the biggest classes). Shape (a) specialisation: d = 64, hidden 256,
mini-batch 16, bf16 q/k/v/eta, fp32 state, 16-aligned pointers and strides, stride_et = 1.

    .venv/bin/python bench/notes/ttt_mlp_spills_compile.py                 # every variant in VARIANTS
    .venv/bin/python bench/notes/ttt_mlp_spills_compile.py nopf nopf-xyz   # only those (op.py names minus the prefix)
    ... --sass DIR                                                         # also write each variant's SASS there

Columns: regs, stack (local bytes per thread; the GPU's `n_spills` is this / 4), spill store / load bytes (ptxas -v),
smem (bytes), loop (SASS instructions in the mini-batch loop, per warp and mini-batch), wi/mb (x warps), LDL / STL
in the loop and the local bytes they move per thread and mini-batch.
"""

from __future__ import annotations

import collections
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # @triton.jit must build JITFunctions
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the GPU runs' default, without the warning
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import CUDABackend, get_ptxas  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from bench.op import mlp_triton_variant  # noqa: E402
from ttt.ops.ttt_mlp import prefill  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
VARIANTS = ["", "nopf", "h1", "h4", "nopf-h4"]

# ttt_mlp_prefill keyword -> kernel constexpr (the ones bench/op.py variants can set)
KW2CONST = {"precision": "PREC", "fast_tanh": "FAST", "one_pass_ln": "ONE_PASS", "prefetch": "PREFETCH",
            "hidden_chunks": "HCH"}  # fmt: skip


def _defaults() -> dict:
    sig = inspect.signature(prefill.ttt_mlp_prefill).parameters
    c = {KW2CONST[k]: sig[k].default for k in KW2CONST if k in sig}
    for k, p in sig.items():  # knobs added after this script: every upper-case-mapped constexpr default
        if p.kind is p.KEYWORD_ONLY and k not in KW2CONST and k in getattr(prefill, "KNOB_CONSTS", {}):
            c[prefill.KNOB_CONSTS[k]] = p.default
    c["PREC"] = "bf16"
    c["FAST"] = True
    return c


def compile_variant(name: str):
    kw = mlp_triton_variant("ttt_mlp/triton" + (f"-{name}" if name else ""))
    num_warps = kw.pop("num_warps", 8)
    opts = {"num_warps": num_warps}
    for k in ("num_stages", "maxnreg"):
        if k in kw:
            opts[k] = kw.pop(k)
    consts = _defaults()
    for k, v in kw.items():
        const = KW2CONST.get(k) or getattr(prefill, "KNOB_CONSTS", {}).get(k)
        if const is None:
            raise SystemExit(f"{name}: knob {k} has no kernel constexpr")
        consts[const] = v
    consts |= dict(HEAD=False, D=64, HID=256, BT=16, stride_et=1)
    fn = prefill._ttt_mlp_prefill_kernel
    bf, f32 = "*bf16", "*fp32"
    ptrs = dict(q_ptr=bf, k_ptr=bf, v_ptr=bf, eta_ptr=bf, te_ptr=f32, lnw_ptr=f32, lnb_ptr=f32, off_ptr="*i64",
                o_ptr=bf)  # fmt: skip
    sig = {}
    for n in fn.arg_names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in ptrs:
            sig[n] = ptrs[n]
        elif n.endswith("_ptr"):
            sig[n] = f32
        elif n == "eps":
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names) if sig[n] not in ("constexpr", "fp32")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()},
                    attrs=attrs)  # fmt: skip
    k = triton.compile(src, target=TARGET, options=opts)
    return k, consts, opts


# the flags Triton's make_cubin passes (3.9 adds --regAllocOptLevel=2; 3.6, the GPU image's, does not)
_REG_ALLOC = ["--regAllocOptLevel=2"] if "regAllocOptLevel" in inspect.getsource(CUDABackend.make_cubin) else []


def ptxas_report(ptx: str) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "k.ptx"
        p.write_text(ptx)
        cmd = [get_ptxas(90).path, "-lineinfo", "-v", *_REG_ALLOC, "--gpu-name=sm_90a", str(p), "-o",
               str(p.with_suffix(".o"))]  # fmt: skip
        log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    r = {}
    for key, pat in (("regs", r"Used (\d+) registers"), ("stack", r"(\d+) bytes stack frame"),
                     ("spill_st", r"(\d+) bytes spill stores"), ("spill_ld", r"(\d+) bytes spill loads"),
                     ("smem", r"(\d+) bytes smem")):  # fmt: skip
        m = re.search(pat, log)
        r[key] = int(m.group(1)) if m else 0
    return r


def parse_sass(sass: str):
    """(instructions [(opcode, text)], labels {name: index of the next instruction}) of Triton's SASS listing
    (`control<TAB>instruction;` lines and `LBBn:` labels)."""
    ins, labels = [], {}
    for line in sass.splitlines():
        line = line.strip()
        if re.fullmatch(r"[A-Za-z_.$][\w.$]*:", line):
            labels[line[:-1]] = len(ins)
        elif "\t" in line and line.endswith(";"):
            text = line.split("\t", 1)[1]
            op = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0]
            ins.append((op, text))
    return ins, labels


def main_loop(ins, labels):
    """The largest backward branch's body: the mini-batch loop."""
    best = None
    for i, (op, text) in enumerate(ins):
        if op.startswith("BRA"):
            tgt = text.split()[-1].rstrip(";")
            lo = labels.get(tgt)
            if lo is not None and lo <= i and (best is None or i - lo > best[1] - best[0]):
                best = (lo, i)
    return [] if best is None else ins[best[0] : best[1] + 1]


def summarize(name: str, sass_dir: Path | None = None) -> dict:
    k, consts, opts = compile_variant(name)
    rep = ptxas_report(k.asm["ptx"]) | {"smem": k.metadata.shared}
    sass = k.asm["sass"]
    if sass_dir is not None:
        sass_dir.mkdir(parents=True, exist_ok=True)
        (sass_dir / f"{name or 'default'}.sass").write_text(sass)
    ins, labels = parse_sass(sass)
    loop = main_loop(ins, labels)
    ops = collections.Counter(op.split(".")[0] for op, _ in loop)
    width = {"8": 1, "16": 2, "64": 8, "128": 16}
    lbytes = sum(width.get(op.split(".")[-1], 4) for op, _ in loop if op.split(".")[0] in ("LDL", "STL"))
    rep |= dict(total=len(ins), loop=len(loop), ldl=ops["LDL"], stl=ops["STL"], lbytes=lbytes, ops=ops,
                warps=opts["num_warps"])  # fmt: skip
    return rep


def main() -> int:
    args = sys.argv[1:]
    sass_dir = None
    if "--sass" in args:
        i = args.index("--sass")
        sass_dir = Path(args[i + 1])
        del args[i : i + 2]
    names = args or VARIANTS
    print(
        f"triton {triton.__version__}, ptxas {get_ptxas(90).path}: {subprocess.run([get_ptxas(90).path, '--version'], capture_output=True, text=True).stdout.split()[-1]}"
    )
    hdr = (
        f"{'variant':28s} {'regs':>4s} {'stack':>5s} {'spSt':>5s} {'spLd':>5s} {'smem':>6s} {'loop':>5s} {'wi/mb':>6s} "
    )
    print(hdr + f"{'LDL':>4s} {'STL':>4s} {'B/thr':>5s}  top ops in loop")
    for n in names:
        try:
            r = summarize(n, sass_dir)
        except Exception as e:  # noqa: BLE001
            print(f"{n or 'default':28s} FAIL {type(e).__name__}: {str(e)[:300]}")
            continue
        top = " ".join(f"{o}:{c}" for o, c in r["ops"].most_common(10))
        print(f"{n or 'default':28s} {r['regs']:4d} {r['stack']:5d} {r['spill_st']:5d} {r['spill_ld']:5d} "
              f"{r['smem']:6d} {r['loop']:5d} {r['loop'] * r['warps']:6d} {r['ldl']:4d} {r['stl']:4d} {r['lbytes']:5d}  {top}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
