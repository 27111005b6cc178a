"""Triton decode step for TTT-Linear: one token per sequence, the state updated in place (CUDA-graph capturable).

One program per (batch, head) reads W, b, W_acc, b_acc and the mini-batch position `offset` (a device tensor:
no host read, no data-dependent Python branch), adds this token's eta-weighted gradient to the accumulators,
emits out = q + LN(q W_t + b_t) with W_t = W - token_eta[offset] * W_acc, and at the last position of the
mini-batch folds (W <- W_t, acc <- 0). Same semantics as `naive.ttt_linear_step`.

Bytes per step and head: W and W_acc read, W_acc written (W only when the mini-batch closes), 3 x 16 KB in fp32:
the state traffic, not the arithmetic, is the floor. The offset is advanced by a second one-thread launch, since
every program of the step kernel must read the old value first (there is no grid-wide barrier inside a launch).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ttt.errors import UserError
from ttt.ops.common import LN_EPS, TTTLinearState, check_args, note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on, prefetch_l2
from ttt.ops.triton_common import advance_offset_kernel, interpreting, vec_ln_l2_grad, vec_ln_stats


def fused_step_launch() -> tuple[bool, dict]:
    """(PDL, launch options) of the fused decode step (`ttt.fused.linear_step`). Defaults from the session-12 A/B
    (bench/notes/session12.md, 1.3B TTT-Linear at B = 16): a 128-register cap, so that the 16 x 32 head programs
    fit in one wave (four an SM; uncapped 146 registers, three an SM; no spills capped; offline sm_90a with the
    launcher's specialisation, session 13), and a plain launch, because under PDL the capped kernel made the whole
    decode step 0.1 ms slower. TTT_STEP_MAXNREG (0: no cap), TTT_STEP_WARPS and TTT_STEP_PDL=1 (PDL with the
    state's L2 prefetch, session 11's launch) are for A/B runs. PDL with the dependents triggered at the end and no
    prefetch measured between the two (session 12, run 7) and was dropped."""
    opts = {"num_warps": int(os.environ.get("TTT_STEP_WARPS", "4"))}
    if cap := int(os.environ.get("TTT_STEP_MAXNREG", "128")):
        opts["maxnreg"] = cap
    mode = os.environ.get("TTT_STEP_PDL", "0")
    if mode not in ("0", "1"):
        raise UserError(f"TTT_STEP_PDL={mode!r}: expected 0 or 1")
    return mode == "1", opts


@triton.jit
def step_state_prefetch(W_ptr, Wacc_ptr, pid, D: tl.constexpr, PDL: tl.constexpr):
    """Under PDL, L2 prefetches of this head's W and W_acc (the state is most of the step's bytes and no neighbour
    kernel writes it), issued before the kernel waits on its predecessor."""
    if PDL:
        lines = pid.to(tl.int64) * D * D + tl.arange(0, D * D // 32) * 32
        prefetch_l2(W_ptr + lines)
        prefetch_l2(Wacc_ptr + lines)


@triton.jit
def step_core(q, k, v, eta, p, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wacc_ptr, bacc_ptr, pid, hi, BS, eps,
              D: tl.constexpr):  # fmt: skip
    """One head's step given its fp32 q, k, v rows, eta and mini-batch position p: updates the state in memory and
    returns out = q + LN(q W_t + b_t). Shared by this module's kernel and the fused decode kernel (ttt.fused)."""
    r = tl.arange(0, D)
    wofs = pid.to(tl.int64) * D * D + r[:, None] * D + r[None, :]
    vofs = pid.to(tl.int64) * D + r
    W = tl.load(W_ptr + wofs).to(tl.float32)
    Wacc = tl.load(Wacc_ptr + wofs).to(tl.float32)
    bv = tl.load(b_ptr + vofs).to(tl.float32)
    bacc = tl.load(bacc_ptr + vofs).to(tl.float32)
    ln_w = tl.load(lnw_ptr + hi * D + r).to(tl.float32)
    ln_b = tl.load(lnb_ptr + hi * D + r).to(tl.float32)
    te = tl.load(te_ptr + p).to(tl.float32)

    # Gradient at W' (row vector k times W: a broadcast-multiply and a reduction over the rows of W).
    z = tl.sum(k[:, None] * W, axis=0) + bv
    eg = eta * vec_ln_l2_grad(z, v - k, ln_w, ln_b, D, eps)
    Wacc += k[:, None] * eg[None, :]
    bacc += eg
    W_t = W - te * Wacc
    b_t = bv - te * bacc

    zq = tl.sum(q[:, None] * W_t, axis=0) + b_t
    zc_o, rstd_o = vec_ln_stats(zq, D, eps)

    closes = p == BS - 1
    # W and b change only when the mini-batch closes: a masked store, so the common step writes 16 KB less.
    tl.store(W_ptr + wofs, W_t.to(W_ptr.dtype.element_ty), mask=(wofs * 0 + closes.to(tl.int32)) != 0)
    tl.store(b_ptr + vofs, b_t.to(b_ptr.dtype.element_ty), mask=(vofs * 0 + closes.to(tl.int32)) != 0)
    tl.store(Wacc_ptr + wofs, tl.where(closes, 0.0, Wacc).to(Wacc_ptr.dtype.element_ty))
    tl.store(bacc_ptr + vofs, tl.where(closes, 0.0, bacc).to(bacc_ptr.dtype.element_ty))
    return q + zc_o * rstd_o * ln_w + ln_b


