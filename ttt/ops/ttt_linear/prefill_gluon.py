"""Gluon forward kernel for TTT-Linear prefill (sm_80+, bf16 q/k/v, head dim 64, mini-batch 16, bf16 operands).

The same op as the Triton kernel beside it (prefill.py: its docstring has the math, and it stays the reference that
CI runs under the interpreter), written in Gluon (`triton.experimental.gluon`) so that every tensor's layout is
named. Four restructurings of the Triton loop body lost on an H200 (bench/notes/session6.md, session7.md): a
mini-batch costs its sequence of barrier-separated phases, and most of those are layout conversions that Triton
routes through shared memory behind a CTA barrier. Here the state never moves:
- 16 x 64 tiles (Z, G, Zq) are mma.sync accumulators with the 4 warps side by side over the d = 64 columns (MZ);
- the state is held transposed and row-permuted, S[r, i] = W[i, pi(r)] (MT, warps stacked over r), where pi sends
  warp w's 16 rows to the columns MZ gives warp w (8w..8w+7 and 32+8w..32+8w+7). Then S's accumulator fragments
  *are* the B operand of Z = K W and Zq = Q W (asserted trivial at compile time), and the update
  S += (eg' permuted)^T K keeps every warp on its own 16 columns;
- Q K^T, computed in full by every warp, is as it stands the A operand of its product with eg' (asserted trivial);
- eg' goes through shared memory once (the output's B operand and the update's A operand); q/k/v come by cp.async
  into a ring of three shared-memory buffers, each copy issued 1.5 mini-batches ahead behind a mini-batch's last
  barrier (so it needs none of its own), eta one ahead in registers.
What still crosses warps: the LayerNorm row reductions (over d), one CTA barrier each (`_sums2`): 5 bar.sync a
mini-batch. Measured on an H200 (bench/notes/session8.md): 14-25% faster than the Triton kernel at every op shape.
Gluon has no interpreter: its tests run on a GPU only.
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

D_GLUON, BS_GLUON = 64, 16  # the shapes the layouts below are written for
# No spills in the loop offline; three programs an SM. Faster than uncapped where the grid fills waves of three
# ((a) 1k-2k: 11%), 1-2% slower where it is under two waves ((a) 4k-8k, (b)): ttt_linear_prefill applies the Triton
# kernel's rule (auto_maxnreg), this is the cap `launch` uses when called directly (bench/notes/session8.md).
MAXNREG = 168

MZ = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 4], instr_shape=[16, 8]))
MT = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8]))
AZ = gl.constexpr(gl.DotOperandLayout(0, MZ, 2))
BZ = gl.constexpr(gl.DotOperandLayout(1, MZ, 2))
AT = gl.constexpr(gl.DotOperandLayout(0, MT, 2))
BTL = gl.constexpr(gl.DotOperandLayout(1, MT, 2))
ROW = gl.constexpr(gl.SliceLayout(1, MZ))
COL = gl.constexpr(gl.SliceLayout(0, MZ))
LD = gl.constexpr(gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0]))  # coalesced, 16 B a lane
SH = gl.constexpr(gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=8, order=[1, 0]))
# BAR1 row sums: a [16, 4] tile held whole by every thread for the rows MZ gives it (lanes 4m..4m+3 hold rows m and
# m + 8), replicated over a quad's lanes and over the warps; and the plain shared layout of its scratch
P4 = gl.constexpr(
    gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [8, 0]], lane_bases=[[0, 0], [0, 0], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[0, 0], [0, 0]], block_bases=[], shape=[16, 4],
    )
)  # fmt: skip
SCR = gl.constexpr(gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0]))


@gluon.jit
def _add2(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@gluon.jit
def _pi(r):
    """Column of W held in row r of S: warp w's rows 16w + 8h + j -> column 32h + 8w + j."""
    return 32 * ((r // 8) % 2) + 8 * (r // 16) + r % 8


@gluon.jit
def _as_b(S, D: gl.constexpr):
    """B operand W[i, n] of Z = K W from S[r, i] = W[i, pi(r)]: a transpose and pi^-1 on the tensor index only."""
    w = gl.permute(S.to(gl.bfloat16), (1, 0))
    w = gl.reshape(gl.permute(gl.reshape(w, [D, 4, 2, 8]), (0, 2, 1, 3)), [D, D])
    return gl.convert_layout(w, BZ, assert_trivial=True)


@gluon.jit
def _row_sum(x, buf, BT: gl.constexpr):
    """Warp w's partial row sums of a [BT, 64] MZ tile (over its 16 columns) into column w of `buf` ([BT, 4])."""
    buf.store(gl.sum(gl.sum(gl.reshape(x, [BT, 2, 4, 8]), axis=3), axis=1))


@gluon.jit
def _load_sums(scr):
    """The row sums whose warp partials `_row_sum` left in the pair `scr` (after a barrier), in ROW."""
    sa = gl.sum(scr[0].load(P4), axis=1)
    sb = gl.sum(scr[1].load(P4), axis=1)
    return gl.convert_layout(sa, ROW, assert_trivial=True), gl.convert_layout(sb, ROW, assert_trivial=True)


@gluon.jit
def _mean_rstd(s1, s2, D: gl.constexpr, eps):
    mu = s1 / D
    return mu, 1.0 / gl.sqrt(gl.maximum(s2 / D - mu * mu, 0.0) + eps)


@gluon.jit
def _sums2(a, b, scr, BAR1: gl.constexpr, BT: gl.constexpr):
    """Row sums of two [BT, 64] MZ tiles. BAR1: with one CTA barrier (gl.reduce's cross-warp step costs more): the
    warps' partial sums go to shared memory (`scr`, two [BT, 4] fp32 buffers that no other reduction of the
    mini-batch uses, so no barrier is needed before the write) and every thread adds the four of its rows."""
    if BAR1:
        _row_sum(a, scr[0], BT)
        _row_sum(b, scr[1], BT)
        gl.thread_barrier()
        return _load_sums(scr)
    else:
        return gl.reduce((a, b), 1, _add2)


@gluon.jit
def _stats(x, scr, D: gl.constexpr, eps, BAR1: gl.constexpr, BT: gl.constexpr):
    s1, s2 = _sums2(x, x * x, scr, BAR1, BT)
    return _mean_rstd(s1, s2, D, eps)


@gluon.jit
def _stage_rows(buf, p, t0, T, stride_t, BS, D: gl.constexpr, BT: gl.constexpr):
    """Rows t0 + [0, BT) of one tile into shared memory, zero outside the mini-batch and [0, T) (the head chunk and
    the ragged tail: zeros, not stale rows, since masked rows still enter Q K^T and K^T eg')."""
    r = gl.arange(0, BT, layout=gl.SliceLayout(1, LD))
    c = gl.arange(0, D, layout=gl.SliceLayout(0, LD))
    t = t0 + r
    ok = ((r < BS) & (t >= 0) & (t < T))[:, None] & (c < D)[None, :]
    buf.store(gl.load(p + t[:, None] * stride_t + c[None, :], mask=ok, other=0.0))


@gluon.jit
def _attention(qb, kb, te_out, BT: gl.constexpr):
    """-tril(te_out (Q K^T + 1)) as the A operand of its product with eg' (AZ). Q K^T is computed in full by every
    warp (MS: the 16 x 16 tile replicated over the warps), so that its fragments are that operand as they stand."""
    MS: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8])
    kt = kb.permute((1, 0)).load(gl.DotOperandLayout(1, MS, 2))
    s = mma_v2(qb.load(gl.DotOperandLayout(0, MS, 2)), kt, gl.full([BT, BT], 0.0, gl.float32, MS))
    s_r = gl.arange(0, BT, layout=gl.SliceLayout(1, MS))
    s_c = gl.arange(0, BT, layout=gl.SliceLayout(0, MS))
    te_s = gl.convert_layout(te_out, gl.SliceLayout(1, MS))
    att = gl.where(s_r[:, None] >= s_c[None, :], -te_s[:, None] * (s + 1.0), 0.0)
    return gl.convert_layout(att.to(gl.bfloat16), AZ, assert_trivial=True)


