"""Triton forward kernel for TTT-MLP prefill: the causal mini-batch dual form in one pass over the sequence.

One program per (batch, head) walks the sequence one mini-batch at a time, like the TTT-Linear kernel, and keeps the
inner weights on chip in fp32 across mini-batches. At d = 64, W1 (d x 4d) and W2 (4d x d) are 128 KB: half an SM's
register file, so the program runs 8 warps (the state is 128 registers of each thread) and one program per SM.
Re-reading the state from L2 each mini-batch instead would cost ~384 KB of L2 traffic per mini-batch and program,
~7 ms of L2 bandwidth at the benchmark shape, three times the time budget. bench/notes/ttt_mlp_triton.md has the
numbers and the variants tried.

Per mini-batch (rows = tokens, primes = weights at its start, te = token_eta, eg = eta-scaled gradient rows):
    Z1 = K W1' + b1',  X2 = gelu(Z1),  Z2 = X2 W2' + b2'
    eg2 = eta * d/dZ2 0.5 ||LN(Z2) - (V - K)||^2,  eg1 = (eg2 W2'^T) * gelu'(Z1)             (the sequential chain)
    W1 <- W1' - te[b-1] K^T eg1,  b1 <- b1' - te[b-1] sum eg1,  W2 <- W2' - te[b-1] X2^T eg2,  b2 likewise
    Zq1 = Q W1' + b1' - tril(te_i (q_i.k_j + 1)) eg1       (the +1 is the bias path of the augmented form)
    Xq2 = gelu(Zq1),  Zq2 = Xq2 W2 + b2 + ((te[b-1] - te_i [j <= i]) (xq2_i.x2_j + 1)) eg2,  out = Q + LN(Zq2)
The second layer's output is written with the updated W2, b2 (adding back the whole mini-batch's update and taking
off each token's share), so no copy of the old W2 stays alive: registers are this kernel's limit.

Layout: W1^T and W2 are both held (4d x d), hidden units along M, so the products with them are hidden-major
((4d x d) @ (d x tokens): M = 256, wgmma with the state as the A operand straight from registers); the contractions
over the hidden units (X2 W2, Xq2 W2, Xq2 X2^T; M = 16 tokens, mma.sync) are split into `hidden_chunks` K-chunks.
A partial mini-batch at either end goes through the accumulators, the offset read on the device (no host sync): a
first launch finishes the input state's partial mini-batch (a no-op at offset 0), the second runs the rest and a
ragged tail, whose gradient sums become the output accumulators.
"""

from __future__ import annotations

import inspect

import torch
import triton
import triton.language as tl

from ttt.errors import UserError
from ttt.ops import triton_common
from ttt.ops.common import LN_EPS, TTTMLPState, check_args, note_kernel
from ttt.ops.triton_common import (
    PRECISIONS,
    add2,
    dot,
    dot_acc,
    interpreting,
    load_chunk,
    load_consts,
    operand,
    row_stats,
)

# ttt_mlp_prefill's register-pressure knobs -> the kernel's constexprs (bench/notes/ttt_mlp_spills_compile.py)
KNOB_CONSTS = {"late_zq1": "LQ1", "dz_bf16": "DZ16", "reload_consts": "RELOAD", "lazy_offsets": "LAZY_OFS"}

# MODE of `_mini_batch` (passed as literals 0 / 1 / 2 in the kernel): a whole mini-batch folded into the weights (the
# hot loop), the head chunk that finishes the input state's partial mini-batch (reads the accumulators), a ragged
# tail (writes them).


@triton.jit
def _tanh(x, FAST: tl.constexpr):
    if FAST:
        # One MUFU instruction (max rel. err ~2^-11, under the bf16 operand rounding); GPU only, hence a knob.
        return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)
    else:
        e = tl.exp(-2.0 * tl.abs(x))  # never overflows
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x >= 0, t, -t)


# GELU-tanh constants (as in ttt.ops.common): c0 = sqrt(2/pi), c1 = 0.044715; folded so each line is one FMA.
_C0 = tl.constexpr(0.7978845608028654)
_C0C1 = tl.constexpr(0.7978845608028654 * 0.044715)
_3C0C1 = tl.constexpr(3.0 * 0.7978845608028654 * 0.044715)


@triton.jit
def gelu_tanh(x, FAST: tl.constexpr):
    t = _tanh(x * (_C0C1 * (x * x) + _C0), FAST)
    h = 0.5 * x
    return h * t + h


