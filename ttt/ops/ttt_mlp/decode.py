"""Triton decode step for TTT-MLP: one token per sequence, the state updated in place (CUDA-graph capturable).

One program per (batch, head). The state of one head (W1, W2 and their accumulators, 4 x 64 KB in fp32 at d = 64)
does not fit in registers, so the kernel streams it in hidden-unit chunks of HC columns of W1 / rows of W2, in two
passes (the LayerNorm gradient between them needs the whole second-layer output):
    pass 1, per chunk: z1 = k W1 + b1, x2 = gelu(z1), z2 += x2 W2          -> eg2 = eta * LN-L2 gradient at z2 + b2
    pass 2, per chunk: recompute z1, x2 (W1, W2 chunks re-read: L1/L2 hits), eg1 = (eg2 W2^T) gelu'(z1),
                       acc += (k^T eg1, eg1, x2^T eg2), W_t = W - te[p] acc, xq = gelu(q W1_t + b1_t),
                       zq2 += xq W2_t; store acc (zero when the mini-batch closes) and W_t (only when it closes)
    out = q + LN(zq2 + b2_t)
Same semantics as `naive.ttt_mlp_step`; the mini-batch position `offset` is read on the device (no host sync, no
data-dependent Python branch) and advanced by a second one-thread launch, since every program must read the old
value first. Bytes per step and head: W1, W2, both accumulators read, accumulators written: 384 KB at d = 64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ttt.errors import UserError
from ttt.ops.common import LN_EPS, TTTMLPState, check_args
from ttt.ops.triton_common import advance_offset_kernel, interpreting, vec_ln_l2_grad, vec_ln_stats
from ttt.ops.ttt_mlp.prefill import gelu_tanh, gelu_tanh_fwd_bwd


@triton.jit
def _chunk_offsets(base, c, D: tl.constexpr, HID: tl.constexpr, HC: tl.constexpr):
    """Offsets of hidden chunk c of head `base` into W1 (d x HC columns), b1 (HC) and W2 (HC x d rows)."""
    rd = tl.arange(0, D)
    rc = tl.arange(0, HC)
    o1 = base * D * HID + c * HC + rd[:, None] * HID + rc[None, :]
    o2 = base * HID * D + c * HC * D + rc[:, None] * D + rd[None, :]
    return o1, base * HID + c * HC + rc, o2


@triton.jit
def _chunk_z2(k, W1_ptr, o1, b1_ptr, oc, W2_ptr, o2, FAST: tl.constexpr):
    """One hidden chunk's share of the second-layer output on the key: gelu(k W1c + b1c) W2c."""
    W1c = tl.load(W1_ptr + o1).to(tl.float32)
    z1 = tl.sum(k[:, None] * W1c, axis=0) + tl.load(b1_ptr + oc).to(tl.float32)
    W2c = tl.load(W2_ptr + o2).to(tl.float32)
    return tl.sum(gelu_tanh(z1, FAST)[:, None] * W2c, axis=0)


@triton.jit
def _chunk_update(
    q, k, eg2, te, closes, W1_ptr, W1a_ptr, o1, b1_ptr, b1a_ptr, oc, W2_ptr, W2a_ptr, o2, FAST: tl.constexpr
):  # fmt: skip
    """One hidden chunk of the step after eg2 is known (o1, oc, o2: its offsets into W1 / b1 / W2 and their
    accumulators): its first-layer gradient, accumulators (zero when the mini-batch closes) and, at the close, its
    weights are written; returns its share of zq2, xq W2_t with xq = gelu(q W1_t + b1_t)."""
    W1c = tl.load(W1_ptr + o1).to(tl.float32)
    b1c = tl.load(b1_ptr + oc).to(tl.float32)
    W2c = tl.load(W2_ptr + o2).to(tl.float32)
    x2, dz1 = gelu_tanh_fwd_bwd(tl.sum(k[:, None] * W1c, axis=0) + b1c, FAST)
    eg1 = tl.sum(W2c * eg2[None, :], axis=1) * dz1
    A1 = tl.load(W1a_ptr + o1).to(tl.float32) + k[:, None] * eg1[None, :]
    a1 = tl.load(b1a_ptr + oc).to(tl.float32) + eg1
    A2 = tl.load(W2a_ptr + o2).to(tl.float32) + x2[:, None] * eg2[None, :]
    W1t = W1c - te * A1
    b1t = b1c - te * a1
    W2t = W2c - te * A2
    xq = gelu_tanh(tl.sum(q[:, None] * W1t, axis=0) + b1t, FAST)
    tl.store(W1a_ptr + o1, tl.where(closes, 0.0, A1).to(W1a_ptr.dtype.element_ty))
    tl.store(b1a_ptr + oc, tl.where(closes, 0.0, a1).to(b1a_ptr.dtype.element_ty))
    tl.store(W2a_ptr + o2, tl.where(closes, 0.0, A2).to(W2a_ptr.dtype.element_ty))
    # The weights change only when the mini-batch closes: masked stores, so a common step writes half the bytes.
    tl.store(W1_ptr + o1, W1t.to(W1_ptr.dtype.element_ty), mask=(o1 * 0 + closes.to(tl.int32)) != 0)
    tl.store(b1_ptr + oc, b1t.to(b1_ptr.dtype.element_ty), mask=(oc * 0 + closes.to(tl.int32)) != 0)
    tl.store(W2_ptr + o2, W2t.to(W2_ptr.dtype.element_ty), mask=(o2 * 0 + closes.to(tl.int32)) != 0)
    return tl.sum(xq[:, None] * W2t, axis=0)