@gluon.jit
def _zq_state(qa, Wb, bv, Wacc_b, bacc, te_acc, HAS_ACC: gl.constexpr, D: gl.constexpr, BT: gl.constexpr):
    """Q W + b (- te_acc (Q W_acc + b_acc) with HAS_ACC): Zq's part from the state at the mini-batch's start."""
    zero = gl.full([BT, D], 0.0, gl.float32, MZ)
    zq = mma_v2(qa, Wb, zero + bv[None, :])
    if HAS_ACC:
        zq -= te_acc[:, None] * mma_v2(qa, Wacc_b, zero + bacc[None, :])
    return zq


@gluon.jit
def _store_out(zq, q, mo, ro, ln_w, ln_b, o_p, t0, T, stride_ot, BS, live, MASKED: gl.constexpr,
               FLA_RESIDUAL: gl.constexpr, D: gl.constexpr, BT: gl.constexpr):  # fmt: skip
    """out = q + LN(zq) (fla's convention: zq + LN(zq)) of one mini-batch from zq's row statistics; MASKED: only
    its rows in [0, T), and only if `live` (an int, 0 masks the whole store off)."""
    rows = gl.arange(0, BT, layout=ROW)
    cols = gl.arange(0, D, layout=COL)
    ln_o = (zq - mo[:, None]) * ro[:, None] * ln_w[None, :] + ln_b[None, :]
    if FLA_RESIDUAL:
        out = zq + ln_o
    else:
        out = q.to(gl.float32) + ln_o
    t = t0 + rows
    o_ofs = t[:, None] * stride_ot + cols[None, :]
    if MASKED:
        ok = (rows < BS) & (t >= 0) & (t < T) & (rows * 0 + live > 0)
        gl.store(o_p + o_ofs, out.to(gl.bfloat16), mask=ok[:, None] & (cols < D)[None, :])
    else:
        gl.store(o_p + o_ofs, out.to(gl.bfloat16))