@triton.jit
def gelu_tanh_fwd_bwd(x, FAST: tl.constexpr):
    """(gelu(x), gelu'(x)) sharing one tanh: gelu' = 0.5 (1 + t) + 0.5 x (1 - t^2) (c0 + 3 c0 c1 x^2)."""
    x2 = x * x
    t = _tanh(x * (_C0C1 * x2 + _C0), FAST)
    h = 0.5 * x
    dy = 0.5 * t + ((h * (1.0 - t * t)) * (_3C0C1 * x2 + _C0) + 0.5)
    return h * t + h, dy


@triton.jit
def ln_l2_grad(z, tgt, ln_w, ln_b, D: tl.constexpr, eps, ONE_PASS: tl.constexpr):
    """Rows of d/dz 0.5 ||LN(z) - tgt||^2 (LayerNorm forward + backward fused per row)."""
    mu, rstd = row_stats(z, D, eps, ONE_PASS)
    xhat = (z - mu[:, None]) * rstd[:, None]
    gx = (ln_w[None, :] * xhat + ln_b[None, :] - tgt) * ln_w[None, :]
    if ONE_PASS:
        sg, sgx = tl.reduce((gx, gx * xhat), 1, add2)
    else:
        sg = tl.sum(gx, axis=1)
        sgx = tl.sum(gx * xhat, axis=1)
    return (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd / D)[:, None]