@triton.jit
def _ttt_mlp_step_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, te_ptr, lnw_ptr, lnb_ptr,
    W1_ptr, b1_ptr, W2_ptr, b2_ptr, W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, off_ptr, o_ptr,
    H, BS, stride_qb, stride_qh, stride_eb, stride_eh, eps,
    D: tl.constexpr, HID: tl.constexpr, HC: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rd = tl.arange(0, D)
    xo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    base = pid.to(tl.int64)

    q = tl.load(q_ptr + xo + rd).to(tl.float32)
    k = tl.load(k_ptr + xo + rd).to(tl.float32)
    v = tl.load(v_ptr + xo + rd).to(tl.float32)
    eta = tl.load(eta_ptr + bi.to(tl.int64) * stride_eb + hi.to(tl.int64) * stride_eh).to(tl.float32)
    ln_w = tl.load(lnw_ptr + hi * D + rd).to(tl.float32)
    ln_b = tl.load(lnb_ptr + hi * D + rd).to(tl.float32)
    b2 = tl.load(b2_ptr + base * D + rd).to(tl.float32)
    b2a = tl.load(b2a_ptr + base * D + rd).to(tl.float32)
    p = tl.load(off_ptr).to(tl.int32)
    te = tl.load(te_ptr + p).to(tl.float32)
    closes = p == BS - 1

    # Pass 1: the second-layer output on the key, at the mini-batch-start weights.
    z2 = b2
    for c in tl.range(0, HID // HC):
        o1, oc, o2 = _chunk_offsets(base, c, D, HID, HC)
        z2 += _chunk_z2(k, W1_ptr, o1, b1_ptr, oc, W2_ptr, o2, FAST)
    eg2 = eta * vec_ln_l2_grad(z2, v - k, ln_w, ln_b, D, eps)

    # Pass 2: first-layer gradient, accumulators, the weights this token sees, its output.
    zq2 = tl.zeros([D], dtype=tl.float32)
    for c in tl.range(0, HID // HC):
        o1, oc, o2 = _chunk_offsets(base, c, D, HID, HC)
        zq2 += _chunk_update(q, k, eg2, te, closes, W1_ptr, W1a_ptr, o1, b1_ptr, b1a_ptr, oc, W2_ptr, W2a_ptr, o2, FAST)

    a2 = b2a + eg2
    b2t = b2 - te * a2
    zc_o, rstd_o = vec_ln_stats(zq2 + b2t, D, eps)
    out = q + zc_o * rstd_o * ln_w + ln_b
    tl.store(o_ptr + xo + rd, out.to(o_ptr.dtype.element_ty))
    tl.store(b2a_ptr + base * D + rd, tl.where(closes, 0.0, a2).to(b2a_ptr.dtype.element_ty))
    tl.store(b2_ptr + base * D + rd, b2t.to(b2_ptr.dtype.element_ty), mask=(rd * 0 + closes.to(tl.int32)) != 0)


# The hidden-split step (`split=True`): the same math over HID / HC programs per head, one hidden chunk each, in three
# launches. The one-program-per-head kernel above walks its chunk iterations one after another (a few KB in flight per
# program: 133 us on an H200 for 197 MB at B=16, d=64, ~3x its bytes' time); here every chunk of every head loads at
# once (101 us in the same run at 4 warps, 94 at 2). The cost: the two contractions over the hidden units become partial
# sums written to a small scratch (HID / HC x d floats per head) and summed by the next launch, and W1, W2 are read in
# two launches instead of two passes of one. Launch 3 advances the offset itself: nothing reads it after launch 2.
@triton.jit
def _split_z2_kernel(
    k_ptr, W1_ptr, b1_ptr, W2_ptr, b2_ptr, part_ptr, H, stride_qb, stride_qh,
    D: tl.constexpr, HID: tl.constexpr, HC: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    """Launch 1, program (head, chunk c): this chunk's share of z2 = gelu(k W1 + b1) W2 (+ b2 in chunk 0)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = pid // H
    hi = pid % H
    rd = tl.arange(0, D)
    base = pid.to(tl.int64)
    k = tl.load(k_ptr + bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh + rd).to(tl.float32)
    o1, oc, o2 = _chunk_offsets(base, c, D, HID, HC)
    z2 = _chunk_z2(k, W1_ptr, o1, b1_ptr, oc, W2_ptr, o2, FAST)
    z2 += tl.where(c == 0, tl.load(b2_ptr + base * D + rd).to(tl.float32), 0.0)
    tl.store(part_ptr + (base * (HID // HC) + c) * D + rd, z2)


@triton.jit
def _split_update_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, te_ptr, lnw_ptr, lnb_ptr,
    W1_ptr, b1_ptr, W2_ptr, b2_ptr, W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, off_ptr, part_ptr, partq_ptr, bt_ptr,
    H, BS, stride_qb, stride_qh, stride_eb, stride_eh, eps,
    D: tl.constexpr, HID: tl.constexpr, HC: tl.constexpr, FAST: tl.constexpr,
):  # fmt: skip
    """Launch 2, program (head, chunk c): eg2 from the summed z2 (every chunk recomputes it: d floats), then this
    chunk's gradient, accumulators, the weights this token sees and its share of zq2. Chunk 0 owns b2 and b2_acc
    (no other program reads them here: launch 1 folded b2 into z2)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = pid // H
    hi = pid % H
    S: tl.constexpr = HID // HC
    rd = tl.arange(0, D)
    rs = tl.arange(0, S)
    base = pid.to(tl.int64)
    xo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    q = tl.load(q_ptr + xo + rd).to(tl.float32)
    k = tl.load(k_ptr + xo + rd).to(tl.float32)
    v = tl.load(v_ptr + xo + rd).to(tl.float32)
    eta = tl.load(eta_ptr + bi.to(tl.int64) * stride_eb + hi.to(tl.int64) * stride_eh).to(tl.float32)
    ln_w = tl.load(lnw_ptr + hi * D + rd).to(tl.float32)
    ln_b = tl.load(lnb_ptr + hi * D + rd).to(tl.float32)
    p = tl.load(off_ptr).to(tl.int32)
    te = tl.load(te_ptr + p).to(tl.float32)
    closes = p == BS - 1

    z2 = tl.sum(tl.load(part_ptr + base * S * D + rs[:, None] * D + rd[None, :]), axis=0)
    eg2 = eta * vec_ln_l2_grad(z2, v - k, ln_w, ln_b, D, eps)
    o1, oc, o2 = _chunk_offsets(base, c, D, HID, HC)
    zq2 = _chunk_update(q, k, eg2, te, closes, W1_ptr, W1a_ptr, o1, b1_ptr, b1a_ptr, oc, W2_ptr, W2a_ptr, o2, FAST)
    tl.store(partq_ptr + (base * S + c) * D + rd, zq2)
    if c == 0:
        a2 = tl.load(b2a_ptr + base * D + rd).to(tl.float32) + eg2
        b2t = tl.load(b2_ptr + base * D + rd).to(tl.float32) - te * a2
        tl.store(bt_ptr + base * D + rd, b2t)
        tl.store(b2a_ptr + base * D + rd, tl.where(closes, 0.0, a2).to(b2a_ptr.dtype.element_ty))
        tl.store(b2_ptr + base * D + rd, b2t.to(b2_ptr.dtype.element_ty), mask=(rd * 0 + closes.to(tl.int32)) != 0)


@triton.jit
def _split_out_kernel(
    q_ptr, lnw_ptr, lnb_ptr, partq_ptr, bt_ptr, off_ptr, o_ptr, H, BS, stride_qb, stride_qh, eps,
    D: tl.constexpr, S: tl.constexpr,
):  # fmt: skip
    """Launch 3, program per head: out = q + LN(sum of the zq2 shares + b2_t); program 0 advances the offset."""
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    rd = tl.arange(0, D)
    rs = tl.arange(0, S)
    base = pid.to(tl.int64)
    xo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    zq2 = tl.sum(tl.load(partq_ptr + base * S * D + rs[:, None] * D + rd[None, :]), axis=0)
    zc_o, rstd_o = vec_ln_stats(zq2 + tl.load(bt_ptr + base * D + rd), D, eps)
    ln_w = tl.load(lnw_ptr + hi * D + rd).to(tl.float32)
    ln_b = tl.load(lnb_ptr + hi * D + rd).to(tl.float32)
    out = tl.load(q_ptr + xo + rd).to(tl.float32) + zc_o * rstd_o * ln_w + ln_b
    tl.store(o_ptr + xo + rd, out.to(o_ptr.dtype.element_ty))
    if pid == 0:
        tl.store(off_ptr, (tl.load(off_ptr) + 1) % BS)


def ttt_mlp_step_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTMLPState,
    *,
    mini_batch_size: int = 16,
    hidden_chunk: int | None = None,
    num_warps: int | None = None,
    split: bool = True,
) -> tuple[torch.Tensor, TTTMLPState]:
    """One token: q, k, v (B, H, 1, d), eta (B, H, 1). Updates `state` in place (its tensors must be contiguous) and
    returns (out, state), like `naive.ttt_mlp_step`. No host sync: capturable in a CUDA graph.
    `split` (default): the hidden-split step, HID / hidden_chunk programs per head in three launches (see
    `_split_z2_kernel`); H200, B=16 x 32 heads, d=64, graphed: 94-101 us against 133 us for `split=False`, one program
    per head walking the hidden chunks in two passes (two launches). `hidden_chunk`: hidden units per chunk, default
    min(4d, 32) (chunks of 16 measured 120 us split); `num_warps`: 2 for the split kernels (94 us; 4 warps 101, 8
    warps 151, same run), for the one-program kernel 8 at 4d = 256, the spill-free choice in the sm_90a compiler's
    report."""
    check_args(q, token_eta, mini_batch_size)
    if not q.is_cuda and not interpreting():
        raise UserError("ttt_mlp_step impl 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    B, H, T, D = q.shape
    HID = state.W1.shape[-1]
    if T != 1:
        raise UserError(f"ttt_mlp_step takes one token, got T={T}")
    if D < 16 or D & (D - 1) or HID < 16 or HID & (HID - 1):
        raise UserError(f"ttt_mlp_step triton: head_dim={D}, hidden={HID}: both must be powers of two >= 16")
    HC = hidden_chunk or min(HID, 32)
    num_warps = num_warps or (2 if split else 8 if D * HID >= 64 * 256 else 4)
    if HC & (HC - 1) or HID % HC:
        raise UserError(f"ttt_mlp_step triton: hidden_chunk={HC} must be a power of two dividing {HID}")
    st = (state.W1, state.b1, state.W2, state.b2, state.W1_acc, state.b1_acc, state.W2_acc, state.b2_acc)
    if not all(t.is_contiguous() for t in st):
        raise UserError("the Triton step updates the state in place and needs contiguous state tensors")
    q, k, v = (x.contiguous() for x in (q, k, v))
    out = torch.empty_like(q)
    if split:
        return _split_step(
            q, k, v, eta, token_eta, ln_w, ln_b, st, state.offset, out, mini_batch_size, HC, num_warps
        ), state
    _ttt_mlp_step_kernel[(B * H,)](
        q, k, v, eta, token_eta, ln_w, ln_b, *st, state.offset, out,
        H, mini_batch_size, q.stride(0), q.stride(1), eta.stride(0), eta.stride(1), LN_EPS,
        D=D, HID=HID, HC=HC, FAST=False, num_warps=num_warps,
    )  # fmt: skip
    advance_offset_kernel[(1,)](state.offset, mini_batch_size, num_warps=1)
    return out, state


def _split_step(q, k, v, eta, token_eta, ln_w, ln_b, st, offset, out, bs, HC, num_warps) -> torch.Tensor:
    B, H, _, D = q.shape
    HID = st[0].shape[-1]
    S = HID // HC
    part = torch.empty(B * H, S, D, dtype=torch.float32, device=q.device)
    partq = torch.empty_like(part)
    bt = torch.empty(B * H, D, dtype=torch.float32, device=q.device)
    W1, b1, W2, b2 = st[:4]
    _split_z2_kernel[(B * H, S)](
        k, W1, b1, W2, b2, part, H, k.stride(0), k.stride(1), D=D, HID=HID, HC=HC, FAST=False, num_warps=num_warps
    )
    _split_update_kernel[(B * H, S)](
        q, k, v, eta, token_eta, ln_w, ln_b, *st, offset, part, partq, bt,
        H, bs, q.stride(0), q.stride(1), eta.stride(0), eta.stride(1), LN_EPS,
        D=D, HID=HID, HC=HC, FAST=False, num_warps=num_warps,
    )  # fmt: skip
    _split_out_kernel[(B * H,)](
        q, ln_w, ln_b, partq, bt, offset, out, H, bs, q.stride(0), q.stride(1), LN_EPS, D=D, S=S, num_warps=1
    )
    return out
