"""Screen: TTT-Linear prefill with the state held transposed (W^T), so that every product with it is a wgmma with
the state as the register A operand (Z^T = W^T K^T, Zq^T = W^T Q^T, W^T += eg'^T K), against the production kernel.

Why: in the production kernel W is the wgmma accumulator of the update, but Z = K W has M = 16 rows (mma.sync),
which takes W as the B operand through shared memory each mini-batch (st.shared, bar.sync, ldmatrix on the
sequential chain), and eta*G goes through shared memory again as the update's B operand. Transposed, M = 64 (the
head dim), both chain products read their A operand from registers and their B operand (k) from the tile the
pipelined load already put in shared memory. Offline (sm_90a) the loop is 876 instructions a warp and mini-batch
against 674 and has 21 bar.sync against 15 (the token-axis LayerNorm reductions cross 8 lanes instead of 4), so
only the chain latency can win: this screen measures it. Main loop only (offset 0, T a multiple of 16, mma_fold
semantics); the check is against the production kernel's output and final W on the same inputs.

Also the grid probe: the production kernel at T = 8k with 132 / 264 / 396 / 528 programs, microseconds per mini-batch,
which says whether a program's chain (one program an SM) or the SM's issue (several) bounds shape (a) at T >= 4k.

    python3 bench/notes/session6_transposed_screen.py OUTDIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ttt.ops.common import LN_EPS  # noqa: E402
from ttt.ops.triton_common import add2, dot, dot_acc, load_chunk, operand  # noqa: E402


@triton.jit
def _ln_cols(x, D: tl.constexpr, eps):
    """(mean, rstd) of each column of a (D, BT) tile: the LayerNorm of each token held transposed."""
    s1, s2 = tl.reduce((x, x * x), 0, add2)
    mu = s1 / D
    return mu, 1.0 / tl.sqrt(tl.maximum(s2 / D - mu * mu, 0.0) + eps)


@triton.jit
def _tr_kernel(
    q_ptr, k_ptr, v_ptr, e_ptr, o_ptr, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wo_ptr, bo_ptr, T, H, BS, eps,
    PREC: tl.constexpr, D: tl.constexpr, BT: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    hi = pid % H
    d = tl.arange(0, D)
    r = tl.arange(0, BT)
    base = pid.to(tl.int64) * T * D
    q_p, k_p, v_p, o_p = q_ptr + base, k_ptr + base, v_ptr + base, o_ptr + base
    e_p = e_ptr + pid.to(tl.int64) * T
    wt_ofs = pid.to(tl.int64) * D * D + d[None, :] * D + d[:, None]  # W^T[i, j] = W[j, i]
    WT = tl.load(W_ptr + wt_ofs)
    # b broadcast over the BT token columns: the bias then lives in the products' accumulator layout
    b_ofs = pid.to(tl.int64) * D + d[:, None] + 0 * r[None, :]
    bv = tl.load(b_ptr + b_ofs)
    ln_w = tl.load(lnw_ptr + hi * D + d)[:, None]
    ln_b = tl.load(lnb_ptr + hi * D + d)[:, None]
    te = tl.load(te_ptr + r, mask=r < BS, other=0.0)
    scale = -tl.load(te_ptr + BS - 1)
    te_out = te / scale
    for c in range(0, T // BS):
        t0 = c * BS
        q, k, v, eta = load_chunk(q_p, k_p, v_p, e_p, t0, T, D, 1, BS, D, BT)
        t = t0 + r
        vk_t = tl.load(v_p + t[None, :] * D + d[:, None]).to(tl.float32) - tl.load(
            k_p + t[None, :] * D + d[:, None]
        ).to(tl.float32)
        WTb = operand(WT, PREC)
        zt = dot_acc(WTb, tl.trans(k), bv, PREC)
        mu, rstd = _ln_cols(zt, D, eps)
        xhat = (zt - mu[None, :]) * rstd[None, :]
        gx = (ln_w * xhat + ln_b - vk_t) * ln_w
        sg, sgx = tl.reduce((gx, gx * xhat), 0, add2)
        g = (D * gx - sg[None, :] - xhat * sgx[None, :]) * (rstd / D)[None, :]
        egt = g * (eta.to(tl.float32) * scale)[None, :]
        egb = operand(egt, PREC)
        zqt = dot_acc(WTb, tl.trans(q), bv, PREC)
        st = dot(k, tl.trans(q), PREC) + 1.0  # st[j, t] = k_j . q_t + 1
        m = tl.where(r[:, None] <= r[None, :], st * te_out[None, :], 0.0)
        zqt -= dot(egb, m, PREC)
        muo, rstdo = _ln_cols(zqt, D, eps)
        outt = tl.trans(q).to(tl.float32) + (zqt - muo[None, :]) * rstdo[None, :] * ln_w + ln_b
        tl.store(o_p + t[None, :] * D + d[:, None], outt.to(o_ptr.dtype.element_ty))
        WT = dot_acc(egb, k, WT, PREC)
        bv += tl.sum(egt, axis=1)[:, None]
    tl.store(Wo_ptr + wt_ofs, WT)
    tl.store(bo_ptr + b_ofs, bv, mask=(r == 0)[None, :])


def transposed_prefill(
    q, k, v, eta, token_eta, ln_w, ln_b, W, b, *, mini_batch_size=16, num_warps=4, maxnreg=None, precision="bf16"
):
    """(out, W, b) of the transposed kernel: contiguous (B, H, T, 64) bf16 q/k/v, T a multiple of the mini-batch,
    no partial mini-batch in the state."""
    B, H, T, D = q.shape
    assert T % mini_batch_size == 0 and all(x.is_contiguous() for x in (q, k, v, eta))
    out = torch.empty_like(q)
    Wo, bo = torch.empty_like(W, dtype=torch.float32), torch.empty_like(b, dtype=torch.float32)
    launch = {"maxnreg": maxnreg} if maxnreg else {}
    _tr_kernel[(B * H,)](
        q, k, v, eta, out, token_eta, ln_w.contiguous(), ln_b.contiguous(), W.float().contiguous(),
        b.float().contiguous(), Wo, bo, T, H, mini_batch_size, LN_EPS, PREC=precision, D=D, BT=16, num_warps=num_warps, **launch,
    )  # fmt: skip
    return out, Wo, bo


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _prefill_variants(x, st) -> dict:
    """name -> callable on the op inputs x and state st: the production kernel and the transposed one."""
    from ttt.ops.ttt_linear.prefill import ttt_linear_triton

    def prod(**kw):
        return ttt_linear_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=16, **kw)

    def tr(**kw):
        return transposed_prefill(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st.W, st.b, **kw)

    return {
        "production": prod,
        "production-r168": lambda: prod(maxnreg=168),
        "production-w8-r128": lambda: prod(num_warps=8, maxnreg=128),
        "transposed": tr,
        "transposed-r168": lambda: tr(maxnreg=168),
    }


def _row(screen: str, x, programs: int, name: str, fn, ref=None) -> dict:
    """One timed row; with `ref` (the production (out, state)) also the output / final-W error against it."""
    from bench.op import _time

    row = dict(screen=screen, T=x.T, B=x.B, programs=programs, impl=name)
    if ref is not None:
        res = fn()
        W = res[1].W if name.startswith("production") else res[1]
        row |= dict(rel_out_vs_prod=_rel(res[0], ref[0]), rel_W_vs_prod=_rel(W, ref[1].W))
    med, lo, hi, _ = _time(fn, 200)
    row |= dict(
        ms=round(med, 4), p10=round(lo, 4), p90=round(hi, 4), us_per_mini_batch=round(med * 1e3 / (x.T // 16), 4)
    )
    print(row, flush=True)
    return row


def main(outdir: str) -> None:
    from bench.op import TOKENS_A, Inputs
    from ttt.ops.ttt_linear import init_state

    rows = []
    out_dir = Path(outdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for T in (1024, 2048, 4096, 8192, 16384, 32768):
        x = Inputs(TOKENS_A // T, T, torch.bfloat16)
        st = x.state()
        v = _prefill_variants(x, st)
        ref = v["production"]()
        for name in ("production", "transposed", "transposed-r168"):
            rows.append(_row("transposed", x, x.B * 32, name, v[name], ref))
        del x, st, v, ref
        torch.cuda.empty_cache()
    H = 33  # one program an SM on a 132-SM part at B = 4
    for programs in (132, 264, 396, 528):
        x = Inputs(programs // H, 8192, torch.bfloat16)  # only its sizes, token_eta and W0 are used
        x.q, x.k, x.v = (torch.randn(x.B, H, x.T, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        x.eta = torch.full((x.B, H, x.T), 1.0 / 128, device="cuda", dtype=torch.bfloat16)
        x.ln_w, x.ln_b = (t[:1].expand(H, -1).contiguous() for t in (x.ln_w, x.ln_b))
        st = init_state(x.W0[:1].expand(H, -1, -1).contiguous(), x.b0[:1].expand(H, -1).contiguous(), x.B)
        v = _prefill_variants(x, st)
        for name in ("production", "production-r168", "production-w8-r128", "transposed"):
            rows.append(_row("grid", x, programs, name, v[name]))
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out_dir / "session6_transposed_screen.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
