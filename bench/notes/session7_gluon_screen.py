"""Screen: the TTT-Linear prefill main loop in Gluon with explicit layouts, against the production Triton kernel.

Why: four restructurings of the Triton loop body lost (sessions 6-7: skew, transposed state, 8 warps, lookahead):
a mini-batch costs its sequence of barrier-separated phases, and most of those are layout conversions Triton routes
through shared memory behind a CTA barrier. Here every layout is chosen so that the state never moves:
- 16 x 64 tiles (Z, G, Zq) are mma.sync accumulators with the 4 warps side by side over the d = 64 columns (MZ);
- the state is held transposed and row-permuted, S[r, i] = W[i, pi(r)] (MT, warps stacked over r), where pi sends
  warp w's 16 rows to the columns MZ gives warp w (8w..8w+7 and 32+8w..32+8w+7). Then S's accumulator fragments
  *are* the B operand of Z = K W and Zq = Q W (a register reinterpretation, asserted trivial at compile time), and
  the update S += (eg' permuted)^T K keeps every warp on its own 16 columns.
What still crosses warps: the three LayerNorm row reductions a mini-batch (over d) and the Q K^T tile.
Main loop only (offset 0, T a multiple of 16, mma_fold semantics, bf16 operands); checked against the production
kernel's output and final W on the same inputs.

    python3 bench/notes/session7_gluon_screen.py OUTDIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ttt.ops.common import LN_EPS  # noqa: E402

MZ = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 4], instr_shape=[16, 8]))
MT = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8]))
AZ = gl.constexpr(gl.DotOperandLayout(0, MZ, 2))
BZ = gl.constexpr(gl.DotOperandLayout(1, MZ, 2))
AT = gl.constexpr(gl.DotOperandLayout(0, MT, 2))
BTL = gl.constexpr(gl.DotOperandLayout(1, MT, 2))
ROW = gl.constexpr(gl.SliceLayout(1, MZ))
COL = gl.constexpr(gl.SliceLayout(0, MZ))
MS = gl.constexpr(gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8]))
LD = gl.constexpr(gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0]))  # coalesced 16 B a lane
SH = gl.constexpr(gl.SwizzledSharedLayout(vec=8, per_phase=1, max_phase=8, order=[1, 0]))


@gluon.jit
def _add2(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@gluon.jit
def _add7(a0, b0, c0, d0, e0, f0, g0, a1, b1, c1, d1, e1, f1, g1):
    return a0 + a1, b0 + b1, c0 + c1, d0 + d1, e0 + e1, f0 + f1, g0 + g1


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
def _row_stats(x, D: gl.constexpr, eps):
    s1, s2 = gl.reduce((x, x * x), 1, _add2)
    mu = s1 / D
    return mu, 1.0 / gl.sqrt(gl.maximum(s2 / D - mu * mu, 0.0) + eps)


@gluon.jit
def _gl_kernel(
    q_ptr, k_ptr, v_ptr, e_ptr, o_ptr, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wo_ptr, bo_ptr, T, H, BS, eps,
    D: gl.constexpr, BT: gl.constexpr, FUSED_LN: gl.constexpr,
):  # fmt: skip
    pid = gl.program_id(0)
    hi = pid % H
    base = pid.to(gl.int64) * T * D
    q_p, k_p, v_p, o_p = q_ptr + base, k_ptr + base, v_ptr + base, o_ptr + base
    e_p = e_ptr + pid.to(gl.int64) * T
    # S[r, i] = W[i, pi(r)]
    sr = gl.arange(0, D, layout=gl.SliceLayout(1, MT))
    si = gl.arange(0, D, layout=gl.SliceLayout(0, MT))
    s_ofs = pid.to(gl.int64) * D * D + si[None, :] * D + _pi(sr)[:, None]
    S = gl.load(W_ptr + s_ofs)
    cols = gl.arange(0, D, layout=COL)
    rows = gl.arange(0, BT, layout=ROW)
    bv = gl.load(b_ptr + pid.to(gl.int64) * D + cols)
    ln_w = gl.load(lnw_ptr + hi * D + cols)
    ln_b = gl.load(lnb_ptr + hi * D + cols)
    te = gl.load(te_ptr + rows)
    scale = -gl.load(te_ptr + BS - 1)
    te_out = te / scale
    sw2 = gl.sum(ln_w * ln_w, axis=0)
    swb = gl.sum(ln_w * ln_b, axis=0)
    zero = gl.full([BT, D], 0.0, gl.float32, MZ)
    # q, k, v double-buffered in shared memory by cp.async, the next mini-batch's copy in flight during this one's
    # math (the production kernel gets the same from Triton's pipeliner); each tile is then read in every layout
    # it is used in
    qs = gl.allocate_shared_memory(gl.bfloat16, [2, BT, D], SH)
    ks = gl.allocate_shared_memory(gl.bfloat16, [2, BT, D], SH)
    vs = gl.allocate_shared_memory(gl.bfloat16, [2, BT, D], SH)
    lr = gl.arange(0, BT, layout=gl.SliceLayout(1, LD))
    lc = gl.arange(0, D, layout=gl.SliceLayout(0, LD))
    ld_ofs = lr[:, None] * D + lc[None, :]
    async_copy.async_copy_global_to_shared(qs.index(0), q_p + ld_ofs)
    async_copy.async_copy_global_to_shared(ks.index(0), k_p + ld_ofs)
    async_copy.async_copy_global_to_shared(vs.index(0), v_p + ld_ofs)
    async_copy.commit_group()
    es = gl.allocate_shared_memory(gl.bfloat16, [BT, D], SH)
    es2 = gl.allocate_shared_memory(gl.bfloat16, [BT, D], SH)
    n_mb = T // BS
    eta_n = gl.load(e_p + rows).to(gl.float32)  # eta one mini-batch ahead in registers
    for c in range(0, n_mb):
        t0 = c * BS
        st = c % 2
        gl.thread_barrier()  # every warp is done with the buffer the next copy overwrites
        nxt = (t0 + BS + lr)[:, None] < T
        async_copy.async_copy_global_to_shared(qs.index(1 - st), q_p + (t0 + BS) * D + ld_ofs, mask=nxt)
        async_copy.async_copy_global_to_shared(ks.index(1 - st), k_p + (t0 + BS) * D + ld_ofs, mask=nxt)
        async_copy.async_copy_global_to_shared(vs.index(1 - st), v_p + (t0 + BS) * D + ld_ofs, mask=nxt)
        async_copy.commit_group()
        async_copy.wait_group(1)
        gl.thread_barrier()  # this mini-batch's tiles are visible to every warp
        kb = ks.index(st)
        qb = qs.index(st)
        ka = kb.load(AZ)
        qa = qb.load(AZ)
        kc = kb.load(MZ).to(gl.float32)
        vc = vs.index(st).load(MZ).to(gl.float32)
        eta = eta_n
        eta_n = gl.load(e_p + t0 + BS + rows, mask=t0 + BS + rows < T, other=0.0).to(gl.float32)
        Wb = _as_b(S, D)
        z = mma_v2(ka, Wb, zero + bv[None, :])
        y = vc - kc
        if FUSED_LN:  # Z's statistics and the backward's row sums in one cross-warp reduction (see prefill.py)
            w2 = (ln_w * ln_w)[None, :]
            wb = (ln_w * ln_b)[None, :]
            wy = ln_w[None, :] * y
            s1, s2, a1, a2, c1, c2, c3 = gl.reduce((z, z * z, w2 * z, w2 * z * z, wb * z, wy, wy * z), 1, _add7)
            mu = s1 / D
            rstd = 1.0 / gl.sqrt(gl.maximum(s2 / D - mu * mu, 0.0) + eps)
            sg = rstd * (a1 - mu * sw2) + swb - c2
            sgx = rstd * rstd * (a2 - 2.0 * mu * a1 + mu * mu * sw2) + rstd * (c1 - mu * swb) - rstd * (c3 - mu * c2)
            xhat = (z - mu[:, None]) * rstd[:, None]
            gx = (ln_w[None, :] * xhat + ln_b[None, :] - y) * ln_w[None, :]
        else:
            mu, rstd = _row_stats(z, D, eps)
            xhat = (z - mu[:, None]) * rstd[:, None]
            gx = (ln_w[None, :] * xhat + ln_b[None, :] - y) * ln_w[None, :]
            sg, sgx = gl.reduce((gx, gx * xhat), 1, _add2)
        g = (D * gx - sg[:, None] - xhat * sgx[:, None]) * (rstd / D)[:, None]
        eg = g * (eta * scale)[:, None]
        egb = eg.to(gl.bfloat16)
        # outputs: Zq = Q W + b - tril(te' (Q K^T + 1)) eg'
        # Q K^T by every warp in full (MS: the 16 x 16 tile replicated over the warps), so that its fragments are
        # the A operand of the product with eg' as they stand
        kt = kb.permute((1, 0)).load(gl.DotOperandLayout(1, MS, 2))  # B operand K^T (d x tokens)
        s = mma_v2(qb.load(gl.DotOperandLayout(0, MS, 2)), kt, gl.full([BT, BT], 0.0, gl.float32, MS))
        s_r = gl.arange(0, BT, layout=gl.SliceLayout(1, MS))
        s_c = gl.arange(0, BT, layout=gl.SliceLayout(0, MS))
        te_s = gl.convert_layout(te_out, gl.SliceLayout(1, MS))
        att = gl.where(s_r[:, None] >= s_c[None, :], -te_s[:, None] * (s + 1.0), 0.0)
        # eg' through shared memory once, read back as the B operand here and as the update's A operand below
        es.store(egb)
        es2.store(gl.reshape(gl.permute(gl.reshape(egb, [BT, 2, 4, 8]), (0, 2, 1, 3)), [BT, D]))
        gl.thread_barrier()
        zq = mma_v2(qa, Wb, zero + bv[None, :])
        zq = mma_v2(gl.convert_layout(att.to(gl.bfloat16), AZ, assert_trivial=True), es.load(BZ), zq)
        mo, ro = _row_stats(zq, D, eps)
        qc = qb.load(MZ).to(gl.float32)
        out = qc + (zq - mo[:, None]) * ro[:, None] * ln_w[None, :] + ln_b[None, :]
        gl.store(o_p + (t0 + rows)[:, None] * D + cols[None, :], out.to(gl.bfloat16))
        # update: S[r, :] += sum_t eg'[t, pi(r)] k[t, :]
        S = mma_v2(es2.permute((1, 0)).load(AT), kb.load(BTL), S)
        bv += gl.sum(eg, axis=0)
    gl.store(Wo_ptr + s_ofs, S)
    gl.store(bo_ptr + pid.to(gl.int64) * D + cols, bv)


def gluon_prefill(
    q, k, v, eta, token_eta, ln_w, ln_b, W, b, *, mini_batch_size=16, num_warps=4, maxnreg=None, fused_ln=False
):
    """(out, W, b): contiguous (B, H, T, 64) bf16 q/k/v, T a multiple of 16, mini-batch 16, no partial mini-batch."""
    B, H, T, D = q.shape
    assert D == 64 and mini_batch_size == 16 and T % 16 == 0 and all(x.is_contiguous() for x in (q, k, v, eta))
    out = torch.empty_like(q)
    Wo, bo = torch.empty_like(W, dtype=torch.float32), torch.empty_like(b, dtype=torch.float32)
    launch = {"maxnreg": maxnreg} if maxnreg else {}
    _gl_kernel[(B * H,)](
        q, k, v, eta, out, token_eta.float().contiguous(), ln_w.float().contiguous(), ln_b.float().contiguous(),
        W.float().contiguous(), b.float().contiguous(), Wo, bo, T, H, mini_batch_size, LN_EPS, D=D, BT=16, FUSED_LN=fused_ln,
        num_warps=num_warps, **launch,
    )  # fmt: skip
    return out, Wo, bo


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def main(outdir: str) -> None:
    from bench.op import TOKENS_A, Inputs, _time
    from ttt.ops.ttt_linear.prefill import ttt_linear_triton

    rows = []
    out_dir = Path(outdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = [("a", TOKENS_A // T, T) for T in (1024, 2048, 4096, 8192, 16384)] + [("b", 16, 2048), ("b", 16, 8192)]
    for shape, B, T in shapes:
        x = Inputs(B, T, torch.bfloat16)
        st = x.state()

        def prod(x=x, st=st):
            return ttt_linear_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=16)

        def glu(maxnreg=None, fused_ln=False, x=x, st=st):
            return gluon_prefill(
                x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st.W, st.b, maxnreg=maxnreg, fused_ln=fused_ln
            )

        def prod_lng(x=x, st=st):
            return ttt_linear_triton(
                x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=16, fused_ln_grad=True
            )

        ref = prod()
        variants = (
            ("production", prod), ("production-lng", prod_lng), ("gluon", glu), ("gluon-r168", lambda: glu(168)),
            ("gluon-lng", lambda: glu(fused_ln=True)), ("gluon-lng-r168", lambda: glu(168, True)),
        )  # fmt: skip
        for name, fn in variants:
            row = dict(shape=shape, B=B, T=T, programs=B * 32, impl=name)
            try:
                res = fn()
                W = res[1].W if name.startswith("production") else res[1]
                row |= dict(rel_out_vs_prod=_rel(res[0], ref[0]), rel_W_vs_prod=_rel(W, ref[1].W))
                med, lo, hi, _ = _time(fn, 200)
                row |= dict(ms=round(med, 4), p10=round(lo, 4), p90=round(hi, 4))
            except Exception as e:  # noqa: BLE001 (a screen: record the failure, keep going)
                row |= dict(error=f"{type(e).__name__}: {str(e)[:200]}")
            print(row, flush=True)
            rows.append(row)
        del x, st, ref
        torch.cuda.empty_cache()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "session7_gluon_screen.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
