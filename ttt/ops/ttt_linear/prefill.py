"""Triton forward kernel for TTT-Linear prefill: the causal mini-batch dual form in one pass.

One program per (batch, head) walks the sequence one mini-batch at a time and keeps the inner weights
W (d x d) and b (d) in registers in fp32 across mini-batches, so q/k/v/eta are read once and the output
written once; nothing per mini-batch goes to HBM (fla's two-kernel form stores one d x d state per
mini-batch, which is why it sits far above the memory floor).

Per mini-batch (rows = tokens, b = mini_batch_size, te = token_eta, eta = per-token lr):
    Z  = K W + b                          inner model on the training view
    G  = d/dZ 0.5 ||LN(Z) - (V - K)||^2   LayerNorm forward + backward, fused per row
    Zq = Q W + b - tril(te_t * eta_j * (q_t.k_j + 1)) G      (dual form; the +1 is the bias path)
    out = Q + LN(Zq)
    W <- W - te[b-1] * K^T (eta * G),  b <- b - te[b-1] * sum_j eta_j G_j   (only at a full mini-batch)
A partial mini-batch at either end is handled through the state's accumulators and offset (read on the
device, so no host sync): the head chunk (offset > 0) adds -te_t (q_t W_acc + b_acc) to Zq, and the tail
chunk writes its eta-weighted gradient sums into the accumulators instead of folding them into W.
"""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl

from ttt.errors import UserError
from ttt.ops import triton_common
from ttt.ops.common import LN_EPS, TTTLinearState, check_args, note_kernel
from ttt.ops.triton_common import (
    PRECISIONS,
    add2,
    add4,
    add7,
    dot,
    dot_acc,
    interpreting,
    load_chunk,
    load_consts,
    load_rows,
    operand,
    row_stats,
    stats_from_sums,
)


@triton.jit
def _tile_offsets(D: tl.constexpr):
    """Offsets of a row-major D x D tile."""
    r = tl.arange(0, D)
    return r[:, None] * D + r[None, :]


@triton.jit
def _ln_l2_grad(z, mu, rstd, k, v, ln_w, ln_b, D: tl.constexpr, ONE_PASS: tl.constexpr):
    """G = d/dZ 0.5 ||LN(Z) - (V - K)||^2 per row, given Z's row statistics (LayerNorm forward + backward)."""
    xhat = (z - mu[:, None]) * rstd[:, None]
    gx = (ln_w[None, :] * xhat + ln_b[None, :] - (v.to(tl.float32) - k.to(tl.float32))) * ln_w[None, :]
    if ONE_PASS:
        sg, sgx = tl.reduce((gx, gx * xhat), 1, add2)
    else:
        sg = tl.sum(gx, axis=1)
        sgx = tl.sum(gx * xhat, axis=1)
    return (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd / D)[:, None]


@triton.jit
def _ln_l2_grad_fused(z, k, v, ln_w, ln_b, D: tl.constexpr, eps):
    """_ln_l2_grad with Z's statistics and the backward's two row sums from one cross-warp reduction instead of two
    in a row on the chain: with w = ln_w, b = ln_b, y = V - K and xhat = (z - mu) rstd,
        sum gx        = rstd (sum w^2 z - mu sum w^2) + sum w b - sum w y
        sum gx xhat   = rstd^2 (sum w^2 z^2 - 2 mu sum w^2 z + mu^2 sum w^2) + rstd (sum w b z - mu sum w b)
                        - rstd (sum w y z - mu sum w y)
    so seven row sums of Z and y (one-pass, like the one-pass variance) give everything."""
    y = v.to(tl.float32) - k.to(tl.float32)
    w2 = (ln_w * ln_w)[None, :]
    wb = (ln_w * ln_b)[None, :]
    wy = ln_w[None, :] * y
    s1, s2, a1, a2, c1, c2, c3 = tl.reduce((z, z * z, w2 * z, w2 * z * z, wb * z, wy, wy * z), 1, add7)
    sw2 = tl.sum(ln_w * ln_w, axis=0)
    swb = tl.sum(ln_w * ln_b, axis=0)
    mu, rstd = stats_from_sums(s1, s2, D, eps)
    sg = rstd * (a1 - mu * sw2) + swb - c2
    sgx = rstd * rstd * (a2 - 2.0 * mu * a1 + mu * mu * sw2) + rstd * (c1 - mu * swb) - rstd * (c3 - mu * c2)
    xhat = (z - mu[:, None]) * rstd[:, None]
    gx = (ln_w[None, :] * xhat + ln_b[None, :] - y) * ln_w[None, :]
    return (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd / D)[:, None]


