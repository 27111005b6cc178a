"""The TTT-Linear layer's decode step as one launch: the prologue (q/k convs over the shared projection's window,
RoPE, eta) and the op's step, per (sequence, head), from the in-proj GEMM's output row P.

Every input the step needs from the prologue is local to a head: its 64 channels of the q/k projection (RoPE pairs
stay in the head), its v channels, its theta_lr logit. So one program does both, and the (3, B, 1, W) q/k/v
buffer, the eta tensor and two launches a layer (the prologue, and the offset advance of
`ttt.ops.ttt_linear.decode`) are gone. The mini-batch position comes from `pos` (the model's seqlen mod the
mini-batch, which the state's offset equals in every model flow: prefill sets both), so no program reads the
offset while another advances it: program 0 writes (pos + 1) mod b into the state's offset.

With `post_norm`, the layer's epilogue (post-norm LayerNorm over all heads, times GELU_tanh(gate)) runs here too,
so its launch goes: the last of a sequence's head programs to finish (an atomic counter a sequence, reset by that
program, as the skinny GEMM's split-K fixup) reads the sequence's whole z row back from L2 and writes o_proj's
input row, with `ttt_io.epilogue`'s math (the same device function, `ttt_io.norm_gate_rows`).

References: `ttt_io.prologue_step` then `ttt_linear_step_triton` (same device functions, same roundings), which is
what the layer runs without this kernel; tests/ttt/test_ttt_fused.py compares the two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ttt.fused._jit import rnd, sigmoid
from ttt.fused.skinny import workspace
from ttt.fused.ttt_io import InLayout, PrologueArgs, conv_ptrs, norm_gate_rows, qk_step, rope_rotate
from ttt.ops.common import LN_EPS, TTTLinearState, note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on
from ttt.ops.ttt_linear.decode import fused_step_launch, step_core, step_state_prefetch


@triton.jit
def _linear_decode_kernel(
    p_ptr, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr, cos_ptr, sin_ptr, lrb_ptr, pos_ptr, st_ptr,
    te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wacc_ptr, bacc_ptr, off_ptr, o_ptr, a_ptr, cnt_ptr, pw_ptr, pb_ptr,
    H, N, W, BS, q_off, k_off, v_off, lr_off, g_off, eta_scale, eps, post_eps,
    D: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, SHARE_QK: tl.constexpr, PDL: tl.constexpr,
    EPI: tl.constexpr, GATE: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    hi = pid % H
    step_state_prefetch(W_ptr, Wacc_ptr, pid, D, PDL)
    pdl_enter(PDL)
    r = tl.arange(0, D)
    c = hi * D + r
    pc = c ^ 1  # RoPE partner channel, in the same head (d is even)
    cm = r < D
    row = p_ptr + bi * N
    q, qp, k, kp = qk_step(row, st_ptr + bi * W * K, c, pc, cm, q_off, k_off, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr,
                           p_ptr, K, KP, SHARE_QK)  # fmt: skip
    p = tl.load(pos_ptr).to(tl.int32)
    tab = p * (D // 2) + r // 2
    cs = tl.load(cos_ptr + tab)
    sn = tl.load(sin_ptr + tab)
    # q, k, v in the model dtype, as the prologue stores them for the op
    q = rnd(rope_rotate(q, qp, cs, sn, c), p_ptr)
    k = rnd(rope_rotate(k, kp, cs, sn, c), p_ptr)
    v = tl.load(row + v_off + c).to(tl.float32)
    logit = rnd(tl.load(row + lr_off + hi).to(tl.float32) + tl.load(lrb_ptr + hi).to(tl.float32), p_ptr)
    eta = eta_scale * sigmoid(logit)
    out = step_core(q, k, v, eta, p, te_ptr, lnw_ptr, lnb_ptr, W_ptr, b_ptr, Wacc_ptr, bacc_ptr, pid, hi, BS, eps, D)
    tl.store(o_ptr + pid.to(tl.int64) * D + r, out.to(o_ptr.dtype.element_ty))
    if EPI:
        tl.debug_barrier()  # every thread's z is stored before the counter says so
        arrived = tl.atomic_add(cnt_ptr + bi, 1, sem="acq_rel", scope="gpu")
        if arrived == H - 1:
            cw = tl.arange(0, BW)
            cwm = cw < W
            # .cg: the other heads' z rows were written by other SMs; never read them through this SM's L1.
            m = cwm[None, :]
            zr = tl.load(o_ptr + bi * W + cw[None, :], mask=m, other=0.0, cache_modifier=".cg").to(tl.float32)
            y = norm_gate_rows(zr, m, cw, cwm, pw_ptr, pb_ptr, row + g_off + cw[None, :], W, post_eps, a_ptr, GATE)
            tl.store(a_ptr + bi * W + cw[None, :], y.to(a_ptr.dtype.element_ty), mask=m)
            tl.atomic_xchg(cnt_ptr + bi, 0, sem="relaxed", scope="gpu")  # ready for the next call
    if pid == 0:
        tl.store(off_ptr, ((p + 1) % BS).to(off_ptr.dtype.element_ty))


def linear_decode_step(
    P: torch.Tensor,
    lay: InLayout,
    a: PrologueArgs,
    conv_state: torch.Tensor | None,
    pos: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTLinearState,
    mini_batch_size: int,
    post_norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """P (B, 1, n) the in-proj GEMM's row, the q/k conv window (B, W, K) advanced in place (share_qk), `pos` a (1,)
    device tensor -> (z (B, H, 1, d), the op's output in P's dtype; with `post_norm` = the layer's post-norm
    (weight, bias, eps), also o_proj's input (B, 1, W), `ttt_io.epilogue(z, P, ...)`, else None); the state is
    updated in place (offset included). One launch, no host sync (CUDA-graph capturable; the first call of a batch
    size allocates the epilogue's counters, so it should come before capture, as decode warm-up does)."""
    B, T, N = P.shape
    H = N - lay.lr
    W = lay.v - lay.k
    D = a.head_dim
    assert T == 1 and P.is_contiguous() and H * D == W
    st = (state.W, state.b, state.W_acc, state.b_acc)
    assert all(t.is_contiguous() for t in st), "the fused step updates the state in place"
    if lay.share_qk:
        assert conv_state is not None and conv_state.is_contiguous() and conv_state.shape[:2] == (B, W)
    cqw, cqb, ckw, ckb, K = conv_ptrs(lay, a, P)
    z = torch.empty(B, H, 1, D, dtype=P.dtype, device=P.device)
    a_out, cnt, pw, pb, peps = z, z, z, z, 0.0
    if post_norm is not None:
        pw, pb, peps = post_norm
        a_out = torch.empty(B, 1, W, dtype=P.dtype, device=P.device)
        cnt = workspace(P.device, 0, B)[1]
    step_pdl, opts = fused_step_launch()
    pdl = pdl_on(P) and step_pdl
    note_kernel(f"ttt_linear_decode/fused{'+pdl' if pdl else ''}")
    _linear_decode_kernel[(B * H,)](
        P, cqw, cqb, ckw, ckb, a.cos, a.sin, a.lr_bias, pos, conv_state if conv_state is not None else P,
        token_eta, ln_w, ln_b, *st, state.offset, z, a_out, cnt, pw, pb,
        H, N, W, mini_batch_size, lay.q, lay.k, lay.v, lay.lr, lay.g if lay.g is not None else 0, a.eta_scale, LN_EPS,
        peps, D=D, K=K, KP=triton.next_power_of_2(K), SHARE_QK=lay.share_qk, PDL=pdl, EPI=post_norm is not None,
        GATE=lay.g is not None, BW=triton.next_power_of_2(W), **opts, **launch_opts(pdl),
    )  # fmt: skip
    return z, a_out if post_norm is not None else None
