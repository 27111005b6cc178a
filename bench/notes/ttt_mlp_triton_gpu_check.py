"""TTT-MLP Triton kernels on a CUDA GPU: correctness, timing against TTT-Linear's kernel and the dual form, and a
sweep of the prefill's tuning knobs. Standalone: `python bench/notes/ttt_mlp_triton_gpu_check.py --out DIR`.

Prints max/L2 relative errors (prefill and step vs the PyTorch references, fp32 and bf16), then a timing table
(triton.testing.do_bench medians) and each compiled prefill kernel's registers and spills; writes DIR/mlp_check.csv
and DIR/mlp_times.csv. Every check and variant is caught: a failure prints one line and the script goes on.
Budget: under 4 minutes on an H100 (stops sweeping at --budget-s)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from bench.op import write_csv  # noqa: E402  (the repo root is on sys.path only from here)

H, D, MB = 32, 64, 16
T0 = time.time()


def _rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max abs err / max abs ref, L2 err / L2 ref); inf when a is not finite."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return math.inf, math.inf
    return ((a - b).abs().max() / b.abs().max()).item(), ((a - b).norm() / b.norm()).item()


def make_inputs(B: int, T: int, dtype: torch.dtype, h: int = H, d: int = D, seed: int = 0) -> dict[str, Any]:
    """Realistic scales: eta = base_lr/d * sigmoid(.), token_eta = 1/i, W ~ N(0, 0.02) (op.py's conventions);
    b_lr 0.1 * 16 so the inner updates visibly move the outputs."""
    from ttt.ops.ttt_mlp import init_state

    g = torch.Generator(device="cuda").manual_seed(seed)

    def rn(*s: int, std: float = 1.0) -> torch.Tensor:
        return std * torch.randn(*s, device="cuda", generator=g)

    q, k, v = (rn(B, h, T, d).to(dtype) for _ in range(3))
    eta = (torch.sigmoid(rn(B, h, T)) / d).to(dtype)
    te = 1.0 / torch.arange(1, MB + 1, device="cuda", dtype=torch.float32)
    ln_w, ln_b = 1.0 + rn(h, d, std=0.1), rn(h, d, std=0.1)
    st = init_state(rn(h, d, 4 * d, std=0.02), rn(h, 4 * d, std=0.02), rn(h, 4 * d, d, std=0.02), rn(h, d, std=0.02), B)
    return {"q": q, "k": k, "v": v, "eta": eta, "te": te, "ln_w": ln_w, "ln_b": ln_b, "state": st}


def _args(x: dict[str, Any], lo: int = 0, hi: int | None = None) -> tuple:
    s = slice(lo, hi)
    return (x["q"][:, :, s], x["k"][:, :, s], x["v"][:, :, s], x["eta"][:, :, s], x["te"], x["ln_w"], x["ln_b"])


def _f32(a: tuple) -> tuple:
    return tuple(t.float() if t.is_floating_point() else t for t in a)


def checks(rows: list[dict]) -> None:
    from ttt.ops.ttt_mlp import ttt_mlp_dual, ttt_mlp_step
    from ttt.ops.ttt_mlp.decode import ttt_mlp_step_triton
    from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton

    def row(name: str, fn: Callable[[], tuple[torch.Tensor, torch.Tensor, Any, Any]], tol: float) -> None:
        try:
            out, ref, st, st_ref = fn()
            mx, l2 = _rel(out, ref)
            w = max(_rel(getattr(st, n), getattr(st_ref, n))[1] for n in ("W1", "W2", "b1", "b2"))
            ok = l2 < tol and w < tol
            rows.append({"check": name, "max_rel": mx, "l2_rel": l2, "state_l2_rel": w, "tol": tol, "ok": ok})
            print(f"check {name:<44} max_rel {mx:9.2e}  l2_rel {l2:9.2e}  state {w:9.2e}  {'ok' if ok else 'FAIL'}")
        except Exception as e:  # a failing check is a line, not the end of the run
            rows.append({"check": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:300]})
            print(f"check {name:<44} ERROR {type(e).__name__}: {str(e)[:200]}")
            traceback.print_exc(limit=3)

    def prefill_case(B: int, T: int, pre: int, dtype: torch.dtype, **kw: Any) -> Callable:
        def run():
            x = make_inputs(B, pre + T, dtype, h=4, seed=T + pre)
            st = x["state"]
            if pre:  # start mid-mini-batch: the state after `pre` tokens of the fp32 reference
                _, st = ttt_mlp_dual(*_f32(_args(x, 0, pre)), st, mini_batch_size=MB)
            out, new = ttt_mlp_triton(*_args(x, pre), st, mini_batch_size=MB, **kw)
            ref, ref_st = ttt_mlp_dual(*_f32(_args(x, pre)), st, mini_batch_size=MB)
            assert int(new.offset) == int(ref_st.offset), (int(new.offset), int(ref_st.offset))
            return out, ref, new, ref_st

        return run

    row("prefill fp32 ieee T=100 (ragged)", prefill_case(2, 100, 0, torch.float32, precision="ieee"), 1e-4)
    row("prefill fp32 ieee T=40 from offset 5", prefill_case(2, 40, 5, torch.float32, precision="ieee"), 1e-4)
    row("prefill fp32 ieee T=7 from offset 5", prefill_case(2, 7, 5, torch.float32, precision="ieee"), 1e-4)
    row("prefill fp32 tf32 T=1000", prefill_case(2, 1000, 0, torch.float32, precision="tf32"), 1e-2)
    row("prefill bf16 (default) T=1000", prefill_case(2, 1000, 0, torch.bfloat16), 2e-2)
    row("prefill bf16 (default) T=4096", prefill_case(1, 4096, 0, torch.bfloat16), 2e-2)
    row("prefill bf16 (default) T=37 from offset 9", prefill_case(2, 37, 9, torch.bfloat16), 2e-2)

    def step_case(dtype: torch.dtype, graph: bool) -> Callable:
        def run():
            x = make_inputs(4, 60, dtype, h=8, seed=7)
            _, st = ttt_mlp_dual(*_f32(_args(x, 0, 21)), x["state"], mini_batch_size=MB)  # offset 5
            st_t, st_r = st.clone(), st.clone()
            xs = [t[:, :, 21:22].clone() for t in (x["q"], x["k"], x["v"], x["eta"])]
            consts = (x["te"], x["ln_w"], x["ln_b"])
            if graph:
                for _ in range(2):  # compile outside the capture, on a throwaway state
                    ttt_mlp_step_triton(*xs, *consts, st.clone(), mini_batch_size=MB)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out_g, _ = ttt_mlp_step_triton(*xs, *consts, st_t, mini_batch_size=MB)
            outs, refs = [], []
            for t in range(21, 60):  # crosses two mini-batch boundaries
                for buf, src in zip(xs, (x["q"], x["k"], x["v"], x["eta"])):
                    buf.copy_(src[:, :, t : t + 1])
                if graph:
                    g.replay()
                    outs.append(out_g.clone())
                else:
                    outs.append(ttt_mlp_step_triton(*xs, *consts, st_t, mini_batch_size=MB)[0])
                refs.append(ttt_mlp_step(*_f32(tuple(xs)), *consts, st_r, mini_batch_size=MB)[0])
            assert int(st_t.offset) == int(st_r.offset)
            return torch.cat(outs, 2), torch.cat(refs, 2), st_t, st_r

        return run

    row("step fp32 x39 from offset 5", step_case(torch.float32, False), 1e-4)
    row("step bf16 x39, CUDA graph replay", step_case(torch.bfloat16, True), 2e-2)


def _kernel_info(kern: Any) -> dict[str, str]:
    """'regs/spills' of each compiled specialization of a Triton kernel, keyed by its constexprs."""
    out = {}
    try:
        for cache in getattr(kern, "device_caches", {}).values():
            for key, k in cache[0].items():
                k._init_handles()
                out[str(key)[-160:]] = f"regs={k.n_regs} spills={k.n_spills} smem={k.metadata.shared}"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"[:200]
    return out


# In order of interest (the sweep stops at --budget-s; each variant is two compilations, ~10-20 s each).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "hch1": {"hidden_chunks": 1},
    "noprefetch": {"prefetch": False},
    "ln2": {"one_pass_ln": False},
    "hch4": {"hidden_chunks": 4},
    "w16": {"num_warps": 16},
    "exact_tanh": {"fast_tanh": False},
    "tf32": {"precision": "tf32"},
}


def timings(rows: list[dict], variants: list[str], budget_s: float, rep: int) -> None:
    import triton.testing

    from ttt.ops.ttt_linear import init_state as lin_init
    from ttt.ops.ttt_linear.prefill import ttt_linear_triton
    from ttt.ops.ttt_mlp import ttt_mlp_dual
    from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton

    shapes = [("a", 32, 2048), ("b", 16, 2048), ("a", 8, 8192), ("a", 2, 32768)]
    for set_, B, T in shapes:
        x = make_inputs(B, T, torch.bfloat16, seed=B + T)
        st = x["state"]
        g = torch.Generator(device="cuda").manual_seed(1)
        lst = lin_init(0.02 * torch.randn(H, D, D, device="cuda", generator=g), torch.zeros(H, D, device="cuda"), B)
        cands: list[tuple[str, Callable[[], Any]]] = [
            ("ttt_linear/triton", lambda x=x, lst=lst: ttt_linear_triton(*_args(x), lst, mini_batch_size=MB)[0])
        ]
        for name in variants:
            kw = VARIANTS[name]
            cands.append(
                (
                    f"ttt_mlp/triton-{name}",
                    lambda kw=kw, x=x, st=st: ttt_mlp_triton(*_args(x), st, mini_batch_size=MB, **kw)[0],
                )
            )
        if T <= 2048:
            cands.append(("ttt_mlp/dual", lambda x=x, st=st: ttt_mlp_dual(*_args(x), st, mini_batch_size=MB)[0]))
        base = math.nan
        for impl, fn in cands:
            if time.time() - T0 > budget_s and impl != "ttt_linear/triton":
                print(f"time {set_} B={B} T={T} {impl}: skipped (budget)")
                continue
            r = {"shape_set": set_, "batch": B, "ctx": T, "impl": impl}
            try:
                t_c = time.time()
                fn()
                torch.cuda.synchronize()
                r["first_call_s"] = time.time() - t_c  # compile included
                reps = rep if impl != "ttt_mlp/dual" else 1
                med, lo, hi = triton.testing.do_bench(fn, warmup=max(5, reps // 4), rep=reps, quantiles=[0.5, 0.1, 0.9])
                r.update(ms=med, p10=lo, p90=hi, status="ok")
                if impl == "ttt_linear/triton":
                    base = med
                r["ratio_vs_linear"] = med / base
            except Exception as e:
                r.update(ms=math.nan, status=f"error {type(e).__name__}: {e}"[:300])
                traceback.print_exc(limit=2)
            rows.append(r)
            print(f"time {set_} B={B:>2} T={T:>5} {impl:<30} {r.get('ms', math.nan):9.3f} ms  "
                  f"x{r.get('ratio_vs_linear', math.nan):5.2f} vs linear  {r.get('status')}", flush=True)  # fmt: skip
        cands.clear()
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"prefill variants, of {list(VARIANTS)}")
    p.add_argument("--budget-s", type=float, default=200.0, help="stop timing new variants after this many seconds")
    p.add_argument("--rep-ms", type=int, default=100)
    p.add_argument("--skip-checks", action="store_true")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU")
        return 1
    os.makedirs(a.out, exist_ok=True)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}", end=" ")
    import triton

    print(f"triton {triton.__version__}")
    crow: list[dict] = []
    if not a.skip_checks:
        checks(crow)
        write_csv(crow, os.path.join(a.out, "mlp_check.csv"))
    trow: list[dict] = []
    try:
        timings(trow, [v for v in a.variants.split(",") if v], a.budget_s, a.rep_ms)
    finally:
        write_csv(trow, os.path.join(a.out, "mlp_times.csv"))
    from ttt.ops.ttt_mlp import decode, prefill

    for kern in (prefill._ttt_mlp_prefill_kernel, decode._ttt_mlp_step_kernel):
        for key, info in _kernel_info(kern).items():
            print(f"kernel {kern.fn.__name__}: {info}  [{key}]")
    print(f"\n{'set':>3} {'B':>3} {'T':>6} {'impl':<30} {'ms':>9} {'p10':>8} {'p90':>8} {'x linear':>8}")
    for r in trow:
        print(f"{r['shape_set']:>3} {r['batch']:>3} {r['ctx']:>6} {r['impl']:<30} {r.get('ms', math.nan):9.3f} "
              f"{r.get('p10', math.nan):8.3f} {r.get('p90', math.nan):8.3f} {r.get('ratio_vs_linear', math.nan):8.2f}")  # fmt: skip
    bad = [r["check"] for r in crow if not r.get("ok")]
    print(f"checks: {len(crow) - len(bad)}/{len(crow)} ok" + (f"; FAILED: {bad}" if bad else ""))
    print(f"total {time.time() - T0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