@triton.jit
def _mini_batch(
    q, k, v, eta, o_ptr, t0, T, stride_ot, BS, te, te_last, ln_w, ln_b, W1T, b1, W2, b2,
    W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr, W2ao_ptr, b2ao_ptr,
    w1tofs, b1ofs, w2ofs, b2ofs, fold, eps,
    MODE: tl.constexpr, PREC: tl.constexpr, FAST: tl.constexpr, ONE_PASS: tl.constexpr, HCH: tl.constexpr,
    D: tl.constexpr, BT: tl.constexpr, LQ1: tl.constexpr = False, DZ16: tl.constexpr = False,
):  # fmt: skip
    """One mini-batch (or a partial one): stores its outputs, returns (W1^T, b1, W2, b2) after it.

    Layout: the state is held as W1^T and W2, both (4d x d), hidden units along M, and the products with them are
    hidden-major ((4d x d) @ (d x tokens): M = 256 rows, wgmma on Hopper with the state as the A operand straight
    from registers); the contractions over the hidden units (X2 W2, X2 Xq2^T) are token-major (`_hid_dot`).
    Registers are the limit (the state is 128 of them a thread at 8 warps), so the weight update comes before the
    outputs and the outputs are written in terms of the updated weights (see `cf` below): no old copy stays alive.

    MODE 0 (full) folds the gradient sums into the weights; 1 (head) adds the input accumulators (W*a_ptr) and folds
    when `fold` (the mini-batch closes), else writes the state (W*o_ptr) and the new accumulators (W*ao_ptr); 2
    (tail) writes them likewise. Input accumulators are read from memory where used, never held across the main loop."""
    rows = tl.arange(0, BT)
    cols = tl.arange(0, D)
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T)
    LATE: tl.constexpr = LQ1 and MODE != 1  # Zq1 from the updated W1 (knob late_zq1; the head chunk: never)
    W1Td = operand(W1T, PREC)
    kT = tl.trans(k)
    qT = tl.trans(q)
    z1T = dot(W1Td, kT, PREC) + b1[:, None]
    if not LATE:
        zq1T = dot(W1Td, qT, PREC) + b1[:, None]  # with the old W1 here: no copy of it needed later
    if MODE == 1:  # W_t = W' - te_t (acc + ...): the input accumulators' share of the first layer
        zq1T -= te[None, :] * (dot(_load_f32(W1a_ptr, w1tofs), qT, PREC) + _load_f32(b1a_ptr, b1ofs)[:, None])

    # The chain: gradients at the mini-batch-start weights.
    x2T, dz1T = gelu_tanh_fwd_bwd(z1T, FAST)
    x2T = operand(x2T, PREC)  # X2^T only ever enters matmuls
    if DZ16:  # gelu'(Z1) kept in the operand precision across the chain (half the registers at bf16)
        dz1T = operand(dz1T, PREC)
    z2 = _hid_dot(x2T, operand(W2, PREC), PREC, HCH) + b2[None, :]
    g2 = ln_l2_grad(z2, v.to(tl.float32) - k.to(tl.float32), ln_w, ln_b, D, eps, ONE_PASS)
    eg2 = tl.where(valid[:, None], g2 * eta.to(tl.float32)[:, None], 0.0)  # masked tokens: exactly zero
    eg2d = operand(eg2, PREC)
    eg1T = dot(operand(W2, PREC), tl.trans(eg2d), PREC) * dz1T.to(tl.float32)  # eta * G1^T (columns are linear in eta)
    db1 = tl.sum(eg1T, axis=1)
    db2 = tl.sum(eg2, axis=0)
    eg1Td = operand(eg1T, PREC)

    # The update (in place: W1^T -= te_last eg1^T K, W2 -= te_last X2^T eg2). cf = te_last when it happened: the
    # outputs below then add back te_last * (all sums) and subtract te_t * (sums up to t).
    cf = te_last * 0.0
    if MODE == 0:
        W1T = dot_acc(eg1Td, k.to(tl.float32) * -te_last, W1T, PREC)
        W2 = dot_acc(x2T, eg2 * -te_last, W2, PREC)
        b1 -= te_last * db1
        b2 -= te_last * db2
        cf = te_last
    if MODE == 1:
        if fold:
            W1T = dot_acc(eg1Td, k.to(tl.float32) * -te_last, W1T, PREC) - te_last * _load_f32(W1a_ptr, w1tofs)
            W2 = dot_acc(x2T, eg2 * -te_last, W2, PREC) - te_last * _load_f32(W2a_ptr, w2ofs)
            b1 -= te_last * (db1 + _load_f32(b1a_ptr, b1ofs))
            b2 -= te_last * (db2 + _load_f32(b2a_ptr, b2ofs))
            cf = te_last

    # Outputs (off the chain). a1T[j, i] = te_i (q_i . k_j + 1) for j <= i (old W1, as zq1T).
    if LATE:
        # Zq1 = Q W1' + b1' - tril(te_i (q_i.k_j + 1)) eg1 in terms of the new W1 = W1' - cf K^T eg1, b1 likewise
        # (as Zq2 below): a1T[j, i] = (cf - te_i [j <= i]) (q_i . k_j + 1); the old W1's copy and Zq1 need not
        # stay alive across the chain.
        c1T = cf - tl.where(rows[None, :] >= rows[:, None], te[None, :], 0.0)
        zq1T = dot(operand(W1T, PREC), qT, PREC) + b1[:, None] + dot(eg1Td, c1T * (dot(k, qT, PREC) + 1.0), PREC)
    else:
        a1T = tl.where(rows[None, :] >= rows[:, None], te[None, :] * (dot(k, qT, PREC) + 1.0), 0.0)
        zq1T -= dot(eg1Td, a1T, PREC)
    xq2T = operand(gelu_tanh(zq1T, FAST), PREC)
    c2 = cf - tl.where(rows[:, None] >= rows[None, :], te[:, None], 0.0)  # c2[i, j] = cf - te_i [j <= i]
    a2 = c2 * (_gram(xq2T, x2T, PREC, HCH) + 1.0)
    zq2 = _hid_dot(xq2T, operand(W2, PREC), PREC, HCH) + b2[None, :] + dot(a2, eg2d, PREC)
    if MODE == 1:
        acc2 = _hid_dot(xq2T, _load_f32(W2a_ptr, w2ofs), PREC, HCH) + _load_f32(b2a_ptr, b2ofs)[None, :]
        zq2 += (cf - te)[:, None] * acc2
    mu, rstd = row_stats(zq2, D, eps, ONE_PASS)
    out = q.to(tl.float32) + (zq2 - mu[:, None]) * rstd[:, None] * ln_w[None, :] + ln_b[None, :]
    tl.store(o_ptr + t[:, None] * stride_ot + cols[None, :], out.to(o_ptr.dtype.element_ty), mask=valid[:, None])

    # A mini-batch left open: the weights are final, written first (their registers then hold the sums).
    if MODE == 1:
        if not fold:
            _store_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1T, b1, W2, b2, w1tofs, b1ofs, w2ofs, b2ofs)
            tl.store(W1ao_ptr + w1tofs, dot_acc(eg1Td, k, _load_f32(W1a_ptr, w1tofs), PREC))
            tl.store(W2ao_ptr + w2ofs, dot_acc(x2T, eg2d, _load_f32(W2a_ptr, w2ofs), PREC))
            tl.store(b1ao_ptr + b1ofs, db1 + _load_f32(b1a_ptr, b1ofs))
            tl.store(b2ao_ptr + b2ofs, db2 + _load_f32(b2a_ptr, b2ofs))
    if MODE == 2:
        _store_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1T, b1, W2, b2, w1tofs, b1ofs, w2ofs, b2ofs)
        tl.store(W1ao_ptr + w1tofs, dot(eg1Td, k, PREC))
        tl.store(W2ao_ptr + w2ofs, dot(x2T, eg2d, PREC))
        tl.store(b1ao_ptr + b1ofs, db1)
        tl.store(b2ao_ptr + b2ofs, db2)
    return W1T, b1, W2, b2


