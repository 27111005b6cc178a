"""Gluon forward kernel for TTT-MLP prefill (sm_80+, bf16 q/k/v, head dim 64, hidden 256, mini-batch 16).

The same op as the Triton kernel beside it (prefill.py has the math; it stays the reference CI runs under the
interpreter, and it runs the head chunk here: launch 1 of ttt_mlp_prefill). That kernel keeps the whole 128 KB state
in registers of 8 warps but lets the compiler lay it out: every contraction over the hidden units then gathers all
of them into each warp (spills, IPC 0.77, bench/notes/ttt_mlp_triton.md). Here the hidden units are split over the
8 warps, 32 each, and never move: warp w holds its rows of W1^T and W2 (64 + 64 fp32 registers a thread) and computes
every hidden-unit quantity for its units alone. Products contract over one of three index sets:
- over d (Z1 = K W1, Q W1, eg2 W2^T): the state's accumulator fragments are the MMA operand as they stand;
- over the mini-batch's tokens (the updates K^T eg1, X2^T eg2, and tril(.) eg1): operands that are accumulators of
  the same warp (hidden-major tiles, HM) or come from shared memory;
- over the hidden units (Z2 = X2 W2, Zq2 = Xq2 W2, Xq2 X2^T): each warp's partial product over its 32 units
  (a batched MMA, the batch being the warp, M3), summed across warps through shared memory.
Two layouts index the hidden units: HM (warps stacked over the rows of (256 x n) tiles) and TM (warps side by side
over the columns of (16 x 256) tiles). Their unit orders differ; `_pi` maps HM rows to units (TM columns), so that
each warp's rows in HM are its columns in TM, and the reshapes below move between the two with register renames
only (asserted trivial at compile time). What crosses warps, per mini-batch: the two sums of partials (Z2 before the
LayerNorm gradient, Zq2 before the output), eg2 (computed on rows split over the warps, then read by all), and the
bias sums; 4 CTA barriers. The LayerNorms run on rows split over the warps: their row sums are warp shuffles.
W2 is also kept as a bf16 copy in shared memory, written once a mini-batch after its update: the contractions over
the hidden units need it with the units along K, which its accumulator fragments are not.
Outputs use the weights at the mini-batch's start (Zq1 = Q W1' + b1' - tril(te_i (q_i.k_j + 1)) eg1, Zq2 likewise),
so the update needs no correction terms. Gluon has no interpreter: the tests run on a GPU only.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

D_GLUON, HID_GLUON, BS_GLUON, NW = 64, 256, 16, 8  # the shapes the layouts below are written for

HM = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[8, 1], instr_shape=[16, 8]))
TM = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 8], instr_shape=[16, 8]))
M3 = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[8, 1, 1], instr_shape=[1, 16, 8]))
AH = gl.constexpr(gl.DotOperandLayout(0, HM, 2))
BH = gl.constexpr(gl.DotOperandLayout(1, HM, 2))
AT = gl.constexpr(gl.DotOperandLayout(0, TM, 2))
BTL = gl.constexpr(gl.DotOperandLayout(1, TM, 2))
A3 = gl.constexpr(gl.DotOperandLayout(0, M3, 2))
B3 = gl.constexpr(gl.DotOperandLayout(1, M3, 2))
# Rows split over the warps (2 each), a row over 16 lanes x 4 registers: the partial sums' reduction (axis 0 of R3,
# in-thread), the LayerNorms (row sums within a warp), the output store
R3 = gl.constexpr(gl.BlockedLayout([8, 1, 4], [1, 2, 16], [1, 8, 1], [2, 1, 0]))
R2 = gl.constexpr(gl.SliceLayout(0, R3))
RROW = gl.constexpr(gl.SliceLayout(1, R2))
RCOL = gl.constexpr(gl.SliceLayout(0, R2))
# The 8 warps' column partials of a [16, 64] R2 tile, held whole by every thread for its 4 columns (RCOL's own)
L8 = gl.constexpr(
    gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [1, 0], [2, 0], [4, 0]], lane_bases=[[0, 4], [0, 8], [0, 16], [0, 32], [0, 0]],
        warp_bases=[[0, 0], [0, 0], [0, 0]], block_bases=[], shape=[8, 64],
    )
)  # fmt: skip
LD = gl.constexpr(gl.BlockedLayout([1, 4], [2, 16], [8, 1], [1, 0]))  # a [16, 64] bf16 tile, 8 B a thread
SH = gl.constexpr(gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=8, order=[1, 0]))
SH3 = gl.constexpr(gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=8, order=[2, 1, 0]))
SP3 = gl.constexpr(gl.SwizzledSharedLayout(vec=2, per_phase=1, max_phase=8, order=[2, 1, 0]))  # fp32 partials
PLAIN1 = gl.constexpr(gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0]))
PLAIN2 = gl.constexpr(gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))

_C0 = gl.constexpr(0.7978845608028654)  # GELU-tanh: sqrt(2/pi), and with c1 = 0.044715 folded in
_C0C1 = gl.constexpr(0.7978845608028654 * 0.044715)
_3C0C1 = gl.constexpr(3.0 * 0.7978845608028654 * 0.044715)


@gluon.jit
def _tanh(x):
    # One MUFU instruction, max rel. err ~2^-11: under the bf16 rounding of every operand it feeds
    return gl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _gelu(x):
    h = 0.5 * x
    return h * _tanh(x * (_C0C1 * (x * x) + _C0)) + h


@gluon.jit
def _gelu_fwd_bwd(x):
    x2 = x * x
    t = _tanh(x * (_C0C1 * x2 + _C0))
    h = 0.5 * x
    return h * t + h, 0.5 * t + ((h * (1.0 - t * t)) * (_3C0C1 * x2 + _C0) + 0.5)


@gluon.jit
def _add2(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@gluon.jit
def _pi(r):
    """Hidden unit held in HM row r: warp w's rows 128 p + 16 w + 8 a + j -> unit 64 (2 p + a) + 8 w + j (TM gives
    warp w the columns 64 m + 8 w + j)."""
    return 64 * (2 * (r // 128) + (r // 8) % 2) + 8 * ((r // 16) % 8) + r % 8


@gluon.jit
def _hm_to_units(x, N: gl.constexpr):
    """[256, N] HM-indexed (rows r) -> [N, 256] with the columns in unit order pi(r)."""
    x = gl.permute(x, (1, 0))
    return gl.reshape(gl.permute(gl.reshape(x, [N, 2, 8, 2, 8]), (0, 1, 3, 2, 4)), [N, 256])


@gluon.jit
def _vec_to_units(x):
    """[256] HM-indexed -> unit order."""
    return gl.reshape(gl.permute(gl.reshape(x, [2, 8, 2, 8]), (0, 2, 1, 3)), [256])


@gluon.jit
def _tm_to_warps(x, R: gl.constexpr):
    """[R, 256] in unit order (TM) -> [8, R, 32]: warp w's units 64 m + 8 w + j at slot 8 m + j."""
    return gl.reshape(gl.permute(gl.reshape(x, [R, 4, 8, 8]), (2, 0, 1, 3)), [8, R, 32])