@triton.jit
def _ttt_linear_step_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    eta_ptr,
    te_ptr,
    lnw_ptr,
    lnb_ptr,
    W_ptr,
    b_ptr,
    Wacc_ptr,
    bacc_ptr,
    off_ptr,
    o_ptr,
    H,
    BS,
    stride_qb,
    stride_qh,
    stride_eb,
    stride_eh,
    eps,
    D: tl.constexpr,
    PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    step_state_prefetch(W_ptr, Wacc_ptr, pid, D, PDL)
    pdl_enter(PDL)
    r = tl.arange(0, D)
    xo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    k = tl.load(k_ptr + xo + r).to(tl.float32)
    v = tl.load(v_ptr + xo + r).to(tl.float32)
    q = tl.load(q_ptr + xo + r).to(tl.float32)
    eta = tl.load(eta_ptr + bi.to(tl.int64) * stride_eb + hi.to(tl.int64) * stride_eh).to(tl.float32)
    p = tl.load(off_ptr).to(tl.int32)
    out = step_core(q, k, v, eta, p, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wacc_ptr, bacc_ptr, pid, hi, BS, eps, D)
    tl.store(o_ptr + xo + r, out.to(o_ptr.dtype.element_ty))


def ttt_linear_step_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTLinearState,
    *,
    mini_batch_size: int = 16,
    num_warps: int = 4,
    maxnreg: int | None = None,
) -> tuple[torch.Tensor, TTTLinearState]:
    """One token: q, k, v (B, H, 1, d), eta (B, H, 1). Updates `state` in place (its tensors must be contiguous)
    and returns (out, state), like `naive.ttt_linear_step`. Two launches, no host sync: capturable in a CUDA graph.
    num_warps / maxnreg: launch knobs (offline sm_90a at d = 64: 4 warps 167 registers, three programs an SM, so
    B=16 x 32 heads run in 1.3 waves; 2 warps 210 registers or 4 warps capped at 128 fit four, one wave; untimed)."""
    check_args(q, token_eta, mini_batch_size)
    if not q.is_cuda and not interpreting():
        raise UserError("ttt_linear_step impl 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    B, H, T, D = q.shape
    if T != 1:
        raise UserError(f"ttt_linear_step takes one token, got T={T}")
    if D < 16 or D & (D - 1):
        raise UserError(f"head_dim={D}: the Triton step kernel needs a power of two >= 16")
    st = (state.W, state.b, state.W_acc, state.b_acc)
    if not all(t.is_contiguous() for t in st):
        raise UserError("the Triton step updates the state in place and needs contiguous state tensors")
    q, k, v = (x.contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    pdl = pdl_on(q)
    if pdl:
        note_kernel("ttt_linear_step/pdl")
    _ttt_linear_step_kernel[(B * H,)](
        q, k, v, eta, token_eta, ln_w, ln_b, *st, state.offset, out,
        H, mini_batch_size, q.stride(0), q.stride(1), eta.stride(0), eta.stride(1), LN_EPS,
        D=D, PDL=pdl, num_warps=num_warps, **({"maxnreg": maxnreg} if maxnreg else {}), **launch_opts(pdl),
    )  # fmt: skip
    advance_offset_kernel[(1,)](state.offset, mini_batch_size, PDL=pdl, num_warps=1, **launch_opts(pdl))
    return out, state