@triton.jit
def _store_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1T, b1, W2, b2, w1tofs, b1ofs, w2ofs, b2ofs):
    tl.store(W1o_ptr + w1tofs, W1T.to(W1o_ptr.dtype.element_ty))
    tl.store(b1o_ptr + b1ofs, b1.to(b1o_ptr.dtype.element_ty))
    tl.store(W2o_ptr + w2ofs, W2.to(W2o_ptr.dtype.element_ty))
    tl.store(b2o_ptr + b2ofs, b2.to(b2o_ptr.dtype.element_ty))


@triton.jit
def _load_f32(ptr, ofs):
    return tl.load(ptr + ofs).to(tl.float32)


@triton.jit
def _halves(x):
    """(R, C) -> its rows [0, R/2) and [R/2, R). With the hidden units along M of a wgmma layout the top row bit is
    a register bit, so this is a selection of registers, no data movement."""
    R: tl.constexpr = x.shape[0]
    C: tl.constexpr = x.shape[1]
    return tl.split(tl.permute(tl.reshape(x, (2, R // 2, C)), (1, 2, 0)))


@triton.jit
def _hid_dot(xT, W, PREC: tl.constexpr, HCH: tl.constexpr):
    """x @ W for x given as xT (4d x tokens), W (4d x d): a contraction over the hidden units, M = 16 tokens
    (mma.sync), warps split along d, so every warp loads all of x and its columns of W. HCH = 2 or 4: K split into
    that many chunks, accumulated in sequence, so only one chunk's operands are in registers at a time (at HCH = 1
    x alone is 64 registers a thread at 8 warps)."""
    if HCH == 1:
        return dot(tl.trans(xT), W, PREC)
    else:
        xa, xb = _halves(xT)
        wa, wb = _halves(W)
        if HCH == 2:
            return dot_acc(tl.trans(xb), wb, dot(tl.trans(xa), wa, PREC), PREC)
        else:
            return _hid_dot(xb, wb, PREC, HCH // 2) + _hid_dot(xa, wa, PREC, HCH // 2)


@triton.jit
def _gram(xT, yT, PREC: tl.constexpr, HCH: tl.constexpr):
    """x @ y^T (tokens x tokens) for (4d x tokens) inputs, K split like `_hid_dot`."""
    return _hid_dot(xT, yT, PREC, HCH)


@triton.jit
def _ttt_mlp_prefill_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, te_ptr, lnw_ptr, lnb_ptr,
    W1_ptr, b1_ptr, W2_ptr, b2_ptr, W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, off_ptr,
    o_ptr, W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr, W2ao_ptr, b2ao_ptr,
    T, H, BS,
    stride_qb, stride_qh, stride_qt, stride_eb, stride_eh, stride_et, stride_ob, stride_oh, stride_ot,
    eps,
    PREC: tl.constexpr, FAST: tl.constexpr, ONE_PASS: tl.constexpr, PREFETCH: tl.constexpr,
    HCH: tl.constexpr, HEAD: tl.constexpr, D: tl.constexpr, HID: tl.constexpr, BT: tl.constexpr,
    LQ1: tl.constexpr = False, DZ16: tl.constexpr = False, RELOAD: tl.constexpr = False, LAZY_OFS: tl.constexpr = False,
):  # fmt: skip
    pid = tl.program_id(0)
    bi = pid // H
    hi = pid % H
    w1tofs, b1ofs, w2ofs, b2ofs = _state_offsets(pid.to(tl.int64), D, HID)

    qo = bi.to(tl.int64) * stride_qb + hi.to(tl.int64) * stride_qh
    q_p = q_ptr + qo
    k_p = k_ptr + qo
    v_p = v_ptr + qo
    e_p = eta_ptr + bi.to(tl.int64) * stride_eb + hi.to(tl.int64) * stride_eh
    o_p = o_ptr + bi.to(tl.int64) * stride_ob + hi.to(tl.int64) * stride_oh

    ln_w, ln_b, te, te_last = load_consts(lnw_ptr, lnb_ptr, te_ptr, hi, BS, D, BT)
    o0 = tl.load(off_ptr).to(tl.int32)  # tokens of the current mini-batch already consumed (read on the device)
    if HEAD:
        # Launch 1 of 2: the head chunk that finishes the partial mini-batch the input state started in (rows
        # o0..BS-1 map to t = 0..), written to the output state for launch 2. A launch of its own so that its
        # extra registers (the input accumulators) cannot push launch 2's main loop into spilling.
        if o0 > 0:
            W1T, b1, W2, b2 = _load_state(W1_ptr, b1_ptr, W2_ptr, b2_ptr, w1tofs, b1ofs, w2ofs, b2ofs)
            q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, -o0, T, stride_qt, stride_et, BS, D, BT)
            closes = o0 + T >= BS
            W1T, b1, W2, b2 = _mini_batch(
                q, k, v, eta, o_p, -o0, T, stride_ot, BS, te, te_last, ln_w, ln_b, W1T, b1, W2, b2,
                W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr,
                W2ao_ptr, b2ao_ptr, w1tofs, b1ofs, w2ofs, b2ofs, closes, eps, 1, PREC, FAST, ONE_PASS, HCH, D, BT,
            )  # fmt: skip
            if closes:  # (left open, _mini_batch wrote the state and the accumulators itself)
                _store_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1T, b1, W2, b2, w1tofs, b1ofs, w2ofs, b2ofs)
    else:
        # Launch 2 of 2: continue from launch 1's state when there was a head chunk.
        n_head = o0 * 0  # a tensor, so both branches of the runtime `if` agree on its type
        if o0 > 0:
            n_head = tl.minimum(BS - o0, T)
            W1T, b1, W2, b2 = _load_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, w1tofs, b1ofs, w2ofs, b2ofs)
        else:
            W1T, b1, W2, b2 = _load_state(W1_ptr, b1_ptr, W2_ptr, b2_ptr, w1tofs, b1ofs, w2ofs, b2ofs)

        # Full mini-batches: the sequential chain, one fold per mini-batch.
        n_full = (T - n_head) // BS
        nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, n_head, T, stride_qt, stride_et, BS, D, BT)
        for c in range(0, n_full):
            t0 = n_head + c * BS
            if RELOAD:  # per mini-batch from L1 instead of registers held across the loop
                ln_w, ln_b, te, te_last = load_consts(lnw_ptr, lnb_ptr, te_ptr, hi, BS, D, BT)
            if PREFETCH:  # the next mini-batch's tiles load under this one's math (register double buffering)
                q, k, v, eta = nq, nk, nv, ne
                nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, t0 + BS, T, stride_qt, stride_et, BS, D, BT)
            else:
                q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, stride_qt, stride_et, BS, D, BT)
            W1T, b1, W2, b2 = _mini_batch(
                q, k, v, eta, o_p, t0, T, stride_ot, BS, te, te_last, ln_w, ln_b, W1T, b1, W2, b2,
                W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr,
                W2ao_ptr, b2ao_ptr, w1tofs, b1ofs, w2ofs, b2ofs, True, eps, 0, PREC, FAST, ONE_PASS, HCH, D, BT,
                LQ1, DZ16,
            )  # fmt: skip

        if LAZY_OFS:  # the state's (4d x d) int64 offsets made again here, not held across the loop: `zero` is 0 at
            # run time (the offset is >= 0) but not to the compiler, so the pre-loop copies are not reused (CSE)
            zero = tl.minimum(tl.load(off_ptr), 0)
            w1tofs, b1ofs, w2ofs, b2ofs = _state_offsets(pid.to(tl.int64) + zero, D, HID)
        if RELOAD:
            ln_w, ln_b, te, te_last = load_consts(lnw_ptr, lnb_ptr, te_ptr, hi, BS, D, BT)
        t_tail = n_head + n_full * BS
        if t_tail < T:  # ragged tail: writes the state and, as the accumulators, its gradient sums
            if not PREFETCH:
                nq, nk, nv, ne = load_chunk(q_p, k_p, v_p, e_p, t_tail, T, stride_qt, stride_et, BS, D, BT)
            _mini_batch(
                nq, nk, nv, ne, o_p, t_tail, T, stride_ot, BS, te, te_last, ln_w, ln_b, W1T, b1, W2, b2,
                W1a_ptr, b1a_ptr, W2a_ptr, b2a_ptr, W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr,
                W2ao_ptr, b2ao_ptr, w1tofs, b1ofs, w2ofs, b2ofs, False, eps, 2, PREC, FAST, ONE_PASS, HCH, D, BT,
                LQ1, DZ16,
            )  # fmt: skip
        else:
            if (o0 + T) % BS == 0:  # at a mini-batch boundary: zero accumulators (else launch 1 wrote them)
                _store_state(W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1T, b1, W2, b2, w1tofs, b1ofs, w2ofs, b2ofs)
                tl.store(W1ao_ptr + w1tofs, tl.zeros([HID, D], dtype=W1ao_ptr.dtype.element_ty))
                tl.store(W2ao_ptr + w2ofs, tl.zeros([HID, D], dtype=W2ao_ptr.dtype.element_ty))
                tl.store(b1ao_ptr + b1ofs, tl.zeros([HID], dtype=b1ao_ptr.dtype.element_ty))
                tl.store(b2ao_ptr + b2ofs, tl.zeros([D], dtype=b2ao_ptr.dtype.element_ty))