@gluon.jit
def _hm_to_warps(x, N: gl.constexpr):
    """[256, N] HM-indexed -> [8, 32, N]: warp w's rows 128 p + 16 w + 8 a + j at slot 16 p + 8 a + j (the slot
    `_tm_to_warps` gives the same unit)."""
    return gl.reshape(gl.permute(gl.reshape(x, [2, 8, 2, 8, N]), (1, 0, 2, 3, 4)), [8, 32, N])


@gluon.jit
def _stats(x, D: gl.constexpr, eps):
    s1, s2 = gl.reduce((x, x * x), 1, _add2)
    mu = s1 / D
    return mu, 1.0 / gl.sqrt(gl.maximum(s2 / D - mu * mu, 0.0) + eps)


@gluon.jit
def _sum_partials(P):
    """The sum over warps of the [8, 16, 64] partials in `P`, in R2."""
    return gl.sum(P.load(R3), axis=0)


@gluon.jit
def _col_sums(DB):
    """The column sums whose 8 warp partials are in DB ([8, 64]), in RCOL."""
    return gl.convert_layout(gl.sum(DB.load(L8), axis=0), RCOL, assert_trivial=True)


@gluon.jit
def _mini_batch(
    qb, kb, vb, eta, W2s, ZP, ZQ, egs, DB, S1, S2, b1h, b1t, b2, te_h, te_3, scale, ln_w, ln_b,
    o_p, t0, T, stride_ot, BS, eps, MASKED: gl.constexpr, D: gl.constexpr, HID: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    """One mini-batch from its q/k/v tiles in shared memory (visible to every warp), W2's bf16 copy in W2s: writes
    its outputs and leaves eg2' = scale * eta * G2 in `egs` and its warp column partials in `DB`. Returns eg1'^T
    (HM, bf16), X2^T (HM, bf16), K as the update's B operand, and the row sums of eg1'^T; every read of q/k/v comes
    before its last barrier. MASKED: rows outside the mini-batch and [0, T) are zero in eg and not stored."""
    rows_h = gl.arange(0, BT, layout=gl.SliceLayout(1, HM))
    cols_h = gl.arange(0, BT, layout=gl.SliceLayout(0, HM))
    W1b = S1.to(gl.bfloat16)
    w1a = gl.convert_layout(W1b, AH, assert_trivial=True)  # W1^T as the A operand (contraction over d)
    w1b = gl.convert_layout(_hm_to_units(W1b, D), BTL, assert_trivial=True)  # W1 as the B operand
    zt = gl.full([BT, HID], 0.0, gl.float32, TM) + b1t[None, :]
    z1 = mma_v2(kb.load(AT), w1b, zt)  # [16, 256] TM
    zq1 = mma_v2(qb.load(AT), w1b, zt)  # Q W1' + b1': the output's first layer, from the old W1
    z1h = mma_v2(w1a, kb.permute((1, 0)).load(BH), gl.full([HID, BT], 0.0, gl.float32, HM) + b1h[:, None])
    x2_3 = gl.convert_layout(_tm_to_warps(_gelu(z1).to(gl.bfloat16), BT), A3, assert_trivial=True)
    x2h, dz1h = _gelu_fwd_bwd(z1h)
    x2h = x2h.to(gl.bfloat16)  # X2^T: the W2 update's A operand
    dz1h = dz1h.to(gl.bfloat16)  # held across two barriers: half the registers (its product is rounded to bf16)

    z2p = mma_v2(x2_3, W2s.load(B3), gl.full([8, BT, D], 0.0, gl.float32, M3))
    ZP.store(z2p)
    gl.thread_barrier()  # (B1) the partials of Z2

    rows = gl.arange(0, BT, layout=RROW)
    y = vb.load(R2).to(gl.float32) - kb.load(R2).to(gl.float32)
    z2 = _sum_partials(ZP) + b2[None, :]
    mu, rstd = _stats(z2, D, eps)
    xhat = (z2 - mu[:, None]) * rstd[:, None]
    gx = (ln_w[None, :] * xhat + ln_b[None, :] - y) * ln_w[None, :]
    sg, sgx = gl.reduce((gx, gx * xhat), 1, _add2)
    eg2 = (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd * eta * scale / D)[:, None]
    t = t0 + rows
    if MASKED:
        eg2 = gl.where(((rows < BS) & (t >= 0) & (t < T))[:, None], eg2, 0.0)
    egs.store(eg2.to(gl.bfloat16))
    DB.store(gl.sum(gl.reshape(eg2, [8, 2, D]), axis=1))
    gl.thread_barrier()  # (B2) eg2' and its column partials

    # eg1'^T = (W2' eg2'^T) * gelu'(Z1^T), hidden-major: W2's fragments are the A operand as they stand
    w2a = gl.convert_layout(S2.to(gl.bfloat16), AH, assert_trivial=True)
    eg1h = mma_v2(w2a, egs.permute((1, 0)).load(BH), gl.full([HID, BT], 0.0, gl.float32, HM)) * dz1h.to(gl.float32)
    eg1b = eg1h.to(gl.bfloat16)
    db1 = gl.sum(eg1h, axis=1)

    # Outputs. Zq1 = Q W1' + b1' - tril(te_i (q_i.k_j + 1)) eg1 (te here is te / scale: eg1 carries scale)
    qk = mma_v2(qb.load(AH), kb.permute((1, 0)).load(BH), gl.full([BT, BT], 0.0, gl.float32, HM))
    a1 = gl.where(rows_h[:, None] >= cols_h[None, :], -te_h[:, None] * (qk + 1.0), 0.0)
    a1 = gl.convert_layout(a1.to(gl.bfloat16), AT, assert_trivial=True)
    zq1 = mma_v2(a1, gl.convert_layout(_hm_to_units(eg1b, BT), BTL, assert_trivial=True), zq1)
    xq2_3 = gl.convert_layout(_tm_to_warps(_gelu(zq1).to(gl.bfloat16), BT), A3, assert_trivial=True)
    # Zq2 = sum over warps of Xq2_w W2'_w - tril(te_i (xq2_i.x2_j + 1 / 8)) eg2' (the bias path's 1 shared out)
    x2t_3 = gl.convert_layout(gl.permute(x2_3, (0, 2, 1)), B3, assert_trivial=True)
    p = mma_v2(xq2_3, x2t_3, gl.full([8, BT, BT], 0.0, gl.float32, M3))
    r3 = gl.arange(0, BT, layout=gl.SliceLayout(0, gl.SliceLayout(2, M3)))
    c3 = gl.arange(0, BT, layout=gl.SliceLayout(0, gl.SliceLayout(1, M3)))
    a2 = gl.where(r3[None, :, None] >= c3[None, None, :], -te_3[None, :, None] * (p + 1.0 / 8), 0.0)
    a2 = gl.convert_layout(a2.to(gl.bfloat16), A3, assert_trivial=True)
    eg2_3 = gl.expand_dims(egs.load(gl.SliceLayout(0, B3)), 0)
    eg2_3, _ = gl.broadcast(eg2_3, gl.full([8, BT, D], 0, gl.bfloat16, B3))
    zq2p = mma_v2(xq2_3, W2s.load(B3), gl.full([8, BT, D], 0.0, gl.float32, M3))
    ZQ.store(mma_v2(a2, eg2_3, zq2p))
    kbh = kb.load(BH)  # the W1 update's B operand, and the residual (read here: q/k/v are free after the barrier)
    qr = qb.load(R2).to(gl.float32)
    gl.thread_barrier()  # (B3) the partials of Zq2

    zq2 = _sum_partials(ZQ) + b2[None, :]
    mo, ro = _stats(zq2, D, eps)
    out = qr + (zq2 - mo[:, None]) * ro[:, None] * ln_w[None, :] + ln_b[None, :]
    cols = gl.arange(0, D, layout=RCOL)
    o_ofs = t[:, None] * stride_ot + cols[None, :]
    if MASKED:
        ok = (rows < BS) & (t >= 0) & (t < T)
        gl.store(o_p + o_ofs, out.to(gl.bfloat16), mask=ok[:, None] & (cols < D)[None, :])
    else:
        gl.store(o_p + o_ofs, out.to(gl.bfloat16))
    return eg1b, x2h, kbh, db1


@gluon.jit
def _copy_tiles(qs, ks, vs, q_p, k_p, v_p, t0, T, stride_t, D: gl.constexpr, BT: gl.constexpr):
    """Rows t0 + [0, BT) of q, k, v into shared memory by cp.async, as one commit group (rows past T not copied)."""
    r = gl.arange(0, BT, layout=gl.SliceLayout(1, LD))
    c = gl.arange(0, D, layout=gl.SliceLayout(0, LD))
    ofs = (t0 + r)[:, None] * stride_t + c[None, :]
    ok = ((t0 + r) < T)[:, None] & (c < D)[None, :]
    async_copy.async_copy_global_to_shared(qs, q_p + ofs, mask=ok)
    async_copy.async_copy_global_to_shared(ks, k_p + ofs, mask=ok)
    async_copy.async_copy_global_to_shared(vs, v_p + ofs, mask=ok)
    async_copy.commit_group()


@gluon.jit
def _stage_rows(buf, p, t0, T, stride_t, BS, D: gl.constexpr, BT: gl.constexpr):
    """Rows t0 + [0, BT) of one tile into shared memory, zero outside the mini-batch and [0, T)."""
    r = gl.arange(0, BT, layout=gl.SliceLayout(1, LD))
    c = gl.arange(0, D, layout=gl.SliceLayout(0, LD))
    t = t0 + r
    ok = ((r < BS) & (t >= 0) & (t < T))[:, None] & (c < D)[None, :]
    buf.store(gl.load(p + t[:, None] * stride_t + c[None, :], mask=ok, other=0.0))


@gluon.jit
def _main_loop(
    q_p, k_p, v_p, e_p, o_p, qs, ks, vs, W2s, ZP, ZQ, egs, DB, b1s, n_head, n_full, T, stride_qt, stride_et,
    stride_ot, BS, S1, S2, b1h, b1t, b2, te_h, te_3, te_last, ln_w, ln_b, eps, FOLD: gl.constexpr,
    NBUF: gl.constexpr, D: gl.constexpr, HID: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    """Full mini-batches from t = n_head, q/k/v by cp.async into a ring of NBUF buffers. FOLD (te_last != 0): the
    update W <- W - te_last (sums) is the MMAs' own accumulate, with eg' = -te_last eta G, and the outputs' te is
    scaled by 1 / -te_last to match. Without FOLD (te_last = 0) the state does not change."""
    rows = gl.arange(0, BT, layout=RROW)
    if FOLD:
        scale = -te_last
    else:
        scale = te_last * 0.0 + 1.0
    te_h = te_h / scale
    te_3 = te_3 / scale
    for i in gl.static_range(NBUF - 1):
        _copy_tiles(qs.index(i), ks.index(i), vs.index(i), q_p, k_p, v_p, n_head + i * BS, T, stride_qt, D, BT)
    eta_n = gl.load(e_p + (n_head + rows) * stride_et, mask=n_head + rows < T, other=0.0).to(gl.float32)
    for c in range(0, n_full):
        t0 = n_head + c * BS
        st = c % NBUF
        async_copy.wait_group(NBUF - 2)  # this mini-batch's copy has landed; a later one may be in flight
        gl.thread_barrier()  # (B0) its tiles, W2's copy and b1's sums are visible to every warp
        b1t += b1s.load(gl.SliceLayout(0, TM))
        eta = eta_n
        eta_n = gl.load(e_p + (t0 + BS + rows) * stride_et, mask=t0 + BS + rows < T, other=0.0).to(gl.float32)
        eg1b, x2h, kbh, db1 = _mini_batch(
            qs.index(st), ks.index(st), vs.index(st), eta, W2s, ZP, ZQ, egs, DB, S1, S2, b1h, b1t, b2, te_h, te_3,
            scale, ln_w, ln_b, o_p, t0, T, stride_ot, BS, eps, False, D, HID, BT,
        )  # fmt: skip
        # Behind the mini-batch's last barrier, after every read of its q/k/v, W2s and partials: the next copy
        # (into the buffer mini-batch c - 1 used), the updates, and W2's new bf16 copy need no barrier of their own.
        nb = (c + NBUF - 1) % NBUF
        _copy_tiles(qs.index(nb), ks.index(nb), vs.index(nb), q_p, k_p, v_p, t0 + (NBUF - 1) * BS, T, stride_qt,
                    D, BT)  # fmt: skip
        if FOLD:
            S1 = mma_v2(gl.convert_layout(eg1b, AH, assert_trivial=True), kbh, S1)
            S2 = mma_v2(gl.convert_layout(x2h, AH, assert_trivial=True), egs.load(BH), S2)
            W2s.store(_hm_to_warps(S2.to(gl.bfloat16), D))
            b1h += db1
            b1s.store(_vec_to_units(db1))
            b2 += _col_sums(DB)
    async_copy.wait_group(0)
    gl.thread_barrier()  # the buffers are free for the tail, b1's last sums visible
    b1t += b1s.load(gl.SliceLayout(0, TM))
    return S1, S2, b1h, b1t, b2


@gluon.jit
def _ttt_mlp_prefill_gluon_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, te_ptr, lnw_ptr, lnb_ptr,
    W1_ptr, b1_ptr, W2_ptr, b2_ptr, off_ptr,
    W1o_ptr, b1o_ptr, W2o_ptr, b2o_ptr, W1ao_ptr, b1ao_ptr, W2ao_ptr, b2ao_ptr, o_ptr,
    T, H, BS,
    stride_qb, stride_qh, stride_qt, stride_eb, stride_eh, stride_et, stride_ob, stride_oh, stride_ot, eps,
    NBUF: gl.constexpr, D: gl.constexpr, HID: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    pid = gl.program_id(0)
    bi = pid // H
    hi = pid % H
    qo = bi.to(gl.int64) * stride_qb + hi.to(gl.int64) * stride_qh
    q_p, k_p, v_p = q_ptr + qo, k_ptr + qo, v_ptr + qo
    e_p = eta_ptr + bi.to(gl.int64) * stride_eb + hi.to(gl.int64) * stride_eh
    o_p = o_ptr + bi.to(gl.int64) * stride_ob + hi.to(gl.int64) * stride_oh

    # S1[r, i] = W1[i, pi(r)], S2[r, i] = W2[pi(r), i] (HM); b1 in HM rows (b1h) and TM columns (b1t)
    sr = gl.arange(0, HID, layout=gl.SliceLayout(1, HM))
    si = gl.arange(0, D, layout=gl.SliceLayout(0, HM))
    base = pid.to(gl.int64) * D * HID
    w1_ofs = base + si[None, :] * HID + _pi(sr)[:, None]
    w2_ofs = base + _pi(sr)[:, None] * D + si[None, :]
    b1h_ofs = pid.to(gl.int64) * HID + _pi(sr)
    b1t_ofs = pid.to(gl.int64) * HID + gl.arange(0, HID, layout=gl.SliceLayout(0, TM))
    cols = gl.arange(0, D, layout=RCOL)
    b2_ofs = pid.to(gl.int64) * D + cols
    ln_w = gl.load(lnw_ptr + hi * D + cols)
    ln_b = gl.load(lnb_ptr + hi * D + cols)
    te_h = gl.load(te_ptr + gl.arange(0, BT, layout=gl.SliceLayout(1, HM)))
    te_3 = gl.load(te_ptr + gl.arange(0, BT, layout=gl.SliceLayout(0, gl.SliceLayout(2, M3))))
    te_last = gl.load(te_ptr + BS - 1)

    o0 = gl.load(off_ptr).to(gl.int32)  # tokens of the current mini-batch already consumed (read on the device)
    n_head = o0 * 0
    if o0 > 0:  # launch 1 (the Triton kernel) finished the partial mini-batch and wrote the state it left
        n_head = gl.minimum(BS - o0, T)
        S1 = gl.load(W1o_ptr + w1_ofs)
        S2 = gl.load(W2o_ptr + w2_ofs)
        b1h = gl.load(b1o_ptr + b1h_ofs)
        b1t = gl.load(b1o_ptr + b1t_ofs)
        b2 = gl.load(b2o_ptr + b2_ofs)
    else:
        S1 = gl.load(W1_ptr + w1_ofs)
        S2 = gl.load(W2_ptr + w2_ofs)
        b1h = gl.load(b1_ptr + b1h_ofs)
        b1t = gl.load(b1_ptr + b1t_ofs)
        b2 = gl.load(b2_ptr + b2_ofs)

    qs = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    ks = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    vs = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    W2s = gl.allocate_shared_memory(gl.bfloat16, [8, HID // 8, D], SH3)
    ZP = gl.allocate_shared_memory(gl.float32, [8, BT, D], SP3)
    ZQ = gl.allocate_shared_memory(gl.float32, [8, BT, D], SP3)
    egs = gl.allocate_shared_memory(gl.bfloat16, [BT, D], SH)
    DB = gl.allocate_shared_memory(gl.float32, [8, D], PLAIN2)
    b1s = gl.allocate_shared_memory(gl.float32, [HID], PLAIN1)
    W2s.store(_hm_to_warps(S2.to(gl.bfloat16), D))
    b1s.store(gl.full([HID], 0.0, gl.float32, gl.SliceLayout(0, TM)))

    n_full = (T - n_head) // BS
    if te_last != 0:
        S1, S2, b1h, b1t, b2 = _main_loop(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, W2s, ZP, ZQ, egs, DB, b1s, n_head, n_full, T, stride_qt, stride_et,
            stride_ot, BS, S1, S2, b1h, b1t, b2, te_h, te_3, te_last, ln_w, ln_b, eps, True, NBUF, D, HID, BT,
        )  # fmt: skip
    else:  # a zero te_last (no update) cannot be folded into the scale
        S1, S2, b1h, b1t, b2 = _main_loop(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, W2s, ZP, ZQ, egs, DB, b1s, n_head, n_full, T, stride_qt, stride_et,
            stride_ot, BS, S1, S2, b1h, b1t, b2, te_h, te_3, te_last, ln_w, ln_b, eps, False, NBUF, D, HID, BT,
        )  # fmt: skip

    t_tail = n_head + n_full * BS
    if t_tail < T:  # ragged tail: outputs from the state as it is; its gradient sums become the accumulators
        rows = gl.arange(0, BT, layout=RROW)
        _stage_rows(qs.index(0), q_p, t_tail, T, stride_qt, BS, D, BT)
        _stage_rows(ks.index(0), k_p, t_tail, T, stride_qt, BS, D, BT)
        _stage_rows(vs.index(0), v_p, t_tail, T, stride_qt, BS, D, BT)
        eta = gl.load(e_p + (t_tail + rows) * stride_et, mask=(rows < BS) & (t_tail + rows < T), other=0.0)
        gl.thread_barrier()
        eg1b, x2h, kbh, db1 = _mini_batch(
            qs.index(0), ks.index(0), vs.index(0), eta.to(gl.float32), W2s, ZP, ZQ, egs, DB, S1, S2, b1h, b1t, b2,
            te_h, te_3, 1.0, ln_w, ln_b, o_p, t_tail, T, stride_ot, BS, eps, True, D, HID, BT,
        )  # fmt: skip
        zero = gl.full([HID, D], 0.0, gl.float32, HM)
        gl.store(W1ao_ptr + w1_ofs, mma_v2(gl.convert_layout(eg1b, AH, assert_trivial=True), kbh, zero))
        gl.store(W2ao_ptr + w2_ofs, mma_v2(gl.convert_layout(x2h, AH, assert_trivial=True), egs.load(BH), zero))
        gl.store(b1ao_ptr + b1h_ofs, db1)
        gl.store(b2ao_ptr + b2_ofs, _col_sums(DB))
    if (t_tail >= T) & ((o0 == 0) | (o0 + T >= BS)):  # no open mini-batch at the end
        gl.store(W1ao_ptr + w1_ofs, gl.full([HID, D], 0.0, gl.float32, HM))
        gl.store(W2ao_ptr + w2_ofs, gl.full([HID, D], 0.0, gl.float32, HM))
        gl.store(b1ao_ptr + b1h_ofs, gl.full([HID], 0.0, gl.float32, gl.SliceLayout(1, HM)))
        gl.store(b2ao_ptr + b2_ofs, gl.full([D], 0.0, gl.float32, RCOL))
    gl.store(W1o_ptr + w1_ofs, S1)
    gl.store(W2o_ptr + w2_ofs, S2)
    gl.store(b1o_ptr + b1h_ofs, b1h)
    gl.store(b2o_ptr + b2_ofs, b2)


def unsupported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: tuple[torch.Tensor, ...],
                mini_batch_size: int, precision: str) -> str | None:  # fmt: skip
    """Why the Gluon kernel cannot take these inputs (state: W1, b1, W2, b2 and their accumulators), or None."""
    if not q.is_cuda:
        return f"needs CUDA tensors, got device '{q.device}'"
    if torch.cuda.get_device_capability(q.device) < (8, 0):
        return "needs compute capability 8.0 or newer (mma.sync, cp.async)"
    if not (q.dtype == k.dtype == v.dtype == torch.bfloat16):
        return f"needs bfloat16 q/k/v, got {q.dtype}"
    hid = state[0].shape[-1]
    if q.shape[-1] != D_GLUON or hid != HID_GLUON or mini_batch_size != BS_GLUON:
        return (f"is written for head_dim {D_GLUON}, hidden {HID_GLUON}, mini_batch_size {BS_GLUON} "
                f"(got {q.shape[-1]}, {hid}, {mini_batch_size})")  # fmt: skip
    if precision != "bf16":
        return f"computes with bf16 operands only (precision={precision!r})"
    if any(x.dtype != torch.float32 for x in state):
        return f"keeps a float32 state (got {state[0].dtype})"
    if not (q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and q.stride(2) % 4 == 0):
        return f"needs q/k/v with one set of strides, unit last stride, 8-byte rows (strides {q.stride()})"
    if any(x.data_ptr() % 16 for x in (q, k, v)):
        return "needs 16-byte aligned q/k/v (cp.async)"
    return None


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eta: torch.Tensor, token_eta: torch.Tensor,
           ln_w: torch.Tensor, ln_b: torch.Tensor, st_in: list[torch.Tensor], offset: torch.Tensor,
           st_out: list[torch.Tensor], acc_out: list[torch.Tensor], out: torch.Tensor, *, eps: float,
           nbuf: int = 3) -> None:  # fmt: skip
    """Launch 2 of ttt_mlp_prefill: every mini-batch after the head chunk (which launch 1 wrote to `st_out` when the
    offset is > 0), into `out`, `st_out` and `acc_out` (float32, contiguous; inputs as `unsupported` checks).
    nbuf: q/k/v buffers in the cp.async ring."""
    B, H, T, D = q.shape
    _ttt_mlp_prefill_gluon_kernel[(B * H,)](
        q, k, v, eta, token_eta.float().contiguous(), ln_w.float().contiguous(), ln_b.float().contiguous(),
        *st_in, offset, *st_out, *acc_out, out, T, H, BS_GLUON,
        q.stride(0), q.stride(1), q.stride(2), eta.stride(0), eta.stride(1), eta.stride(2),
        out.stride(0), out.stride(1), out.stride(2), eps,
        NBUF=nbuf, D=D, HID=HID_GLUON, BT=BS_GLUON, num_warps=NW,
    )  # fmt: skip
