"""Op-level timing of TTT-Linear kernels and their peers, and of TTT-MLP's (hidden 4d): 32 heads x 64 dims, bf16,
one forward of the core op.

`measure(cfg)` yields partial result rows (the lead's runner adds provenance and writes them); every failure
(absent package, OOM, kernel error) becomes a row with `status`/`error`, never an exception. Shapes:
  (a) B * T = 65,536 tokens, T = 1k .. 32k      (b) B = 16, T = 1k .. 32k
Run standalone on a GPU: `python -m bench.op [--shapes a,b] [--impls ...] [--out DIR]` prints a table and
writes op_rows.csv.

Conventions of the peer (fla.ops.ttt, read from its source): layout (B, T, H, d); one learning rate per *row*
(token t uses eta_t * sum_{j<=t} grad_j) where ours is token_eta[pos_t] * sum_j eta_j grad_j; the output residual
adds f_res(q) (o = Zq + LN(Zq)) where ours adds q; q is scaled by `scale` (we pass 1.0). The two agree when our eta
is a constant c, fla's eta_t = c * token_eta[pos_t], and our kernel is run with `fla_residual=True`: that is how
its `check_rel_err` is computed (against our kernel in fp32 "ieee" mode), and said so in the row's `check_ref`.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ttt.ops.common import KERNEL_LAUNCHES

HEADS, DIM, MB = 32, 64, 16
T_LIST = (1024, 2048, 4096, 8192, 16384, 32768)
TOKENS_A = 65_536
BATCH_B = 16
IMPLS = (
    "ttt_linear/gluon",
    "ttt_linear/triton",
    "ttt_linear/triton-bf16",
    "ttt_linear/dual",
    "ttt_mlp/gluon",
    "ttt_mlp/triton",
    "ttt_mlp/dual",
    "fla/chunk_ttt_linear",
    "fla/fused_chunk_ttt_linear",
    "sdpa/flash",
    "sdpa/cudnn",
)
CHECK_T = 1 << 30  # the reference check runs on batch 0, CHECK_H heads, all T tokens (so state drift shows)
CHECK_H = 4
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def shapes(which: str, ts: Iterable[int] = T_LIST) -> list[tuple[str, int, int]]:
    out = []
    for s in which.split(","):
        for T in ts:
            out.append((s, TOKENS_A // T if s == "a" else BATCH_B, T))
    return out


def copy_bandwidth(n_bytes: int = 1 << 30) -> float:
    """Device copy bandwidth in bytes/s (bytes read + bytes written over the median copy time)."""
    import triton.testing

    x = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return 2 * n_bytes / (ms * 1e-3)


def _time(fn: Callable[[], Any], rep_ms: int) -> tuple[float, float, float, int]:
    """(median, p10, p90) in ms via CUDA events (triton.testing.do_bench), and about how many repeats it took."""
    import triton.testing

    med, lo, hi = triton.testing.do_bench(fn, warmup=max(10, rep_ms // 4), rep=rep_ms, quantiles=[0.5, 0.1, 0.9])
    return med, lo, hi, max(1, int(rep_ms / med))  # do_bench repeats rep / (its own estimate) times


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return math.inf
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class Inputs:
    """Random inputs at realistic scales: eta ~ base_lr/d * sigmoid(.), token_eta = 1/i, W0 ~ N(0, 0.02)."""

    def __init__(self, B: int, T: int, dtype: torch.dtype, seed: int = 0):
        g = torch.Generator(device="cuda").manual_seed(seed)
        H, d = HEADS, DIM
        self.B, self.T = B, T
        self.q, self.k, self.v = (torch.randn(B, H, T, d, device="cuda", dtype=dtype, generator=g) for _ in range(3))
        self.eta = (torch.sigmoid(torch.randn(B, H, T, device="cuda", generator=g)) / d).to(dtype)
        self.token_eta = 1.0 / torch.arange(1, MB + 1, device="cuda", dtype=torch.float32)
        self.ln_w = 1.0 + 0.1 * torch.randn(H, d, device="cuda", generator=g)
        self.ln_b = 0.1 * torch.randn(H, d, device="cuda", generator=g)
        self.W0 = 0.02 * torch.randn(H, d, d, device="cuda", generator=g)
        self.b0 = torch.zeros(H, d, device="cuda")

    def state(self, B: int | None = None):
        from ttt.ops.ttt_linear import init_state

        return init_state(self.W0, self.b0, B or self.B)

    def mlp_state(self, B: int | None = None):
        """TTT-MLP's state (W1 d x 4d, W2 4d x d ~ N(0, 0.02)), drawn from a generator of its own so that the
        TTT-Linear inputs stay what they were."""
        from ttt.ops.ttt_mlp import init_state

        if not hasattr(self, "W1"):
            g = torch.Generator(device="cuda").manual_seed(self.T + 1)
            H, d = HEADS, DIM
            self.W1, self.W2 = (
                0.02 * torch.randn(*s, device="cuda", generator=g) for s in ((H, d, 4 * d), (H, 4 * d, d))
            )
            self.b1, self.b2 = torch.zeros(H, 4 * d, device="cuda"), torch.zeros(H, d, device="cuda")
        return init_state(self.W1, self.b1, self.W2, self.b2, B or self.B)


def _ttt_ref_slice(x: Inputs, fla_convention: bool = False) -> tuple[torch.Tensor, ...]:
    """The check slice (batch 0, first CHECK_H heads, first CHECK_T tokens) in fp32."""
    Tc = min(x.T, CHECK_T)
    return tuple(t[:1, :CHECK_H, :Tc].float() for t in (x.q, x.k, x.v)) + (x.eta[:1, :CHECK_H, :Tc].float(),)


def _check_ttt(x: Inputs, out: torch.Tensor) -> float:
    """Our op's output on the check slice vs the fp32 dual-form reference on the same inputs."""
    from ttt.ops.ttt_linear import ttt_linear_dual

    q, k, v, eta = _ttt_ref_slice(x)
    ln_w, ln_b = x.ln_w[:CHECK_H], x.ln_b[:CHECK_H]
    from ttt.ops.ttt_linear import init_state

    st = init_state(x.W0[:CHECK_H], x.b0[:CHECK_H], 1)
    ref, _ = ttt_linear_dual(q, k, v, eta, x.token_eta, ln_w, ln_b, st, mini_batch_size=MB)
    return _rel(out[:1, :CHECK_H, : q.shape[2]], ref)


