"""Triton device functions shared by the TTT kernels (ttt_linear and ttt_mlp prefill/decode): operand precision,
row statistics, the chunk load, and the decode step's offset advance. Imported only where triton is."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from ttt.errors import UserError
from ttt.ops.pdl import pdl_enter

PRECISIONS = ("ieee", "tf32", "bf16")
BACKENDS = ("auto", "triton", "gluon")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(
    backend: str, q: torch.Tensor, gluon_module: str, unsupported: Callable[..., str | None], tuned: list[str],
    prefix: str = "",
) -> str:  # fmt: skip
    """The prefill kernel that runs for `backend` ('auto' | 'triton' | 'gluon'): "gluon" where the Gluon kernel of
    `gluon_module` takes the inputs (`unsupported(module)` says why not, or None) and no Triton-kernel knob was
    tuned away from its default (`tuned` names those); "triton" otherwise, and always on CPU (Gluon has no
    interpreter). Asking for 'gluon' where it cannot run is a one-line error."""
    if backend not in BACKENDS:
        raise UserError(f"{prefix}backend={backend!r}, expected one of {BACKENDS}")
    if backend == "triton" or (backend == "auto" and not q.is_cuda):
        return "triton"
    if not q.is_cuda:
        raise UserError(f"backend='gluon' needs CUDA tensors, got device '{q.device}' (Gluon has no interpreter)")
    try:
        module = importlib.import_module(gluon_module)  # imported here: CPU runs never load Gluon
    except ImportError as e:  # a Triton without Gluon (it came in 3.5)
        why = f"needs triton.experimental.gluon (triton {triton.__version__}: {e})"
    else:
        why = unsupported(module)
    if backend == "gluon" and (why or tuned):
        raise UserError(f"backend='gluon' {why or f'does not take the Triton kernel knobs {tuned}'}")
    return "triton" if why or tuned else "gluon"


@triton.jit
def operand(x, PREC: tl.constexpr):
    if PREC == "bf16":
        return x.to(tl.bfloat16)
    else:
        return x.to(tl.float32)


@triton.jit
def dot(a, b, PREC: tl.constexpr):
    # fp32 accumulation always; PREC picks the operand precision (bf16 operands run the fastest MMA).
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), out_dtype=tl.float32)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)


@triton.jit
def dot_acc(a, b, acc, PREC: tl.constexpr):
    """acc + a @ b, accumulated in place (the weight update: no second tile alive)."""
    if PREC == "bf16":
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc, out_dtype=tl.float32)
    else:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision=PREC)


@triton.jit
def add2(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@triton.jit
def add4(a0, b0, c0, d0, a1, b1, c1, d1):
    return a0 + a1, b0 + b1, c0 + c1, d0 + d1


@triton.jit
def add7(a0, b0, c0, d0, e0, f0, g0, a1, b1, c1, d1, e1, f1, g1):
    return a0 + a1, b0 + b1, c0 + c1, d0 + d1, e0 + e1, f0 + f1, g0 + g1


@triton.jit
def stats_from_sums(s1, s2, D: tl.constexpr, eps):
    """(mean, 1/sqrt(var + eps)) from a row's sum and sum of squares over D entries."""
    mu = s1 / D
    return mu, 1.0 / tl.sqrt(tl.maximum(s2 / D - mu * mu, 0.0) + eps)


@triton.jit
def row_stats(x, D: tl.constexpr, eps, ONE_PASS: tl.constexpr):
    """(mean, 1/sqrt(var + eps)) per row. ONE_PASS (the default): sum and sum of squares in one two-operand
    reduction, one cross-warp exchange instead of two in a row on the sequential chain: 13-20% faster on an H100
    at every shape, same error vs the fp32 reference (bench/notes/run4_*). Else the two-pass centred variance."""
    if ONE_PASS:
        s1, s2 = tl.reduce((x, x * x), 1, add2)
        mu, rstd = stats_from_sums(s1, s2, D, eps)
    else:
        mu = tl.sum(x, axis=1) / D
        xc = x - mu[:, None]
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)
    return mu, rstd


@triton.jit
def vec_ln_stats(x, D: tl.constexpr, eps):
    """(x - mean, 1/sqrt(var + eps)) of one row held as a vector (the decode steps)."""
    mu = tl.sum(x, axis=0) / D
    xc = x - mu
    return xc, 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / D + eps)


@triton.jit
def vec_ln_l2_grad(z, tgt, ln_w, ln_b, D: tl.constexpr, eps):
    """d/dz 0.5 ||LN(z) - tgt||^2 for one row held as a vector (LayerNorm forward + backward; the decode steps)."""
    zc, rstd = vec_ln_stats(z, D, eps)
    xhat = zc * rstd
    gx = (ln_w * xhat + ln_b - tgt) * ln_w
    return (D * gx - tl.sum(gx, axis=0) - xhat * tl.sum(gx * xhat, axis=0)) * (rstd / D)


@triton.jit
def load_consts(lnw_ptr, lnb_ptr, te_ptr, hi, BS, D: tl.constexpr, BT: tl.constexpr):
    """What every mini-batch of head `hi` reads: its LayerNorm weight and bias, token_eta (BT rows, masked to the
    mini-batch) and its last entry, all fp32."""
    cols = tl.arange(0, D)
    rows = tl.arange(0, BT)
    ln_w = tl.load(lnw_ptr + hi * D + cols).to(tl.float32)
    ln_b = tl.load(lnb_ptr + hi * D + cols).to(tl.float32)
    te = tl.load(te_ptr + rows, mask=rows < BS, other=0.0).to(tl.float32)
    return ln_w, ln_b, te, tl.load(te_ptr + BS - 1).to(tl.float32)


@triton.jit
def load_rows(x_ptr, t0, T, stride_t, BS, D: tl.constexpr, BT: tl.constexpr):
    """Rows t0 + [0, BT) of one (T, D) tile, zero outside the mini-batch and [0, T); kept in the input dtype."""
    rows = tl.arange(0, BT)
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T)
    return tl.load(x_ptr + t[:, None] * stride_t + tl.arange(0, D)[None, :], mask=valid[:, None], other=0.0)


@triton.jit
def load_chunk(q_ptr, k_ptr, v_ptr, eta_ptr, t0, T, stride_t, stride_et, BS, D: tl.constexpr, BT: tl.constexpr):
    """Rows t0 + [0, BT) of one (batch, head), masked to the mini-batch and to [0, T); kept in the input dtype."""
    rows = tl.arange(0, BT)
    cols = tl.arange(0, D)
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T)
    off = t[:, None] * stride_t + cols[None, :]
    q = tl.load(q_ptr + off, mask=valid[:, None], other=0.0)
    k = tl.load(k_ptr + off, mask=valid[:, None], other=0.0)
    v = tl.load(v_ptr + off, mask=valid[:, None], other=0.0)
    eta = tl.load(eta_ptr + t * stride_et, mask=valid, other=0.0)
    return q, k, v, eta


@triton.jit
def advance_offset_kernel(off_ptr, BS, PDL: tl.constexpr = False):
    """The decode step's last launch: the mini-batch position moves on, on the device (no host sync)."""
    pdl_enter(PDL)
    p = tl.load(off_ptr)
    tl.store(off_ptr, (p + 1) % BS)