@gluon.jit
def _mini_batch(
    qb, kb, vb, es, es2, scr, eta, Wb, bv, Wacc_b, bacc, te_out, te_acc, scale, ln_w, ln_b, o_p, t0, T, stride_ot,
    BS, eps, MASKED: gl.constexpr, HAS_ACC: gl.constexpr, FLA_RESIDUAL: gl.constexpr, BAR1: gl.constexpr,
    EARLY: gl.constexpr, SKEW: gl.constexpr, pzq, pq, p_t0, live, D: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    """One mini-batch from its tiles in shared memory: writes its outputs, leaves eg' in `es` / `es2` (plain and with
    its columns permuted by pi) and returns eg' = scale * eta * G (rows outside the mini-batch zero when MASKED), K
    as the update's B operand, and its Zq and q. Its q/k/v buffers are free once it returns (the caller may copy into
    them). Zq = Q W + b - te_acc (Q W_acc + b_acc) [HAS_ACC] - tril(te_out (Q K^T + 1)) eg'.
    SKEW (BAR1, main loop only): the outputs of this mini-batch are left to the caller, and those of the one before
    (pzq, pq at p_t0, stored if `live`) are written here, their row statistics from the chain's first reduction."""
    rows = gl.arange(0, BT, layout=ROW)
    zero = gl.full([BT, D], 0.0, gl.float32, MZ)
    qa = qb.load(AZ)
    z = mma_v2(kb.load(AZ), Wb, zero + bv[None, :])
    if EARLY:  # off the chain: issued beside it, ahead of its first barrier
        zq = _zq_state(qa, Wb, bv, Wacc_b, bacc, te_acc, HAS_ACC, D, BT)
        att = _attention(qb, kb, te_out, BT)
    y = vb.load(MZ).to(gl.float32) - kb.load(MZ).to(gl.float32)
    if SKEW:
        _row_sum(z, scr[0][0], BT)
        _row_sum(z * z, scr[0][1], BT)
        _row_sum(pzq, scr[2][0], BT)
        _row_sum(pzq * pzq, scr[2][1], BT)
        gl.thread_barrier()
        s1, s2 = _load_sums(scr[0])
        o1, o2 = _load_sums(scr[2])
        mu, rstd = _mean_rstd(s1, s2, D, eps)
        mo, ro = _mean_rstd(o1, o2, D, eps)
        _store_out(pzq, pq, mo, ro, ln_w, ln_b, o_p, p_t0, T, stride_ot, BS, live, True, FLA_RESIDUAL, D, BT)
    else:
        mu, rstd = _stats(z, scr[0], D, eps, BAR1, BT)
    xhat = (z - mu[:, None]) * rstd[:, None]
    gx = (ln_w[None, :] * xhat + ln_b[None, :] - y) * ln_w[None, :]
    sg, sgx = _sums2(gx, gx * xhat, scr[1], BAR1, BT)
    g = (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd / D)[:, None]
    eg = g * (eta * scale)[:, None]
    t = t0 + rows
    valid = (rows < BS) & (t >= 0) & (t < T)
    if MASKED:
        eg = gl.where(valid[:, None], eg, 0.0)
    egb = eg.to(gl.bfloat16)
    if not EARLY:
        att = _attention(qb, kb, te_out, BT)
    kbt = kb.load(BTL)  # the update's B operand, and the residual: every q/k/v read comes before the barrier
    qc = qb.load(MZ)
    es.store(egb)
    es2.store(gl.reshape(gl.permute(gl.reshape(egb, [BT, 2, 4, 8]), (0, 2, 1, 3)), [BT, D]))
    gl.thread_barrier()  # eg' visible to every warp; every warp is done with this mini-batch's q/k/v buffers
    if not EARLY:
        zq = _zq_state(qa, Wb, bv, Wacc_b, bacc, te_acc, HAS_ACC, D, BT)
    zq = mma_v2(att, es.load(BZ), zq)
    if not SKEW:
        mo, ro = _stats(zq, scr[2], D, eps, BAR1, BT)
        _store_out(zq, qc, mo, ro, ln_w, ln_b, o_p, t0, T, stride_ot, BS, 1, MASKED, FLA_RESIDUAL, D, BT)
    return eg, kbt, zq, qc


@gluon.jit
def _update(es2, kbt, acc):
    """acc + K^T eg' in S's layout: acc[r, :] + sum_t eg'[t, pi(r)] k[t, :] (kbt: K as the B operand)."""
    return mma_v2(es2.permute((1, 0)).load(AT), kbt, acc)


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
def _main_loop(
    q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS, S, bv,
    te, te_last, ln_w, ln_b, eps, FOLD: gl.constexpr, FLA_RESIDUAL: gl.constexpr, BAR1: gl.constexpr,
    EARLY: gl.constexpr, SKEW: gl.constexpr, NBUF: gl.constexpr, D: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    """Full mini-batches from t = n_head, q/k/v by cp.async into a ring of NBUF buffers. FOLD (te_last != 0): the
    update W <- W - te_last K^T (eta G) is the MMA's own accumulate, W += K^T eg' with eg' = -te_last eta G, and the
    output path's te is scaled by 1 / -te_last so its product with eg' is unchanged. Without FOLD (te_last = 0) the
    state does not change."""
    rows = gl.arange(0, BT, layout=ROW)
    if FOLD:
        scale = -te_last
        te_out = te / scale
    else:
        scale = te_last * 0.0 + 1.0
        te_out = te
    for i in gl.static_range(NBUF - 1):
        _copy_tiles(qs.index(i), ks.index(i), vs.index(i), q_p, k_p, v_p, n_head + i * BS, T, stride_qt, D, BT)
    eta_n = gl.load(e_p + (n_head + rows) * stride_et, mask=n_head + rows < T, other=0.0).to(gl.float32)
    pzq = gl.full([BT, D], 0.0, gl.float32, MZ)  # SKEW: the mini-batch before's Zq and q (none before the first)
    pq = gl.full([BT, D], 0.0, gl.bfloat16, MZ)
    for c in range(0, n_full):
        t0 = n_head + c * BS
        st = c % NBUF
        async_copy.wait_group(NBUF - 2)  # this mini-batch's copy has landed; a later one may be in flight
        gl.thread_barrier()  # its tiles are visible to every warp
        eta = eta_n
        eta_n = gl.load(e_p + (t0 + BS + rows) * stride_et, mask=t0 + BS + rows < T, other=0.0).to(gl.float32)
        Wb = _as_b(S, D)
        eg, kbt, pzq, pq = _mini_batch(
            qs.index(st), ks.index(st), vs.index(st), es, es2, scr, eta, Wb, bv, Wb, bv, te_out, te_out, scale,
            ln_w, ln_b, o_p, t0, T, stride_ot, BS, eps, False, False, FLA_RESIDUAL, BAR1, EARLY, SKEW, pzq, pq,
            t0 - BS, c, D, BT,
        )  # fmt: skip
        # The copy NBUF - 1 mini-batches ahead goes behind _mini_batch's last barrier, after every read of this
        # one's buffers, into the buffer that mini-batch c - 1 used: it needs no barrier of its own.
        nb = (c + NBUF - 1) % NBUF
        t_nb = t0 + (NBUF - 1) * BS
        _copy_tiles(qs.index(nb), ks.index(nb), vs.index(nb), q_p, k_p, v_p, t_nb, T, stride_qt, D, BT)
        if FOLD:
            S = _update(es2, kbt, S)
            bv += gl.sum(eg, axis=0)
    if SKEW:  # the last mini-batch's outputs
        mo, ro = _stats(pzq, scr[2], D, eps, True, BT)
        t_last = n_head + (n_full - 1) * BS
        _store_out(pzq, pq, mo, ro, ln_w, ln_b, o_p, t_last, T, stride_ot, BS, n_full, True, FLA_RESIDUAL, D, BT)
    async_copy.wait_group(0)
    gl.thread_barrier()  # the buffers are free for the tail
    return S, bv


@gluon.jit
def _edge_mini_batch(
    q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, t0, T, stride_qt, stride_et, stride_ot, BS, S, bv, Sacc,
    bacc, te, ln_w, ln_b, eps, HAS_ACC: gl.constexpr, FLA_RESIDUAL: gl.constexpr, BAR1: gl.constexpr,
    EARLY: gl.constexpr, D: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    """A partial mini-batch (rows t0 + [0, BT) clipped to [0, T)): the head chunk (HAS_ACC, t0 < 0) or the ragged
    tail. Writes its outputs and returns (Sacc + K^T (eta G) in S's layout, bacc + sum_j eta_j G_j)."""
    rows = gl.arange(0, BT, layout=ROW)
    _stage_rows(qs.index(0), q_p, t0, T, stride_qt, BS, D, BT)
    _stage_rows(ks.index(0), k_p, t0, T, stride_qt, BS, D, BT)
    _stage_rows(vs.index(0), v_p, t0, T, stride_qt, BS, D, BT)
    t = t0 + rows
    eta = gl.load(e_p + t * stride_et, mask=(rows < BS) & (t >= 0) & (t < T), other=0.0).to(gl.float32)
    gl.thread_barrier()
    eg, kbt, _, _ = _mini_batch(
        qs.index(0), ks.index(0), vs.index(0), es, es2, scr, eta, _as_b(S, D), bv, _as_b(Sacc, D), bacc, te, te,
        1.0, ln_w, ln_b, o_p, t0, T, stride_ot, BS, eps, True, HAS_ACC, FLA_RESIDUAL, BAR1, EARLY, False, None, None,
        0, 0, D, BT,
    )  # fmt: skip
    Sacc = _update(es2, kbt, Sacc)
    gl.thread_barrier()  # shared memory is free again
    return Sacc, bacc + gl.sum(eg, axis=0)


@gluon.jit
def _ttt_linear_prefill_gluon_kernel(
    q_ptr, k_ptr, v_ptr, eta_ptr, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wacc_ptr, bacc_ptr, off_ptr,
    o_ptr, Wo_ptr, bo_ptr, Wacco_ptr, bacco_ptr, T, H, BS,
    stride_qb, stride_qh, stride_qt, stride_eb, stride_eh, stride_et, stride_ob, stride_oh, stride_ot, eps,
    FLA_RESIDUAL: gl.constexpr, BAR1: gl.constexpr, EARLY: gl.constexpr, SKEW: gl.constexpr, NBUF: gl.constexpr,
    D: gl.constexpr, BT: gl.constexpr,
):  # fmt: skip
    pid = gl.program_id(0)
    bi = pid // H
    hi = pid % H
    qo = bi.to(gl.int64) * stride_qb + hi.to(gl.int64) * stride_qh
    q_p, k_p, v_p = q_ptr + qo, k_ptr + qo, v_ptr + qo
    e_p = eta_ptr + bi.to(gl.int64) * stride_eb + hi.to(gl.int64) * stride_eh
    o_p = o_ptr + bi.to(gl.int64) * stride_ob + hi.to(gl.int64) * stride_oh
    # S[r, i] = W[i, pi(r)]; the accumulators are kept in the same layout
    sr = gl.arange(0, D, layout=gl.SliceLayout(1, MT))
    si = gl.arange(0, D, layout=gl.SliceLayout(0, MT))
    s_ofs = pid.to(gl.int64) * D * D + si[None, :] * D + _pi(sr)[:, None]
    cols = gl.arange(0, D, layout=COL)
    rows = gl.arange(0, BT, layout=ROW)
    vofs = pid.to(gl.int64) * D + cols
    S = gl.load(W_ptr + s_ofs)
    bv = gl.load(b_ptr + vofs)
    ln_w = gl.load(lnw_ptr + hi * D + cols)
    ln_b = gl.load(lnb_ptr + hi * D + cols)
    te = gl.load(te_ptr + rows)
    te_last = gl.load(te_ptr + BS - 1)
    qs = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    ks = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    vs = gl.allocate_shared_memory(gl.bfloat16, [NBUF, BT, D], SH)
    es = gl.allocate_shared_memory(gl.bfloat16, [BT, D], SH)
    es2 = gl.allocate_shared_memory(gl.bfloat16, [BT, D], SH)
    # BAR1's scratch: two buffers for each of a mini-batch's three row reductions, each its own allocation (the
    # barrier analysis takes slices of one allocation for overlapping, and would put a barrier before each write)
    scr = (
        (gl.allocate_shared_memory(gl.float32, [BT, 4], SCR), gl.allocate_shared_memory(gl.float32, [BT, 4], SCR)),
        (gl.allocate_shared_memory(gl.float32, [BT, 4], SCR), gl.allocate_shared_memory(gl.float32, [BT, 4], SCR)),
        (gl.allocate_shared_memory(gl.float32, [BT, 4], SCR), gl.allocate_shared_memory(gl.float32, [BT, 4], SCR)),
    )

    o0 = gl.load(off_ptr).to(gl.int32)  # tokens of the current mini-batch already consumed (read on the device)
    n_head = o0 * 0
    if o0 > 0:  # head chunk: finish the partial mini-batch the state started in (rows o0..BS-1 map to t = 0..)
        Sacc, bacc = _edge_mini_batch(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, -o0, T, stride_qt, stride_et, stride_ot, BS, S, bv,
            gl.load(Wacc_ptr + s_ofs), gl.load(bacc_ptr + vofs), te, ln_w, ln_b, eps, True, FLA_RESIDUAL, BAR1, EARLY,
            D, BT,
        )  # fmt: skip
        n_head = gl.minimum(BS - o0, T)
        if o0 + T >= BS:  # the mini-batch completes: fold it into W, b
            S -= te_last * Sacc
            bv -= te_last * bacc
        else:  # it stays open (then nothing follows): its sums are the output accumulators
            gl.store(Wacco_ptr + s_ofs, Sacc)
            gl.store(bacco_ptr + vofs, bacc)

    n_full = (T - n_head) // BS
    if te_last != 0:
        S, bv = _main_loop(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS,
            S, bv, te, te_last, ln_w, ln_b, eps, True, FLA_RESIDUAL, BAR1, EARLY, SKEW, NBUF, D, BT,
        )  # fmt: skip
    else:  # a zero te_last (no update) cannot be folded into the scale
        S, bv = _main_loop(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, n_head, n_full, T, stride_qt, stride_et, stride_ot, BS,
            S, bv, te, te_last, ln_w, ln_b, eps, False, FLA_RESIDUAL, BAR1, EARLY, SKEW, NBUF, D, BT,
        )  # fmt: skip

    t_tail = n_head + n_full * BS
    if t_tail < T:  # ragged tail: its gradient sums go to the accumulators
        dS, db = _edge_mini_batch(
            q_p, k_p, v_p, e_p, o_p, qs, ks, vs, es, es2, scr, t_tail, T, stride_qt, stride_et, stride_ot, BS, S, bv,
            gl.full([D, D], 0.0, gl.float32, MT), gl.full([D], 0.0, gl.float32, COL), te, ln_w, ln_b, eps, False,
            FLA_RESIDUAL, BAR1, EARLY, D, BT,
        )  # fmt: skip
        gl.store(Wacco_ptr + s_ofs, dS)
        gl.store(bacco_ptr + vofs, db)
    if (t_tail >= T) & ((o0 == 0) | (o0 + T >= BS)):  # no open mini-batch at the end
        gl.store(Wacco_ptr + s_ofs, gl.full([D, D], 0.0, gl.float32, MT))
        gl.store(bacco_ptr + vofs, gl.full([D], 0.0, gl.float32, COL))
    gl.store(Wo_ptr + s_ofs, S)
    gl.store(bo_ptr + vofs, bv)


def unsupported(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: tuple[torch.Tensor, ...],
    mini_batch_size: int,
    precision: str,
) -> str | None:
    """Why the Gluon kernel cannot take these inputs (state: W, b, W_acc, b_acc), or None when it can."""
    if not q.is_cuda:
        return f"needs CUDA tensors, got device '{q.device}'"
    if torch.cuda.get_device_capability(q.device) < (8, 0):
        return "needs compute capability 8.0 or newer (mma.sync, cp.async)"
    if not (q.dtype == k.dtype == v.dtype == torch.bfloat16):
        return f"needs bfloat16 q/k/v, got {q.dtype}"
    if q.shape[-1] != D_GLUON or mini_batch_size != BS_GLUON:
        return f"is written for head_dim {D_GLUON}, mini_batch_size {BS_GLUON} (got {q.shape[-1]}, {mini_batch_size})"
    if precision != "bf16":
        return f"computes with bf16 operands only (precision={precision!r})"
    if any(x.dtype != torch.float32 for x in state):
        return f"keeps a float32 state (got {state[0].dtype})"
    if not (q.stride() == k.stride() == v.stride() and q.stride(-1) == 1 and q.stride(2) % 8 == 0):
        return f"needs q/k/v with one set of strides, unit last stride, 16-byte rows (strides {q.stride()})"
    if any(x.data_ptr() % 16 for x in (q, k, v)):
        return "needs 16-byte aligned q/k/v (cp.async)"
    return None


def launch(
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
    out: torch.Tensor,
    Wo: torch.Tensor,
    bo: torch.Tensor,
    Wao: torch.Tensor,
    bao: torch.Tensor,
    *,
    eps: float,
    fla_residual: bool = False,
    maxnreg: int | None = None,
    bar1: bool = True,
    nbuf: int = 3,
    early: bool = False,
    defer_out: bool = False,
) -> None:
    """Runs the kernel into `out` and the output state tensors (float32, contiguous); inputs as checked by
    `unsupported`. maxnreg: None is MAXNREG, 0 no cap. bar1: LayerNorm row sums with one CTA barrier each (else
    gl.reduce's two). nbuf: q/k/v buffers in the cp.async ring (3: copies 1.5 mini-batches ahead; 2: half of one).
    early: Zq's state part and Q K^T issued beside the chain, ahead of its first barrier, instead of after it.
    defer_out (needs bar1): each mini-batch's output LayerNorm and store in the next one's iteration, its row sums in
    the chain's first reduction (4 barriers a mini-batch instead of 5). Measured: bench/notes/session8.md."""
    B, H, T, D = q.shape
    cap = MAXNREG if maxnreg is None else maxnreg
    f32 = [x.float().contiguous() for x in (token_eta, ln_w, ln_b, W, b, W_acc, b_acc)]
    _ttt_linear_prefill_gluon_kernel[(B * H,)](
        q, k, v, eta, *f32, offset, out, Wo, bo, Wao, bao, T, H, BS_GLUON,
        q.stride(0), q.stride(1), q.stride(2), eta.stride(0), eta.stride(1), eta.stride(2),
        out.stride(0), out.stride(1), out.stride(2), eps,
        FLA_RESIDUAL=fla_residual, BAR1=bar1, EARLY=early, SKEW=defer_out and bar1, NBUF=nbuf, D=D, BT=BS_GLUON,
        num_warps=4, **({"maxnreg": cap} if cap else {}),
    )  # fmt: skip