def _parse_variant(impl: str, knobs: dict[str, str], flags: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """The parts of 'op/impl-part-part...' after the impl name -> kernel kwargs: 'xN' for a numeric knob x, a flag
    name for its (kwarg, value), anything else the matmul operand precision (which the kernel entry checks)."""
    kw: dict[str, Any] = {}
    for part in impl.split("/", 1)[1].split("-")[1:]:
        if part[:1] in knobs and part[1:].isdigit():
            kw[knobs[part[0]]] = int(part[1:])
        elif part in flags:
            key, value = flags[part]
            kw[key] = value
        else:
            kw["precision"] = part
    return kw


_LAUNCH_KNOBS = {"w": "num_warps", "s": "num_stages", "r": "maxnreg"}
_COMMON_FLAGS = {
    "ln1": ("one_pass_ln", True), "ln2": ("one_pass_ln", False),  # one- or two-pass LayerNorm statistics
    "pf": ("prefetch", True), "nopf": ("prefetch", False),  # register prefetch of the next mini-batch's tiles
}  # fmt: skip


def triton_variant(impl: str) -> dict[str, Any]:
    """'ttt_linear/triton[-bf16|-tf32|-ieee][-wN][-sN][-rN][-skew|-noskew][-ln1|-ln2][-pf|-nopf][-mf|-nomf]
    [-la1|-la2|-nola][-lng]' -> kwargs of ttt_linear_triton (warps, pipeline stages, register cap, skewed loop, LN
    passes, register prefetch, update in the MMA, update one mini-batch behind the chain, LN statistics and gradient
    sums in one reduction; default: bf16, 4 warps, register cap picked from the grid, no skew, ln1, no prefetch,
    mma_fold, no lookahead), with backend="triton".
    'ttt_linear/gluon[-rN][-bar1|-bar2][-nb2|-nb3][-early|-late][-defer]': the Gluon kernel (backend="gluon":
    register cap, one-barrier row sums or gl.reduce's, q/k/v ring depth, off-chain products ahead of the chain's first
    barrier or after it, output LayerNorm one mini-batch late; default bar1, nb3, late, no defer)."""
    flags = {
        "skew": ("skew", True), "noskew": ("skew", False), "mf": ("mma_fold", True), "nomf": ("mma_fold", False),
        "lng": ("fused_ln_grad", True), "la1": ("lookahead", 1), "la2": ("lookahead", 2), "nola": ("lookahead", 0),
        "bar1": ("bar1", True), "bar2": ("bar1", False), "nb2": ("nbuf", 2), "nb3": ("nbuf", 3),  # Gluon only
        "early": ("early", True), "late": ("early", False), "defer": ("defer_out", True),
    }  # fmt: skip
    kw = _parse_variant(impl, _LAUNCH_KNOBS, {**_COMMON_FLAGS, **flags})
    return kw | {"backend": "gluon" if impl.split("/", 1)[1].startswith("gluon") else "triton"}


def _ttt_impl(x: Inputs, impl: str) -> tuple[Callable[[], Any], Callable[[], float]]:
    from ttt.ops.ttt_linear import ttt_linear_dual
    from ttt.ops.ttt_linear.prefill import ttt_linear_triton

    st = x.state()
    if impl == "ttt_linear/dual":

        def fn():
            return ttt_linear_dual(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB)[0]
    else:
        kw = triton_variant(impl)

        def fn():
            return ttt_linear_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB, **kw)[0]

    return fn, lambda: _check_ttt(x, fn())