@triton.jit
def _state_offsets(base, D: tl.constexpr, HID: tl.constexpr):
    """Offsets of one (batch, head)'s W1^T, b1, W2, b2 (W1 is (d x 4d) in memory, read as W1^T (4d x d))."""
    rd = tl.arange(0, D)
    rh = tl.arange(0, HID)
    w1tofs = base * D * HID + rh[:, None] + rd[None, :] * HID
    w2ofs = base * HID * D + rh[:, None] * D + rd[None, :]
    return w1tofs, base * HID + rh, w2ofs, base * D + rd


@triton.jit
def _load_state(W1_ptr, b1_ptr, W2_ptr, b2_ptr, w1tofs, b1ofs, w2ofs, b2ofs):
    return (
        tl.load(W1_ptr + w1tofs).to(tl.float32),
        tl.load(b1_ptr + b1ofs).to(tl.float32),
        tl.load(W2_ptr + w2ofs).to(tl.float32),
        tl.load(b2_ptr + b2ofs).to(tl.float32),
    )


def ttt_mlp_prefill(
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
    eps: float = LN_EPS,
    precision: str | None = None,
    fast_tanh: bool | None = None,
    one_pass_ln: bool = True,
    prefetch: bool = False,
    hidden_chunks: int = 1,
    late_zq1: bool = True,
    dz_bf16: bool = False,
    reload_consts: bool = False,
    lazy_offsets: bool = False,
    num_warps: int | None = None,
    num_stages: int | None = None,
    maxnreg: int | None = None,
    backend: str = "auto",
    nbuf: int = 3,
) -> tuple[torch.Tensor, TTTMLPState]:
    """Tensor-level entry with every knob: returns (out, new state), the state as new tensors in the input state's
    dtype (fp32 on chip). q, k, v: (B, H, T, d), d in 16, 32, 64; eta: (B, H, T); the state's hidden size a power
    of two in 16..4d (4d in the paper). Knobs (defaults: the fastest measured at d = 64 on an H200, 7.59 ms vs 10.03
    for prefetch + 2 chunks + early Zq1 at op shape (a) T = 2k, bench/notes/session4.md; sweep them on the GPU):
      precision      matmul operands "bf16" (default on a GPU), "tf32" or "ieee" (default under TRITON_INTERPRET);
                     fp32 accumulation and fp32 state always
      fast_tanh      GELU through tanh.approx.f32 (default: on with bf16 operands on a GPU)
      one_pass_ln    LayerNorm statistics in one two-operand reduction
      prefetch       load the next mini-batch's q, k, v, eta under this one's math
      hidden_chunks  1, 2 or 4 K-chunks of the contractions over the hidden units (fewer registers at a time)
      late_zq1       Zq1 from the updated W1 (as Zq2): neither Zq1 nor the old W1's bf16 copy lives across the chain
      Register-pressure knobs (default off; bench/notes/ttt_mlp_spills_*; same function up to operand rounding):
      dz_bf16        gelu'(Z1) held in the operand precision across the chain (bf16: 8 registers instead of 16)
      reload_consts  ln weights and token_eta re-read from L1 each mini-batch instead of held across the loop
      lazy_offsets   the state's int64 offsets recomputed after the loop instead of held across it
      num_warps      default 8 at d = 64 (the state alone is 128 registers a thread there), else 4
      num_stages, maxnreg  passed to the launch when set
      backend        "triton" (this kernel), "gluon" (prefill_gluon.py: bf16 q/k/v, d = 64, hidden 256, mini-batch 16,
                     bf16 operands, CUDA; the head chunk still runs here), or "auto": gluon where it applies and no
                     knob of this kernel is set, else triton (`resolve_backend` says which, for result rows)
      nbuf           the Gluon kernel's q/k/v ring depth"""
    if precision is None:  # the interpreter's bf16 tl.dot is unusable (triton 3.9): CPU runs compute in fp32
        precision = "ieee" if interpreting() else "bf16"
    if precision not in PRECISIONS:
        raise UserError(f"ttt_mlp triton: precision={precision!r}, expected one of {PRECISIONS}")
    B, H, T, D = q.shape
    HID = state.W1.shape[-1]
    if D not in (16, 32, 64):
        raise UserError(f"ttt_mlp triton: head_dim={D} unsupported (16, 32 or 64: the state lives in registers)")
    if HID < 16 or HID & (HID - 1) or HID > 4 * D:
        raise UserError(f"ttt_mlp triton: hidden size {HID} unsupported (a power of two in 16..4*head_dim)")
    shapes = {
        "k": (k.shape, q.shape), "v": (v.shape, q.shape), "eta": (eta.shape, (B, H, T)),
        "W1": (state.W1.shape, (B, H, D, HID)), "b1": (state.b1.shape, (B, H, HID)),
        "W2": (state.W2.shape, (B, H, HID, D)), "b2": (state.b2.shape, (B, H, D)),
        "ln_w": (ln_w.shape, (H, D)), "ln_b": (ln_b.shape, (H, D)),
    }  # fmt: skip
    for name, (got, want) in shapes.items():
        if tuple(got) != tuple(want):
            raise UserError(
                f"ttt_mlp triton: {name} has shape {tuple(got)}, expected {tuple(want)} (q is {tuple(q.shape)})"
            )
    if hidden_chunks not in (1, 2, 4) or HID // hidden_chunks < 16:
        raise UserError(f"ttt_mlp triton: hidden_chunks={hidden_chunks} must be 1, 2 or 4 with >= 16 units per chunk")
    if mini_batch_size > 64:
        raise UserError(f"ttt_mlp triton: mini_batch_size={mini_batch_size} > 64 is not supported")
    if fast_tanh is None:
        fast_tanh = precision == "bf16" and not interpreting()
    if num_warps is None:
        num_warps = 8 if D * HID >= 64 * 256 else 4
    # q, k, v share one set of strides with a unit last stride (views of one buffer go in without a copy).
    if not (q.stride() == k.stride() == v.stride() and q.stride(-1) == 1):
        q, k, v = (x.contiguous() for x in (q, k, v))
    st_in = [x.contiguous() for x in (state.W1, state.b1, state.W2, state.b2)]
    acc_in = [x.contiguous() for x in (state.W1_acc, state.b1_acc, state.W2_acc, state.b2_acc)]
    st_out = [torch.empty_like(x) for x in st_in]
    acc_out = [torch.empty_like(x) for x in acc_in]
    out = torch.empty_like(q)
    knobs = dict(fast_tanh=fast_tanh, one_pass_ln=one_pass_ln, prefetch=prefetch, hidden_chunks=hidden_chunks,
                 late_zq1=late_zq1, dz_bf16=dz_bf16, reload_consts=reload_consts, lazy_offsets=lazy_offsets,
                 num_stages=num_stages, maxnreg=maxnreg)  # fmt: skip
    knobs["num_warps"] = num_warps
    chosen = resolve_backend(backend, q, k, v, st_in + acc_in, mini_batch_size, precision, knobs)
    BT = max(16, triton.next_power_of_2(mini_batch_size))  # tl.dot needs >= 16 rows; extra rows are masked
    launch = {n: x for n, x in (("num_stages", num_stages), ("maxnreg", maxnreg)) if x is not None}
    if B * H and T:
        args = (
            q, k, v, eta, token_eta.contiguous(), ln_w.contiguous(), ln_b.contiguous(),
            *st_in, *acc_in, state.offset, out, *st_out, *acc_out,
            T, H, mini_batch_size,
            q.stride(0), q.stride(1), q.stride(2), eta.stride(0), eta.stride(1), eta.stride(2),
            out.stride(0), out.stride(1), out.stride(2), eps,
        )  # fmt: skip
        meta = dict(
            PREC=precision, FAST=fast_tanh, ONE_PASS=one_pass_ln, PREFETCH=prefetch, HCH=hidden_chunks,
            LQ1=late_zq1, DZ16=dz_bf16, RELOAD=reload_consts, LAZY_OFS=lazy_offsets,
            D=D, HID=HID, BT=BT, num_warps=num_warps, **launch,
        )  # fmt: skip
        # Two launches in stream order (no host read of the offset): the head chunk, a no-op at offset 0, then the
        # rest from its state.
        note_kernel(f"ttt_mlp_prefill/{chosen}")
        _ttt_mlp_prefill_kernel[(B * H,)](*args, HEAD=True, **meta)
        if chosen == "gluon":
            from ttt.ops.ttt_mlp import prefill_gluon

            prefill_gluon.launch(q, k, v, eta, token_eta, ln_w, ln_b, st_in, state.offset, st_out, acc_out, out,
                                 eps=eps, nbuf=nbuf)  # fmt: skip
        else:
            _ttt_mlp_prefill_kernel[(B * H,)](*args, HEAD=False, **meta)
    else:  # nothing to process: the state passes through unchanged
        for dst, src in zip(st_out + acc_out, st_in + acc_in):
            dst.copy_(src)
    W1, b1, W2, b2 = st_out
    W1a, b1a, W2a, b2a = acc_out
    offset = (state.offset + T) % mini_batch_size  # on the device: no host sync
    return out, TTTMLPState(W1, b1, W2, b2, W1a, b1a, W2a, b2a, offset)