@triton.jit
def _grad(
    k, v, eta, t0, T, BS, ln_w, ln_b, W, bv, eps, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """eta * G for one mini-batch: the inner-loss gradient at W' (the weights at its start), LN fwd + bwd per row.
    This and the fold are the sequential chain; masked rows give zero (their LN may be degenerate)."""
    rows = tl.arange(0, BT)
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T)
    z = dot(k, W, PREC) + bv[None, :]  # k in its input dtype: no conversion when the operands are bf16
    if ONE_PASS == 2:
        g = _ln_l2_grad_fused(z, k, v, ln_w, ln_b, D, eps)
    else:
        mu, rstd = row_stats(z, D, eps, ONE_PASS)
        g = _ln_l2_grad(z, mu, rstd, k, v, ln_w, ln_b, D, ONE_PASS)
    return tl.where(valid[:, None], g * eta.to(tl.float32)[:, None], 0.0)


@triton.jit
def _store_out(q, zq, mu, rstd, o_ptr, t0, T, stride_ot, BS, live, ln_w, ln_b, FLA_RESIDUAL: tl.constexpr,
               D: tl.constexpr, BT: tl.constexpr):  # fmt: skip
    """out = q + LN(zq) of one mini-batch from its row statistics (fla's convention, residual on f_res(q): zq +
    LN(zq), only for comparing with the peer kernel); `live` masks the store off."""
    rows = tl.arange(0, BT)
    cols = tl.arange(0, D)
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T) & live
    ln_o = (zq - mu[:, None]) * rstd[:, None] * ln_w[None, :] + ln_b[None, :]
    if FLA_RESIDUAL:
        out = zq + ln_o
    else:
        out = q.to(tl.float32) + ln_o
    tl.store(o_ptr + t[:, None] * stride_ot + cols[None, :], out.to(o_ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def _output(
    q, k, eg, o_ptr, t0, T, stride_ot, BS, te, ln_w, ln_b, W, bv, Wacc, bacc, eps,
    HAS_ACC: tl.constexpr, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """Dual-form outputs of one mini-batch: q_t W_t + b_t with W_t = W' - te_t * (acc + sum_{j<=t} eta_j grad_j),
    then out = q + LN(.). Off the chain: nothing later depends on it."""
    rows = tl.arange(0, BT)
    zq = dot(q, W, PREC) + bv[None, :]
    if HAS_ACC:
        zq -= te[:, None] * (dot(q, Wacc, PREC) + bacc[None, :])
    s = dot(q, tl.trans(k), PREC) + 1.0
    a = tl.where(rows[:, None] >= rows[None, :], te[:, None] * s, 0.0)
    zq -= dot(a, eg, PREC)
    mu_o, rstd_o = row_stats(zq, D, eps, ONE_PASS)
    _store_out(q, zq, mu_o, rstd_o, o_ptr, t0, T, stride_ot, BS, True, ln_w, ln_b, FLA_RESIDUAL, D, BT)


@triton.jit
def _mini_batch_eg(
    q, k, v, eta, o_ptr, t0, T, stride_ot, BS, te, ln_w, ln_b, W, bv, Wacc, bacc, eps,
    HAS_ACC: tl.constexpr, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """One mini-batch: writes its outputs and returns eta * G."""
    Wd = operand(W, PREC)  # one conversion of W per mini-batch, shared by both products with it
    eg = _grad(k, v, eta, t0, T, BS, ln_w, ln_b, Wd, bv, eps, PREC, D, BT, ONE_PASS)
    _output(q, k, eg, o_ptr, t0, T, stride_ot, BS, te, ln_w, ln_b, Wd, bv, Wacc, bacc, eps,
            HAS_ACC, FLA_RESIDUAL, PREC, D, BT, ONE_PASS)  # fmt: skip
    return eg


@triton.jit
def _mini_batch(
    q, k, v, eta, o_ptr, t0, T, stride_ot, BS, te, ln_w, ln_b, W, bv, Wacc, bacc, eps,
    HAS_ACC: tl.constexpr, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """One mini-batch: writes its outputs and returns (K^T (eta G), sum_j eta_j G_j), the gradient sums that the
    caller folds into W, b or keeps in the accumulators."""
    eg = _mini_batch_eg(q, k, v, eta, o_ptr, t0, T, stride_ot, BS, te, ln_w, ln_b, W, bv, Wacc, bacc, eps,
                        HAS_ACC, FLA_RESIDUAL, PREC, D, BT, ONE_PASS)  # fmt: skip
    return dot(tl.trans(k), eg, PREC), tl.sum(eg, axis=0)


@triton.jit
def _full_mini_batches(
    q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last, ln_w, ln_b,
    W, bv, eps, FOLD: tl.constexpr, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr,
    BT: tl.constexpr, ONE_PASS: tl.constexpr,
):  # fmt: skip
    """The main loop over full mini-batches, each one's tiles loaded where they are used (the compiler may load v and
    q straight into the layout they are used in); returns the folded (W, b).
    FOLD (te_last != 0): the update W <- W - te_last K^T (eta G) as the MMA's own accumulate, W = W + K^T eg' with
    eg' = -te_last eta G (eta scaled: a BT-vector op), and the output path's te scaled by 1 / -te_last so that its
    product with eg' is unchanged: no D x D product tile and no D x D FMA a mini-batch."""
    if FOLD:
        eta_scale = -te_last
        te_out = te / eta_scale
    else:
        eta_scale = 1.0
        te_out = te
    for c in range(0, n_full):
        t0 = n_head + c * BS
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, stride_qt, stride_et, BS, D, BT)
        eg = _mini_batch_eg(
            q, k, v, eta.to(tl.float32) * eta_scale, o_p, t0, T, stride_ot, BS, te_out, ln_w, ln_b,
            W, bv, W, bv, eps, False, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
        )  # fmt: skip
        if FOLD:
            W = dot_acc(tl.trans(k), eg, W, PREC)
            bv += tl.sum(eg, axis=0)
        else:
            W -= te_last * dot(tl.trans(k), eg, PREC)
            bv -= te_last * tl.sum(eg, axis=0)
    return W, bv


@triton.jit
def _skewed_mini_batches(
    q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last, ln_w, ln_b,
    W, bv, eps, FOLD: tl.constexpr, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr,
    BT: tl.constexpr,
):  # fmt: skip
    """The main loop software-skewed: iteration c runs the chain of mini-batch c and finishes the outputs of c-1.
    Iteration c takes all of c's pre-LayerNorm output Zq (it needs W_c and eta*G_c) after issuing the weight update,
    and carries it (one 16 x 64 tile, not W_c); the output LayerNorm and store of c-1 sit between the chain's steps,
    and their row statistics share the chain's first cross-warp reduction. In-order issue then has independent work
    next to the chain's stalls, and the two streams share bar.syncs. Iteration 0 finishes a zero "mini-batch -1" with
    its store masked off, so that there is one loop body. One-pass LN statistics always. Returns (W, b).
    Off by default: on an H200 (bench/notes/session6.md) 17-46% slower than the plain loop at every op shape uncapped
    (246 registers, no spills) or capped at 168, although offline it has one bar.sync fewer a mini-batch."""
    rows = tl.arange(0, BT)
    if FOLD:
        eta_scale = -te_last
        te_out = te / eta_scale
    else:
        eta_scale = 1.0
        te_out = te
    causal = rows[:, None] >= rows[None, :]
    pq = tl.zeros([BT, D], dtype=q_p.dtype.element_ty)
    pzq = tl.zeros([BT, D], dtype=tl.float32)
    for c in range(0, n_full):
        t0 = n_head + c * BS
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, stride_qt, stride_et, BS, D, BT)
        valid = (rows < BS) & (t0 + rows < T)
        Wd = operand(W, PREC)
        z = dot(k, Wd, PREC) + bv[None, :]
        s1, s2, o1, o2 = tl.reduce((z, z * z, pzq, pzq * pzq), 1, add4)
        mu, rstd = stats_from_sums(s1, s2, D, eps)
        mu_o, rstd_o = stats_from_sums(o1, o2, D, eps)
        g = _ln_l2_grad(z, mu, rstd, k, v, ln_w, ln_b, D, True)
        _store_out(pq, pzq, mu_o, rstd_o, o_p, t0 - BS, T, stride_ot, BS, c > 0, ln_w, ln_b, FLA_RESIDUAL, D, BT)
        eg = tl.where(valid[:, None], g * (eta.to(tl.float32) * eta_scale)[:, None], 0.0)
        zq = dot(q, Wd, PREC) + bv[None, :]
        if FOLD:
            W = dot_acc(tl.trans(k), eg, W, PREC)
            bv += tl.sum(eg, axis=0)
        else:
            W -= te_last * dot(tl.trans(k), eg, PREC)
            bv -= te_last * tl.sum(eg, axis=0)
        a = tl.where(causal, te_out[:, None] * (dot(q, tl.trans(k), PREC) + 1.0), 0.0)
        pzq = zq - dot(a, eg, PREC)
        pq = q
    if n_full > 0:  # the last mini-batch's outputs
        mu_o, rstd_o = row_stats(pzq, D, eps, True)
        _store_out(pq, pzq, mu_o, rstd_o, o_p, n_head + (n_full - 1) * BS, T, stride_ot, BS, True, ln_w, ln_b,
                   FLA_RESIDUAL, D, BT)  # fmt: skip
    return W, bv


@triton.jit
def _lookahead_mini_batches(
    q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last, ln_w, ln_b,
    W, bv, eps, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """The main loop with the weight update one mini-batch behind the chain (folded update, te_last != 0 only).
    With eg' = -te_last eta G and W_c = W_{c-1} + K_{c-1}^T eg'_{c-1} (b likewise), mini-batch c needs
        Z_c  = K_c W_{c-1} + b_{c-1} + (K_c K_{c-1}^T + 1) eg'_{c-1}
        Zq_c = Q_c W_{c-1} + b_{c-1} + (Q_c K_{c-1}^T + 1) eg'_{c-1} - tril(te' (Q_c K_c^T + 1)) eg'_c
    so the sequential chain from eg'_{c-1} to eg'_c is one K = 16 product and the LayerNorm forward + backward: the
    D x D update, W's conversion to an MMA operand and the K = D product K_c W_{c-1} all depend only on the
    mini-batch before, and sit beside the chain instead of on it. Iteration c carries W_{c-1}, K_{c-1} and
    eg'_{c-1} (a zero mini-batch -1 at c = 0, so one loop body) and folds the last update after the loop."""
    rows = tl.arange(0, BT)
    eta_scale = -te_last
    te_out = te / eta_scale
    causal = rows[:, None] >= rows[None, :]
    pk = tl.zeros([BT, D], dtype=k_p.dtype.element_ty)
    peg = tl.zeros([BT, D], dtype=tl.float32)
    for c in range(0, n_full):
        t0 = n_head + c * BS
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, stride_qt, stride_et, BS, D, BT)
        valid = (rows < BS) & (t0 + rows < T)
        Wd = operand(W, PREC)
        pegd = operand(peg, PREC)
        z = dot_acc(dot(k, tl.trans(pk), PREC) + 1.0, pegd, dot(k, Wd, PREC) + bv[None, :], PREC)
        mu, rstd = row_stats(z, D, eps, ONE_PASS)
        g = _ln_l2_grad(z, mu, rstd, k, v, ln_w, ln_b, D, ONE_PASS)
        eg = tl.where(valid[:, None], g * (eta.to(tl.float32) * eta_scale)[:, None], 0.0)
        zq = dot_acc(dot(q, tl.trans(pk), PREC) + 1.0, pegd, dot(q, Wd, PREC) + bv[None, :], PREC)
        a = tl.where(causal, te_out[:, None] * (dot(q, tl.trans(k), PREC) + 1.0), 0.0)
        zq -= dot(a, eg, PREC)
        mu_o, rstd_o = row_stats(zq, D, eps, ONE_PASS)
        _store_out(q, zq, mu_o, rstd_o, o_p, t0, T, stride_ot, BS, True, ln_w, ln_b, FLA_RESIDUAL, D, BT)
        W = dot_acc(tl.trans(pk), pegd, W, PREC)
        bv += tl.sum(peg, axis=0)
        pk = k
        peg = eg
    W = dot_acc(tl.trans(pk), peg, W, PREC)
    bv += tl.sum(peg, axis=0)
    return W, bv


@triton.jit
def _pipelined_mini_batches(
    q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last, ln_w, ln_b,
    W, bv, eps, FLA_RESIDUAL: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
    ONE_PASS: tl.constexpr,
):  # fmt: skip
    """The lookahead loop software-pipelined (folded update, te_last != 0 only): iteration c finishes the chain of
    mini-batch c from Zk_c = K_c W_{c-1} + b_{c-1}, computed one iteration earlier, as
        Z_c = Zk_c + (K_c K_{c-1}^T + 1) eg'_{c-1}
    and then, beside the chain, folds eg'_{c-1} into W (W_c), writes c's outputs with W_c, and computes Zk_{c+1} =
    K_{c+1} W_c + b_c. The loop-carried chain is then one K = 16 product and the LayerNorm forward + backward; the
    fold, W's conversion to an operand and the K = D product span two iterations. Carries W_{c-1}, b_{c-1},
    eg'_{c-1} and Zk_c (a zero mini-batch -1 at c = 0); returns (W, b). Offline (sm_90a, uncapped): 244 registers,
    737 instructions a warp and mini-batch, 17 bar.sync (the plain loop 243 / 660 / 15)."""
    rows = tl.arange(0, BT)
    eta_scale = -te_last
    te_out = te / eta_scale
    peg = tl.zeros([BT, D], dtype=tl.float32)
    zk = dot(load_rows(k_p, n_head, T, stride_qt, BS, D, BT), operand(W, PREC), PREC) + bv[None, :]
    for c in range(0, n_full):
        t0 = n_head + c * BS
        # The neighbours' k tiles are loaded again (L2 hits) rather than carried: a carried tile is converted
        # through shared memory into each layout it is used in (27 bar.sync a mini-batch offline instead of 19).
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, stride_qt, stride_et, BS, D, BT)
        pk = load_rows(k_p, t0 - BS, T, stride_qt, BS, D, BT)
        nk = load_rows(k_p, t0 + BS, T, stride_qt, BS, D, BT)
        valid = (rows < BS) & (t0 + rows < T)
        pegd = operand(peg, PREC)
        z = dot_acc(dot(k, tl.trans(pk), PREC) + 1.0, pegd, zk, PREC)
        mu, rstd = row_stats(z, D, eps, ONE_PASS)
        g = _ln_l2_grad(z, mu, rstd, k, v, ln_w, ln_b, D, ONE_PASS)
        eg = tl.where(valid[:, None], g * (eta.to(tl.float32) * eta_scale)[:, None], 0.0)
        W = dot_acc(tl.trans(pk), pegd, W, PREC)
        bv += tl.sum(peg, axis=0)
        Wd = operand(W, PREC)
        zk = dot(nk, Wd, PREC) + bv[None, :]
        _output(q, k, eg, o_p, t0, T, stride_ot, BS, te_out, ln_w, ln_b, Wd, bv, Wd, bv, eps,
                False, FLA_RESIDUAL, PREC, D, BT, ONE_PASS)  # fmt: skip
        peg = eg
    W = dot_acc(tl.trans(load_rows(k_p, n_head + (n_full - 1) * BS, T, stride_qt, BS, D, BT)), peg, W, PREC)
    bv += tl.sum(peg, axis=0)
    return W, bv


@triton.jit
def _ttt_linear_prefill_kernel(
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
    Wo_ptr,
    bo_ptr,
    Wacco_ptr,
    bacco_ptr,
    T,
    H,
    BS,
    stride_qb,
    stride_qh,
    stride_qt,
    stride_eb,
    stride_eh,
    stride_et,
    stride_ob,
    stride_oh,
    stride_ot,
    eps,
    FLA_RESIDUAL: tl.constexpr,
    PREC: tl.constexpr,
    SKEW: tl.constexpr,
    ONE_PASS: tl.constexpr,
    PREFETCH: tl.constexpr,
    MMA_FOLD: tl.constexpr,
    LOOKAHEAD: tl.constexpr,
    D: tl.constexpr,
    BT: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    cols = tl.arange(0, D)
    wofs = pid.to(tl.int64) * D * D + _tile_offsets(D)
    vofs = pid.to(tl.int64) * D + cols

    qo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    q_p = q_ptr + qo
    k_p = k_ptr + qo
    v_p = v_ptr + qo
    e_p = eta_ptr + bi.to(tl.int64) * stride_eb + hi.to(tl.int64) * stride_eh
    o_p = o_ptr + bi.to(tl.int64) * stride_ob + hi.to(tl.int64) * stride_oh

    ln_w, ln_b, te, te_last = load_consts(lnw_ptr, lnb_ptr, te_ptr, hi, BS, D, BT)
    W = tl.load(W_ptr + wofs).to(tl.float32)
    bv = tl.load(b_ptr + vofs).to(tl.float32)

    o0 = tl.load(off_ptr).to(tl.int32)  # tokens of the current mini-batch already consumed (read on the device)
    # Head chunk: finish the partial mini-batch the state started in (rows o0..BS-1 map to t = 0..).
    n_head = o0 * 0  # a tensor, so both branches of the runtime `if` agree on its type
    if o0 > 0:
        Wacc = tl.load(Wacc_ptr + wofs).to(tl.float32)
        bacc = tl.load(bacc_ptr + vofs).to(tl.float32)
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, -o0, T, stride_qt, stride_et, BS, D, BT)
        dW, db = _mini_batch(
            q, k, v, eta, o_p, -o0, T, stride_ot, BS, te, ln_w, ln_b,
            W, bv, Wacc, bacc, eps, True, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
        )  # fmt: skip
        n_head = tl.minimum(BS - o0, T)
        Wacc += dW
        bacc += db
        if o0 + T >= BS:  # the mini-batch completes: fold it into W, b
            W -= te_last * Wacc
            bv -= te_last * bacc
        else:  # it stays open (then nothing follows): its sums are the output accumulators
            tl.store(Wacco_ptr + wofs, Wacc.to(Wacco_ptr.dtype.element_ty))
            tl.store(bacco_ptr + vofs, bacc.to(bacco_ptr.dtype.element_ty))
    # From here on the accumulators are zero until a ragged tail, so no D x D tile of them is live across the loop
    # (it took 32 registers a thread in the main loop). The main loop's calls have HAS_ACC=False and ignore them.
    Wacc = W
    bacc = bv

    # Full mini-batches: the sequential chain, one fold per mini-batch. With PREFETCH the next mini-batch's tiles are
    # loaded before this one's math (register double buffering); without it (default) each is loaded where it is
    # used, and the compiler places v and q in their use layouts directly: 15 bar.sync a mini-batch instead of 23
    # offline (sm_90a), 3-7% faster on an H200 where the register cap applies (bench/notes/session5.md).
    n_full = (T - n_head) // BS
    if PREFETCH:  # the first mini-batch's tiles, ahead of the loop
        nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, n_head, T, stride_qt, stride_et, BS, D, BT)
    if SKEW:
        if te_last != 0:
            W, bv = _skewed_mini_batches(
                q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
                ln_w, ln_b, W, bv, eps, MMA_FOLD, FLA_RESIDUAL, PREC, D, BT,
            )  # fmt: skip
        else:
            W, bv = _skewed_mini_batches(
                q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
                ln_w, ln_b, W, bv, eps, False, FLA_RESIDUAL, PREC, D, BT,
            )  # fmt: skip
    elif PREFETCH:
        for c in range(0, n_full):
            t0 = n_head + c * BS
            q, k, v, eta = nq, nk, nv, ne
            nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, t0 + BS, T, stride_qt, stride_et, BS, D, BT)
            dW, db = _mini_batch(
                q, k, v, eta, o_p, t0, T, stride_ot, BS, te, ln_w, ln_b,
                W, bv, Wacc, bacc, eps, False, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
            )  # fmt: skip
            W -= te_last * dW
            bv -= te_last * db
    elif (LOOKAHEAD > 0 or MMA_FOLD) and te_last != 0:
        # a zero te_last (no update) cannot be folded into the scale: the plain loop below takes it
        if LOOKAHEAD == 2:
            W, bv = _pipelined_mini_batches(
                q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
                ln_w, ln_b, W, bv, eps, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
            )  # fmt: skip
        elif LOOKAHEAD == 1:
            W, bv = _lookahead_mini_batches(
                q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
                ln_w, ln_b, W, bv, eps, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
            )  # fmt: skip
        else:
            W, bv = _full_mini_batches(
                q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
                ln_w, ln_b, W, bv, eps, True, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
            )  # fmt: skip
    else:
        W, bv = _full_mini_batches(
            q_p, k_p, v_p, e_p, o_p, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, te, te_last,
            ln_w, ln_b, W, bv, eps, False, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
        )  # fmt: skip

    # Ragged tail (with PREFETCH its tiles are the last prefetch): its gradient sums go to the accumulators.
    t_tail = n_head + n_full * BS
    if t_tail < T:
        if not PREFETCH:
            nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, t_tail, T, stride_qt, stride_et, BS, D, BT)
        dW, db = _mini_batch(
            nq, nk, nv, ne, o_p, t_tail, T, stride_ot, BS, te, ln_w, ln_b,
            W, bv, Wacc, bacc, eps, False, FLA_RESIDUAL, PREC, D, BT, ONE_PASS,
        )  # fmt: skip
        tl.store(Wacco_ptr + wofs, dW.to(Wacco_ptr.dtype.element_ty))
        tl.store(bacco_ptr + vofs, db.to(bacco_ptr.dtype.element_ty))
    if (t_tail >= T) & ((o0 == 0) | (o0 + T >= BS)):  # no open mini-batch at the end
        tl.store(Wacco_ptr + wofs, tl.zeros([D, D], dtype=Wacco_ptr.dtype.element_ty))
        tl.store(bacco_ptr + vofs, tl.zeros([D], dtype=bacco_ptr.dtype.element_ty))

    tl.store(Wo_ptr + wofs, W.to(Wo_ptr.dtype.element_ty))
    tl.store(bo_ptr + vofs, bv.to(bo_ptr.dtype.element_ty))