def mlp_triton_variant(impl: str) -> dict[str, Any]:
    """'ttt_mlp/triton[-bf16|-tf32|-ieee][-wN][-sN][-rN][-hN][-pf|-nopf][-eq1|-lq1][-ln1|-ln2][-exact]' -> kwargs of
    ttt_mlp_triton (warps, pipeline stages, register cap, hidden chunks of the hidden contractions, register prefetch
    of the next mini-batch or not, Zq1 from the old or the updated W1, LN passes, exact tanh instead of tanh.approx;
    the defaults are ttt_mlp_prefill's: -h1-nopf-lq1), plus the register-pressure switches -dz16 -rl -lzo
    (bench/notes/ttt_mlp_spills_*), with backend="triton". '-pf-h2-eq1' is the default before session 4.
    'ttt_mlp/gluon[-nb2|-nb3]': the Gluon kernel (backend="gluon", q/k/v ring depth)."""
    flags = {
        **_COMMON_FLAGS, "eq1": ("late_zq1", False), "lq1": ("late_zq1", True), "exact": ("fast_tanh", False),
        "dz16": ("dz_bf16", True), "rl": ("reload_consts", True), "lzo": ("lazy_offsets", True),
        "nb2": ("nbuf", 2), "nb3": ("nbuf", 3),  # Gluon only
    }  # fmt: skip
    kw = _parse_variant(impl, {**_LAUNCH_KNOBS, "h": "hidden_chunks"}, flags)
    return kw | {"backend": "gluon" if impl.split("/", 1)[1].startswith("gluon") else "triton"}


def _check_mlp(x: Inputs, out: torch.Tensor) -> float:
    """The MLP op's output on the check slice vs the fp32 dual form on the same inputs and initial state."""
    from ttt.ops.ttt_mlp import init_state, ttt_mlp_dual

    q, k, v, eta = _ttt_ref_slice(x)
    x.mlp_state(1)  # makes the initial weights
    st = init_state(x.W1[:CHECK_H], x.b1[:CHECK_H], x.W2[:CHECK_H], x.b2[:CHECK_H], 1)
    ref, _ = ttt_mlp_dual(q, k, v, eta, x.token_eta, x.ln_w[:CHECK_H], x.ln_b[:CHECK_H], st, mini_batch_size=MB)
    return _rel(out[:1, :CHECK_H, : q.shape[2]], ref)