def resolve_backend(
    backend: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: list[torch.Tensor],
    mini_batch_size: int,
    precision: str,
    knobs: dict,
) -> str:
    """The kernel that runs launch 2 for `backend` on these inputs: "gluon" or "triton" (see ttt_mlp_prefill).
    `knobs`: this kernel's tuning arguments as passed (any but its defaults keep "auto" on it)."""
    tuned = sorted(n for n, val in knobs.items() if val != _KNOB_DEFAULTS[n])
    return triton_common.resolve_backend(
        backend, q, "ttt.ops.ttt_mlp.prefill_gluon",
        lambda m: m.unsupported(q, k, v, tuple(state), mini_batch_size, precision), tuned, prefix="ttt_mlp triton: ",
    )  # fmt: skip


# What `ttt_mlp_prefill` resolves each knob to when left at its default on a GPU (fast_tanh: on with bf16 operands;
# num_warps: 8 at d = 64, hidden 256, the only shape the Gluon kernel takes)
_KNOB_DEFAULTS = {n: p.default for n, p in inspect.signature(ttt_mlp_prefill).parameters.items()} | {
    "fast_tanh": True, "num_warps": 8,
}  # fmt: skip


def ttt_mlp_triton(
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
    **tuning: str | int | bool | None,
) -> tuple[torch.Tensor, TTTMLPState]:
    """The reference signature (docs/interfaces.md): returns (out, new state); the input state is untouched.
    Any T and any input offset, no fallback path. tuning: see `ttt_mlp_prefill` (bf16 operands by default on a GPU).
    Shapes it cannot run (head dim not 16/32/64, hidden size over 4d, mini-batch over 64) raise a one-line UserError."""
    check_args(q, token_eta, mini_batch_size)
    if not q.is_cuda and not interpreting():
        raise UserError("ttt_mlp impl 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tests)")
    return ttt_mlp_prefill(q, k, v, eta, token_eta, ln_w, ln_b, state, mini_batch_size=mini_batch_size, **tuning)