# The Triton kernel's own knobs: set to anything but ttt_linear_prefill's default, they keep "auto" on that kernel
TRITON_KNOBS = ("num_warps", "num_stages", "skew", "one_pass_ln", "prefetch", "mma_fold", "lookahead", "fused_ln_grad")


def resolve_backend(
    backend: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: tuple[torch.Tensor, ...],
    mini_batch_size: int,
    precision: str,
    triton_knobs: dict | None = None,
) -> str:
    """The kernel that runs for `backend` on these inputs: "gluon" or "triton" (see ttt_linear_prefill)."""
    tuned = sorted(k_ for k_, v_ in (triton_knobs or {}).items() if _TRITON_KNOB_DEFAULTS[k_] != v_)
    return triton_common.resolve_backend(
        backend, q, "ttt.ops.ttt_linear.prefill_gluon",
        lambda m: m.unsupported(q, k, v, state, mini_batch_size, precision), tuned,
    )  # fmt: skip


# Measured on an H200 (bench/notes/session4.md, op shape (a)): capped at 168 registers the kernel spills a little
# (~20 local loads and stores per mini-batch) but three programs fit on an SM instead of two: 5% faster at T = 1k and
# 2k (2,048 and 1,024 programs), 10% slower at T = 8k (256 programs: no third program to run). With fewer than a few
# waves the last one runs nearly alone at the slower per-program speed, so the cap needs CAP_MIN_WAVES full waves.
CAP_REGS, CAP_MIN_WAVES = 168, 2


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def auto_maxnreg(q: torch.Tensor, programs: int, D: int, skew: bool) -> int:
    """The register cap for a launch: CAP_REGS where the grid fills CAP_MIN_WAVES waves of three programs on every SM
    at d = 64 (the measured case), else 0 (none)."""
    if skew or D != 64 or not q.is_cuda:
        return 0
    return CAP_REGS if programs >= CAP_MIN_WAVES * 3 * _sm_count(q.device) else 0