def _mlp_impl(x: Inputs, impl: str) -> tuple[Callable[[], Any], Callable[[], float]]:
    from ttt.ops.ttt_mlp import ttt_mlp_dual
    from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton

    st = x.mlp_state()
    if impl == "ttt_mlp/dual":

        def fn():
            return ttt_mlp_dual(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB)[0]
    else:
        kw = mlp_triton_variant(impl)

        def fn():
            return ttt_mlp_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB, **kw)[0]

    return fn, lambda: _check_mlp(x, fn())


def _fla_impl(x: Inputs, impl: str) -> tuple[Callable[[], Any], Callable[[], float]]:
    from fla.ops.ttt import chunk_ttt_linear, fused_chunk_ttt_linear

    from ttt.ops.ttt_linear.prefill import ttt_linear_prefill

    f = chunk_ttt_linear if impl.endswith("/chunk_ttt_linear") else fused_chunk_ttt_linear
    # fla's native layout (B, T, H, d), made outside the timed region.
    q, k, v = (t.transpose(1, 2).contiguous() for t in (x.q, x.k, x.v))
    eta = x.eta.transpose(1, 2).unsqueeze(-1).contiguous()
    h0 = x.W0.unsqueeze(0).expand(x.B, -1, -1, -1).contiguous()
    hb0 = x.b0.reshape(1, HEADS, 1, DIM).expand(x.B, -1, -1, -1).contiguous()

    def fn():
        return f(q, k, v, x.ln_w, x.ln_b, eta, scale=1.0, eps=1e-6, chunk_size=MB,
                 initial_state=h0, initial_state_bias=hb0, output_final_state=True)[0]  # fmt: skip

    def check() -> float:
        # Where the conventions meet (module docstring): our eta = c, fla's eta_t = c * token_eta[t mod b].
        Tc = min(x.T, CHECK_T)
        c = 1.0 / DIM
        pos = torch.arange(Tc, device="cuda") % MB
        eta_f = (c * x.token_eta[pos]).reshape(1, Tc, 1, 1).expand(1, Tc, HEADS, 1).to(x.q.dtype).contiguous()
        o_f = f(q[:1, :Tc], k[:1, :Tc], v[:1, :Tc], x.ln_w, x.ln_b, eta_f, scale=1.0, eps=1e-6, chunk_size=MB,
                initial_state=h0[:1], initial_state_bias=hb0[:1], output_final_state=False)[0]  # fmt: skip
        qs, ks, vs = (t[:1, :, :Tc].float() for t in (x.q, x.k, x.v))
        eta_o = torch.full((1, HEADS, Tc), c, device="cuda")
        st = x.state(1)
        ref = ttt_linear_prefill(
            qs, ks, vs, eta_o, x.token_eta, x.ln_w, x.ln_b, st.W, st.b, st.W_acc, st.b_acc, st.offset,
            mini_batch_size=MB, precision="ieee", fla_residual=True,
        )[0]  # fmt: skip
        return _rel(o_f.transpose(1, 2)[:, :CHECK_H], ref[:, :CHECK_H])

    return fn, check


def _sdpa_impl(x: Inputs, impl: str) -> tuple[Callable[[], Any], Callable[[], float]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    backend = SDPBackend.FLASH_ATTENTION if impl == "sdpa/flash" else SDPBackend.CUDNN_ATTENTION

    def fn():
        with sdpa_kernel([backend]):
            return sdpa(x.q, x.k, x.v, is_causal=True)

    def check() -> float:
        Tc = min(x.T, CHECK_T)
        q, k, v = (t[:1, :CHECK_H, :Tc].float() for t in (x.q, x.k, x.v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(DIM)
        s = s.masked_fill(torch.ones(Tc, Tc, dtype=torch.bool, device="cuda").triu(1), -math.inf)
        return _rel(fn()[:1, :CHECK_H, :Tc], torch.softmax(s, -1) @ v)

    return fn, check


def _bytes(impl: str, B: int, T: int, elt: int) -> int:
    n = B * T * HEADS
    if impl.startswith("sdpa/"):
        return 4 * n * DIM * elt  # q, k, v read, o written
    if impl.startswith("ttt_mlp/"):  # W1 (d x 4d), b1, W2 (4d x d), b2 and their accumulators, in and out, fp32
        state = 2 * 2 * B * HEADS * (2 * DIM * 4 * DIM + 4 * DIM + DIM) * 4
    else:
        state = 2 * 2 * B * HEADS * (DIM * DIM + DIM) * 4  # W, b and their accumulators, in and out, fp32
    return 4 * n * DIM * elt + n * elt + state


def measure(cfg: Any = None) -> Iterator[dict]:
    """Rows for every (shape, impl). cfg keys (all optional): shapes ("a,b"), impls (list), dtype ("bf16"),
    rep_ms (200), copy_bw (bytes/s; measured when absent)."""
    cfg = dict(cfg or {})
    dname = cfg.get("dtype", "bf16")
    dtype = DTYPES[dname]
    impls = list(cfg.get("impls") or IMPLS)
    rep_ms = int(cfg.get("rep_ms", 200))
    base = {"mode": "op", "dtype": dname, "metric": "time", "unit": "ms"}
    if not torch.cuda.is_available():
        for set_, B, T in shapes(cfg.get("shapes", "a,b"), cfg.get("ts") or T_LIST):
            for impl in impls:
                yield {**base, "model": _model(impl), "impl": impl, "ctx": T, "batch": B, "shape_set": set_,
                       "value": math.nan, "status": "skipped", "error": "no CUDA device"}  # fmt: skip
        return
    bw = float(cfg.get("copy_bw") or copy_bandwidth())
    for set_, B, T in shapes(cfg.get("shapes", "a,b"), cfg.get("ts") or T_LIST):
        x = None
        try:
            x = Inputs(B, T, dtype, seed=T + B)
        except torch.cuda.OutOfMemoryError as e:
            for impl in impls:
                yield {**base, "model": _model(impl), "impl": impl, "ctx": T, "batch": B, "shape_set": set_,
                       "value": math.nan, "status": "oom", "error": _err(e)}  # fmt: skip
            continue
        for impl in impls:
            yield _row(x, impl, set_, B, T, dtype, bw, rep_ms, base)
        del x
        torch.cuda.empty_cache()


def _model(impl: str) -> str:
    if impl.startswith("ttt_mlp/"):
        return "ttt_mlp"
    return "attention" if impl.startswith("sdpa/") else "ttt_linear"


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def _row(x: Inputs, impl: str, set_: str, B: int, T: int, dtype, bw: float, rep_ms: int, base: dict) -> dict:
    row = {**base, "model": _model(impl), "impl": impl, "ctx": T, "batch": B, "shape_set": set_}
    try:
        if impl.startswith("ttt_linear/"):
            fn, check = _ttt_impl(x, impl)
            row["check_ref"] = "ttt_linear/dual fp32"
        elif impl.startswith("ttt_mlp/"):
            fn, check = _mlp_impl(x, impl)
            row["check_ref"] = "ttt_mlp/dual fp32"
        elif impl.startswith("fla/"):
            fn, check = _fla_impl(x, impl)
            row["check_ref"] = "ttt_linear/triton ieee fp32, fla convention (const eta, f_res residual)"
        elif impl.startswith("sdpa/"):
            fn, check = _sdpa_impl(x, impl)
            row["check_ref"] = "softmax attention fp32"
        else:
            raise ValueError(f"unknown impl {impl!r}")
        row["check_rel_err"] = check()
        KERNEL_LAUNCHES.clear()
        med, lo, hi, n = _time(fn, rep_ms if not impl.endswith("/dual") else max(rep_ms, 1))
        row["op_kernels"] = ",".join(sorted(KERNEL_LAUNCHES)) or None  # our kernels that the timed calls launched
        nbytes = _bytes(impl, B, T, x.q.element_size())
        row.update(value=med, spread_lo=lo, spread_hi=hi, repeats=n, bytes_moved=nbytes,
                   frac_hbm=nbytes / (med * 1e-3) / bw, copy_bw=bw,
                   peak_mem_bytes=torch.cuda.max_memory_allocated(), status="ok", error="")  # fmt: skip
    except torch.cuda.OutOfMemoryError as e:
        row.update(value=math.nan, status="oom", error=_err(e))
    except ImportError as e:
        row.update(value=math.nan, status="skipped", error=_err(e))
    except Exception as e:  # a failing kernel is a row, not the end of the sweep
        row.update(value=math.nan, status="error", error=_err(e))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return row


def _graphed(step: Callable[[], Any]) -> Callable[[], Any]:
    """Capture one call of `step` in a CUDA graph (after warm-up on a side stream) and return its replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return g.replay


def _step_name(impl: str) -> str:
    """'ttt_mlp/triton_single-step-h16' -> 'triton_single', the op's STEP_IMPLS key."""
    return impl.split("/")[1].split("-")[0]


def step_variant(impl: str) -> dict[str, int]:
    """'<op>/<step impl>-step[-wN][-rN][-hN]' (after '-step', '+proj' aside) -> launch knobs of the Triton steps:
    warps, register cap, hidden chunk (TTT-MLP)."""
    knobs = {"w": "num_warps", "r": "maxnreg", "h": "hidden_chunk"}
    tail = impl.split("+")[0].split("-step", 1)[1] if "-step" in impl else ""
    kw = {}
    for part in filter(None, tail.split("-")):
        if part[:1] not in knobs or not part[1:].isdigit():
            raise ValueError(f"unknown decode-step variant part {part!r} in {impl!r} (expected wN, rN, hN)")
        kw[knobs[part[0]]] = int(part[1:])
    return kw


def _decode_fns(impl: str, B: int, dtype: torch.dtype) -> Callable[[], Any]:
    """One decode step of one layer's worth of state at batch B (32 heads x 64 for TTT, d_model 2048 for Mamba)."""
    if impl.startswith("mamba_ssm/"):
        from mamba_ssm.modules.mamba_simple import Mamba

        layer = Mamba(d_model=HEADS * DIM, layer_idx=0, device="cuda", dtype=dtype).eval()
        conv, ssm = layer.allocate_inference_cache(B, 1, dtype=dtype)
        h = torch.randn(B, 1, HEADS * DIM, device="cuda", dtype=dtype)
        conv.normal_(), ssm.normal_()

        @torch.inference_mode()
        def step():
            return layer.step(h, conv, ssm)[0]

        return step
    x = Inputs(B, 1, dtype)
    if impl.startswith("ttt_mlp/"):
        from ttt.ops.ttt_mlp import STEP_IMPLS

        st = x.mlp_state()
        for acc in (st.W1_acc, st.b1_acc, st.W2_acc, st.b2_acc):
            acc.normal_(std=1e-3)
    else:
        from ttt.ops.ttt_linear import STEP_IMPLS

        st = x.state()
        st.W_acc.normal_(std=1e-3), st.b_acc.normal_(std=1e-3)
    fn = functools.partial(STEP_IMPLS[_step_name(impl)], **step_variant(impl))
    proj = None
    if impl.endswith("+proj"):  # q, k, v, o projections of the layer (2048 x 2048 each): a rough full-layer cost
        proj = [torch.nn.Linear(HEADS * DIM, HEADS * DIM, bias=False, device="cuda", dtype=dtype) for _ in range(4)]
        hid = torch.randn(B, HEADS * DIM, device="cuda", dtype=dtype)

    @torch.inference_mode()
    def step():
        if proj is not None:
            q, k, v = (p(hid).view(B, HEADS, 1, DIM) for p in proj[:3])
        else:
            q, k, v = x.q, x.k, x.v
        out = fn(q, k, v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB)[0]
        if proj is not None:
            out = proj[3](out.reshape(B, HEADS * DIM))
        return out

    return step


DECODE_IMPLS = (
    "ttt_linear/triton-step",
    "ttt_linear/triton-step+proj",
    "ttt_linear/naive-step",
    "ttt_mlp/triton-step",
    "ttt_mlp/triton_single-step",
    "mamba_ssm/Mamba.step",
)


def _check_mlp_step(B: int, dtype: torch.dtype, name: str = "triton", **knobs: int) -> float:
    """One Triton TTT-MLP step vs the PyTorch step (fp32 state, same inputs), from a state with non-zero
    accumulators at mini-batch position 0; then 16 more steps, so the fold at the mini-batch's end is checked too."""
    from ttt.ops.ttt_mlp import STEP_IMPLS

    x = Inputs(B, 17, dtype, seed=1)
    st = x.mlp_state()
    for acc in (st.W1_acc, st.b1_acc, st.W2_acc, st.b2_acc):
        acc.normal_(std=1e-3)
    st_ref = st.clone()
    err = 0.0
    for t in range(17):
        xs = [y[:, :, t : t + 1] for y in (x.q, x.k, x.v, x.eta)]
        out = STEP_IMPLS[name](*xs, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=MB, **knobs)[0]
        ref = STEP_IMPLS["naive"](*[y.float() for y in xs], x.token_eta, x.ln_w, x.ln_b, st_ref, mini_batch_size=MB)[0]
        err = max(err, _rel(out, ref))
    return err


def measure_decode(cfg: Any = None) -> Iterator[dict]:
    """Decode-step rows (one layer, B sequences, one token), CUDA graph and eager, median us over replays."""
    cfg = dict(cfg or {})
    dname = cfg.get("dtype", "bf16")
    B = int(cfg.get("batch", BATCH_B))
    for impl in cfg.get("impls") or DECODE_IMPLS:
        for cg in (True, False):
            row = {"model": "mamba" if impl.startswith("mamba") else _model(impl), "impl": impl, "mode": "decode_op",
                   "ctx": 0, "batch": B, "dtype": dname, "metric": "time", "unit": "us", "cuda_graph": cg}  # fmt: skip
            try:
                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA device")
                if impl.startswith("ttt_mlp/triton"):  # checked before it is timed, like the prefill rows
                    err = _check_mlp_step(B, DTYPES[dname], _step_name(impl), **step_variant(impl))
                    row.update(check_ref="ttt_mlp/naive step fp32", check_rel_err=err)
                step = _decode_fns(impl, B, DTYPES[dname])
                fn = _graphed(step) if cg else step
                med, lo, hi, n = _time(fn, int(cfg.get("rep_ms", 100)))
                row.update(value=med * 1e3, spread_lo=lo * 1e3, spread_hi=hi * 1e3, repeats=n, status="ok", error="")
            except ImportError as e:
                row.update(value=math.nan, status="skipped", error=_err(e))
            except Exception as e:
                row.update(value=math.nan, status="error", error=_err(e))
            yield row


def _table(rows: Iterable[dict]) -> str:
    rows = list(rows)
    lines = [
        f"{'set':>3} {'B':>3} {'T':>6} {'impl':<30} {'ms':>9} {'p10':>8} {'p90':>8} {'frac_hbm':>8} {'rel_err':>9} status"
    ]
    for r in rows:
        v = r.get("value", math.nan)
        lines.append(
            f"{r.get('shape_set', ''):>3} {r['batch']:>3} {r['ctx']:>6} {r['impl']:<30} {v:9.3f} "
            f"{r.get('spread_lo', math.nan):8.3f} {r.get('spread_hi', math.nan):8.3f} {r.get('frac_hbm', math.nan):8.3f} "
            f"{r.get('check_rel_err', math.nan):9.2e} {r['status']} {r.get('error', '')[:60]}"
        )
    # the targets, as ratios measured in this run
    by = {(r["batch"], r["ctx"], r["impl"]): r.get("value", math.nan) for r in rows}
    for (B, T, impl), v in sorted(by.items()):
        if impl.startswith(("ttt_linear/triton", "ttt_linear/gluon")):
            peer = by.get((B, T, "fla/chunk_ttt_linear"), math.nan)
            lines.append(f"ratio fla_chunk/{impl.split('/')[1]} B={B} T={T}: {peer / v:.2f}x")
        if impl.startswith(
            ("ttt_mlp/triton", "ttt_mlp/gluon")
        ):  # the MLP kernel's target: <= 2.5x TTT-Linear's (default) kernel
            lin = next((n for n in ("ttt_linear/gluon", "ttt_linear/triton") if (B, T, n) in by), "ttt_linear/triton")
            lines.append(f"ratio {impl}/{lin} B={B} T={T}: {v / by.get((B, T, lin), math.nan):.2f}x")
    return "\n".join(lines)


def kernel_report() -> str:
    """Registers, spills and shared memory of every compiled prefill/step kernel (occupancy questions)."""
    out = []
    try:
        from ttt.ops.ttt_linear import decode, prefill
        from ttt.ops.ttt_mlp import decode as mlp_decode
        from ttt.ops.ttt_mlp import prefill as mlp_prefill

        kernels = [prefill._ttt_linear_prefill_kernel, decode._ttt_linear_step_kernel,
                   mlp_prefill._ttt_mlp_prefill_kernel, mlp_decode._ttt_mlp_step_kernel,
                   mlp_decode._split_z2_kernel, mlp_decode._split_update_kernel]  # fmt: skip
        if "ttt.ops.ttt_linear.prefill_gluon" in sys.modules:  # only once a run has used it
            kernels.append(sys.modules["ttt.ops.ttt_linear.prefill_gluon"]._ttt_linear_prefill_gluon_kernel)
        for kern in kernels:
            for cache in getattr(kern, "device_caches", {}).values():
                for key, k in cache[0].items():
                    k._init_handles()
                    out.append(f"{kern.fn.__name__} {str(key)[-120:]}: regs={k.n_regs} spills={k.n_spills} "
                               f"smem={k.metadata.shared} warps={k.metadata.num_warps} stages={k.metadata.num_stages}")  # fmt: skip
    except Exception as e:  # diagnostics only
        out.append(f"kernel report failed: {_err(e)}")
    return "\n".join(out)


def write_csv(rows: list[dict], path: str) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="a,b")
    p.add_argument("--impls", default=",".join(IMPLS))
    p.add_argument("--rep-ms", type=int, default=200)
    p.add_argument("--ts", default=",".join(map(str, T_LIST)), help="context lengths")
    p.add_argument("--out", default=".")
    p.add_argument("--name", default="op_rows")
    p.add_argument("--decode", action="store_true", help="time the decode step rows instead of the prefill op")
    a = p.parse_args(argv)
    if a.decode:
        drows = list(
            measure_decode(
                {
                    "rep_ms": a.rep_ms,
                    "impls": [i for i in a.impls.split(",") if "-step" in i or i in DECODE_IMPLS] or None,
                }
            )
        )
        write_csv(drows, f"{a.out}/{a.name}_decode.csv")
        for r in drows:
            print(f"decode B={r['batch']} {r['impl']:<30} graph={r['cuda_graph']!s:<5} {r['value']:9.1f} us "
                  f"[{r.get('spread_lo', math.nan):.1f}, {r.get('spread_hi', math.nan):.1f}] {r['status']} {r['error'][:80]}")  # fmt: skip
        print(kernel_report())
        return 0
    rows = []
    ts = [int(t) for t in a.ts.split(",")]
    for r in measure({"shapes": a.shapes, "impls": a.impls.split(","), "rep_ms": a.rep_ms, "ts": ts}):
        rows.append(r)
        print(r["impl"], r["batch"], r["ctx"], r["status"], r.get("value"), r.get("check_rel_err"), flush=True)
        write_csv(rows, f"{a.out}/{a.name}.csv")  # after every row, so a run stopped at its limit keeps its rows
    print(_table(rows))
    print(kernel_report())
    if rows:
        print(f"copy bandwidth {rows[0].get('copy_bw', math.nan) / 1e12:.2f} TB/s;"
              f" median frac_hbm triton: {statistics.median([r['frac_hbm'] for r in rows if r['impl'] == 'ttt_linear/triton' and r['status'] == 'ok'] or [math.nan]):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