def ttt_linear_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    W_acc: torch.Tensor,
    b_acc: torch.Tensor,
    offset: torch.Tensor,
    *,
    mini_batch_size: int = 16,
    eps: float = 1e-6,
    precision: str = "tf32",
    fla_residual: bool = False,
    num_warps: int = 4,
    num_stages: int | None = None,
    maxnreg: int | None = None,
    skew: bool = False,
    one_pass_ln: bool = True,
    prefetch: bool = False,
    mma_fold: bool = True,
    lookahead: int = 0,
    fused_ln_grad: bool = False,
    backend: str = "auto",
    bar1: bool = True,
    nbuf: int = 3,
    early: bool = False,
    defer_out: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tensor-level entry: returns (out, W, b, W_acc, b_acc, offset), the state as new tensors.

    q, k, v: (B, H, T, d), d a power of two >= 16; eta: (B, H, T); token_eta: (mini_batch_size,);
    ln_w, ln_b: (H, d); W, W_acc: (B, H, d, d); b, b_acc: (B, H, d); offset: 0-dim int64 on q's device.
    `precision`: matmul operands in "ieee" fp32, "tf32" or "bf16" (fp32 accumulation and fp32 state always).
    `maxnreg`: None picks it from the grid (`auto_maxnreg`), 0 launches without a cap. `prefetch`: load the next
    mini-batch's tiles one iteration early (off by default: slower on an H200). `mma_fold`: the main loop's weight
    update as the MMA's accumulate (see the kernel) instead of a product tile and a D x D FMA (default: 3-6% faster
    on an H200 at every op shape, bench/notes/session5.md). `lookahead`: 1 or 2 runs the weight update one
    mini-batch behind the chain (2 software-pipelined; both slower on an H200, bench/notes/session7.md).
    `fused_ln_grad`: LayerNorm statistics and the backward's row sums from one reduction (slower on an H200).
    `backend`: "triton" (this kernel), "gluon" (prefill_gluon.py: bf16 q/k/v, d = 64, mini-batch 16, bf16
    operands, float32 state, CUDA; 14-25% faster on an H200), or "auto": gluon where it applies and no Triton-only
    knob is set, else triton (`resolve_backend` says which, for result rows). `bar1`, `nbuf`, `early`, `defer_out`: the
    Gluon kernel's one-barrier row sums, q/k/v ring depth, off-chain products' placement, and output LayerNorm one
    mini-batch late (prefill_gluon.launch).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {PRECISIONS}")
    B, H, T, D = q.shape
    if D < 16 or D & (D - 1):
        raise ValueError(f"head_dim={D}: the Triton kernel needs a power of two >= 16")
    if not (k.shape == v.shape == q.shape and eta.shape == (B, H, T)):
        raise ValueError(f"shapes q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)} eta{tuple(eta.shape)} disagree")
    if token_eta.numel() != mini_batch_size:
        raise ValueError(f"token_eta has {token_eta.numel()} entries, mini_batch_size={mini_batch_size}")
    # The kernel takes q, k, v with one set of strides and a unit last stride: views that already share them (the
    # fused layer path's (B, H, T, d) views of one (3, B, T, W) buffer) go in without a copy; `out` follows q's
    # layout (empty_like keeps a dense view's strides), the kernel takes its strides separately.
    if not (q.stride() == k.stride() == v.stride() and q.stride(-1) == 1):
        q, k, v = (x.contiguous() for x in (q, k, v))
    W, b, W_acc, b_acc = (x.contiguous() for x in (W, b, W_acc, b_acc))
    out = torch.empty_like(q)
    Wo, bo, Wao, bao = (torch.empty_like(x) for x in (W, b, W_acc, b_acc))
    triton_knobs = dict(num_warps=num_warps, num_stages=num_stages, skew=skew, one_pass_ln=one_pass_ln,
                        prefetch=prefetch, mma_fold=mma_fold, lookahead=lookahead,
                        fused_ln_grad=fused_ln_grad)  # fmt: skip
    chosen = resolve_backend(backend, q, k, v, (W, b, W_acc, b_acc), mini_batch_size, precision, triton_knobs)
    note_kernel(f"ttt_linear_prefill/{chosen}")
    if maxnreg is None:
        maxnreg = auto_maxnreg(q, B * H, D, skew)  # the Gluon kernel takes the same rule (session 8, run 3)
    if not (B * H and T):  # nothing to process: the state passes through unchanged
        Wo.copy_(W), bo.copy_(b), Wao.copy_(W_acc), bao.copy_(b_acc)
    elif chosen == "gluon":
        from ttt.ops.ttt_linear import prefill_gluon

        prefill_gluon.launch(
            q, k, v, eta, token_eta, ln_w, ln_b, W, b, W_acc, b_acc, offset, out, Wo, bo, Wao, bao,
            eps=eps, fla_residual=fla_residual, maxnreg=maxnreg, bar1=bar1, nbuf=nbuf, early=early,
            defer_out=defer_out,
        )  # fmt: skip
    else:
        BT = max(16, triton.next_power_of_2(mini_batch_size))  # tl.dot needs >= 16 rows; extra rows are masked
        # Tuning knobs go to the launch only when set (the interpreter rejects some of them).
        launch = {k: v for k, v in (("num_stages", num_stages), ("maxnreg", maxnreg or None)) if v is not None}
        _ttt_linear_prefill_kernel[(B * H,)](
            q, k, v, eta, token_eta.contiguous(), ln_w.contiguous(), ln_b.contiguous(),
            W, b, W_acc, b_acc, offset, out, Wo, bo, Wao, bao,
            T, H, mini_batch_size,
            q.stride(0), q.stride(1), q.stride(2),
            eta.stride(0), eta.stride(1), eta.stride(2),
            out.stride(0), out.stride(1), out.stride(2),
            eps,
            FLA_RESIDUAL=fla_residual, PREC=precision, SKEW=skew, ONE_PASS=2 if fused_ln_grad else one_pass_ln, PREFETCH=prefetch, MMA_FOLD=mma_fold, LOOKAHEAD=lookahead, D=D, BT=BT, num_warps=num_warps, **launch,
        )  # fmt: skip
    new_offset = (offset + T) % mini_batch_size  # on the device: no host sync
    return out, Wo, bo, Wao, bao, new_offset


_TRITON_KNOB_DEFAULTS = {n: inspect.signature(ttt_linear_prefill).parameters[n].default for n in TRITON_KNOBS}


def ttt_linear_triton(
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
    precision: str = "bf16",
    **tuning: int | bool | None,
) -> tuple[torch.Tensor, TTTLinearState]:
    """The reference signature (docs/interfaces.md): returns (out, new state); the input state is untouched.

    Any T and any input offset (a partial mini-batch on entry is finished through the state's accumulators),
    so there is no fallback path. The state keeps its dtype (fp64 states are computed in fp32 on chip).
    precision: matmul operands, "bf16" (default: fastest; rel. err ~4e-3 vs the fp32 reference on an H100,
    bench/notes), "tf32" (~1.7e-3) or "ieee". tuning: num_warps, num_stages, maxnreg, skew, one_pass_ln
    (see ttt_linear_prefill; the defaults are the fastest measured)."""
    check_args(q, token_eta, mini_batch_size)
    if not q.is_cuda and not interpreting():
        raise UserError("ttt_linear impl 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    out, W, b, W_acc, b_acc, offset = ttt_linear_prefill(
        q, k, v, eta, token_eta, ln_w, ln_b, state.W, state.b, state.W_acc, state.b_acc, state.offset,
        mini_batch_size=mini_batch_size, eps=LN_EPS, precision=precision, **tuning,
    )  # fmt: skip
    return out, TTTLinearState(W=W, b=b, W_acc=W_acc, b_acc=b_acc, offset=offset)
