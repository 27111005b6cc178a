"""The TTT layer's prologue and epilogue around the op, for the fused inference path.

The layer runs one GEMM for all its input projections: P = x [W_q|qk; (W_k;) W_v; (W_g;) theta_lr]^T, one row of
`InLayout.n` columns per token. Then:
  prologue: (share_qk) the q and k causal depthwise convs over the shared projection, interleaved RoPE with
            positions mod the mini-batch, eta = ttt_base_lr / d * sigmoid(P_lr + b_lr); writes q, k, v into one
            (3, B, T, W) buffer, so each is a (B, H, T, d) view with the strides the op kernels take, and eta as
            (B, T, H) fp32. Decode variant: one token, conv window from the cache, RoPE position from a device
            tensor, the window advanced in place.
  epilogue: post-LayerNorm over the full width of the op's output (read through its strides), then the gate
            GELU_tanh(P_g) * y; the result (B, T, W) feeds o_proj.
References: `TTTBase._qkv`, `_rope`, `eta` and `_output` in `ttt.layer` (their PyTorch code); the kernels round to
the model dtype where those materialise tensors in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ttt.fused._jit import gelu_tanh, rnd, sigmoid
from ttt.ops.common import note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on


@dataclass(frozen=True)
class InLayout:
    """Column offsets inside one row of P; `k == q` when q and k share one projection (then convolved apart)."""

    q: int
    k: int
    v: int
    g: int | None
    lr: int
    n: int

    @property
    def share_qk(self) -> bool:
        return self.q == self.k


def in_layout(width: int, num_heads: int, share_qk: bool, use_gate: bool) -> InLayout:
    """Offsets for the concatenation order [qk | q, k] + [v] + [g] + [theta_lr] (ttt.layer builds the weight)."""
    q, k = (0, 0) if share_qk else (0, width)
    v = k + width
    g = v + width if use_gate else None
    lr = (g if g is not None else v) + width
    return InLayout(q=q, k=k, v=v, g=g, lr=lr, n=lr + num_heads)


@triton.jit
def rope_rotate(x, xp, cs, sn, c):
    """Interleaved RoPE given each channel's pair partner xp (= x[c ^ 1]): (x0 cos - x1 sin, x1 cos + x0 sin);
    c: channel indices along the last axis of x."""
    return x * cs + tl.where(c % 2 == 0, -xp, xp) * sn


@triton.jit
def _eta_rows(p_row, lrb_ptr, eta_row, rmask, H, lr_off, eta_scale, like_ptr, BH: tl.constexpr):
    """eta for a block of rows: p_row/eta_row are per-row pointers (R, 1); logits rounded like F.linear's output."""
    hh = tl.arange(0, BH)
    hm = hh < H
    m = rmask & hm[None, :]
    lr = tl.load(p_row + lr_off + hh[None, :], mask=m, other=0.0).to(tl.float32)
    logit = rnd(lr + tl.load(lrb_ptr + hh, mask=hm, other=0.0).to(tl.float32)[None, :], like_ptr)
    tl.store(eta_row + hh[None, :], eta_scale * sigmoid(logit), mask=m)


@triton.jit
def _prologue_kernel(
    p_ptr, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr, cos_ptr, sin_ptr, lrb_ptr, qkv_ptr, eta_ptr, st_ptr,
    B, T, N, W, H, q_off, k_off, v_off, lr_off, eta_scale,
    D: tl.constexpr, MBS: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, SHARE_QK: tl.constexpr,
    HAS_STATE: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    tm = t < T
    c = pid_c * BC + tl.arange(0, BC)
    cm = c < W
    pc = c ^ 1  # RoPE partner channel (same head: d is even)
    m = tm[:, None] & cm[None, :]
    seq = p_ptr + b * T * N
    rows = seq + t.to(tl.int64)[:, None] * N
    if SHARE_QK:
        q = tl.zeros([BT, BC], dtype=tl.float32)
        qp = tl.zeros([BT, BC], dtype=tl.float32)
        k = tl.zeros([BT, BC], dtype=tl.float32)
        kp = tl.zeros([BT, BC], dtype=tl.float32)
        for j in tl.static_range(K):
            ts = t - (K - 1) + j
            mj = ((ts >= 0) & tm)[:, None] & cm[None, :]
            src = seq + ts.to(tl.int64)[:, None] * N + q_off
            x = tl.load(src + c[None, :], mask=mj, other=0.0).to(tl.float32)
            xp = tl.load(src + pc[None, :], mask=mj, other=0.0).to(tl.float32)
            q += tl.load(cqw_ptr + c * K + j, mask=cm, other=0.0).to(tl.float32)[None, :] * x
            qp += tl.load(cqw_ptr + pc * K + j, mask=cm, other=0.0).to(tl.float32)[None, :] * xp
            k += tl.load(ckw_ptr + c * K + j, mask=cm, other=0.0).to(tl.float32)[None, :] * x
            kp += tl.load(ckw_ptr + pc * K + j, mask=cm, other=0.0).to(tl.float32)[None, :] * xp
        # conv outputs in the model dtype (F.conv1d's), bias included
        q = rnd(q + tl.load(cqb_ptr + c, mask=cm, other=0.0).to(tl.float32)[None, :], qkv_ptr)
        qp = rnd(qp + tl.load(cqb_ptr + pc, mask=cm, other=0.0).to(tl.float32)[None, :], qkv_ptr)
        k = rnd(k + tl.load(ckb_ptr + c, mask=cm, other=0.0).to(tl.float32)[None, :], qkv_ptr)
        kp = rnd(kp + tl.load(ckb_ptr + pc, mask=cm, other=0.0).to(tl.float32)[None, :], qkv_ptr)
    else:
        q = tl.load(rows + q_off + c[None, :], mask=m, other=0.0).to(tl.float32)
        qp = tl.load(rows + q_off + pc[None, :], mask=m, other=0.0).to(tl.float32)
        k = tl.load(rows + k_off + c[None, :], mask=m, other=0.0).to(tl.float32)
        kp = tl.load(rows + k_off + pc[None, :], mask=m, other=0.0).to(tl.float32)
    tab = (t % MBS)[:, None] * (D // 2) + ((c % D) // 2)[None, :]
    cs = tl.load(cos_ptr + tab, mask=m, other=0.0)
    sn = tl.load(sin_ptr + tab, mask=m, other=0.0)
    plane = (b * 0 + B) * T * W  # int64 (b is): q, k, v planes of the (3, B, T, W) output (2 * plane may pass 2**31)
    out = qkv_ptr + (b * T + t.to(tl.int64))[:, None] * W + c[None, :]
    tl.store(out, rope_rotate(q, qp, cs, sn, c).to(qkv_ptr.dtype.element_ty), mask=m)
    tl.store(out + plane, rope_rotate(k, kp, cs, sn, c).to(qkv_ptr.dtype.element_ty), mask=m)
    tl.store(out + 2 * plane, tl.load(rows + v_off + c[None, :], mask=m, other=0.0), mask=m)
    if pid_c == 0:
        erow = eta_ptr + (b * T + t.to(tl.int64))[:, None] * H
        _eta_rows(rows, lrb_ptr, erow, tm[:, None], H, lr_off, eta_scale, qkv_ptr, BH)
    if HAS_STATE:
        if pid_t == (T - 1) // BT:
            # The decode window of the shared q/k projection: its last K rows, oldest first, zeros before the start.
            s = tl.arange(0, KP)
            t_win = T - K + s
            ms = ((s < K) & (t_win >= 0))[:, None] & cm[None, :]
            xs = tl.load(seq + t_win.to(tl.int64)[:, None] * N + q_off + c[None, :], mask=ms, other=0.0)
            sp = st_ptr + b * W * K + c[None, :] * K + s[:, None]
            tl.store(sp, xs.to(st_ptr.dtype.element_ty), mask=(s < K)[:, None] & cm[None, :])


@triton.jit
def window_conv(st_ptr, new, ch, cm, cw_ptr, cb_ptr, like_ptr, K: tl.constexpr, KP: tl.constexpr):
    """One decode step of a causal depthwise conv on channels `ch`: the window (state[..., 1:], new) and its output
    with products, sum and bias rounded like `CausalDepthwiseConv.step`'s elementwise ops."""
    s = tl.arange(0, KP)
    older = tl.load(st_ptr + ch[:, None] * K + s[None, :] + 1, mask=cm[:, None] & (s < K - 1)[None, :], other=0.0)
    win = tl.where((s == K - 1)[None, :], new[:, None], older.to(tl.float32))
    w = tl.load(cw_ptr + ch[:, None] * K + s[None, :], mask=cm[:, None] & (s < K)[None, :], other=0.0)
    y = rnd(tl.sum(rnd(win * w.to(tl.float32), like_ptr), axis=1), like_ptr)
    return win, rnd(y + tl.load(cb_ptr + ch, mask=cm, other=0.0).to(tl.float32), like_ptr)


@triton.jit
def qk_step(row, st, c, pc, cm, q_off, k_off, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr, like_ptr, K: tl.constexpr,
            KP: tl.constexpr, SHARE_QK: tl.constexpr):  # fmt: skip
    """One decode token's pre-RoPE q and k on channels c, and on their RoPE partners pc, from the in-proj row `row`
    (fp32). SHARE_QK: both convs over the shared projection's window `st` (B's (W, K) slice), which is advanced in
    place for channels c; else q and k read as they are."""
    if SHARE_QK:
        x = tl.load(row + q_off + c, mask=cm, other=0.0).to(tl.float32)
        xp = tl.load(row + q_off + pc, mask=cm, other=0.0).to(tl.float32)
        win, q = window_conv(st, x, c, cm, cqw_ptr, cqb_ptr, like_ptr, K, KP)
        _, qp = window_conv(st, xp, pc, cm, cqw_ptr, cqb_ptr, like_ptr, K, KP)
        _, k = window_conv(st, x, c, cm, ckw_ptr, ckb_ptr, like_ptr, K, KP)
        _, kp = window_conv(st, xp, pc, cm, ckw_ptr, ckb_ptr, like_ptr, K, KP)
        # Partners' windows were read by other threads of this program: every read lands before any write.
        tl.debug_barrier()
        s = tl.arange(0, KP)
        tl.store(st + c[:, None] * K + s[None, :], win.to(st.dtype.element_ty), mask=cm[:, None] & (s < K)[None, :])
    else:
        q = tl.load(row + q_off + c, mask=cm, other=0.0).to(tl.float32)
        qp = tl.load(row + q_off + pc, mask=cm, other=0.0).to(tl.float32)
        k = tl.load(row + k_off + c, mask=cm, other=0.0).to(tl.float32)
        kp = tl.load(row + k_off + pc, mask=cm, other=0.0).to(tl.float32)
    return q, qp, k, kp


@triton.jit
def _prologue_step_kernel(
    p_ptr, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr, cos_ptr, sin_ptr, lrb_ptr, pos_ptr, qkv_ptr, eta_ptr, st_ptr,
    B, N, W, H, q_off, k_off, v_off, lr_off, eta_scale,
    D: tl.constexpr, K: tl.constexpr, KP: tl.constexpr, SHARE_QK: tl.constexpr, BC: tl.constexpr,
    BH: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pdl_enter(PDL)
    pid_c = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    c = pid_c * BC + tl.arange(0, BC)
    cm = c < W
    pc = c ^ 1
    row = p_ptr + b * N
    q, qp, k, kp = qk_step(row, st_ptr + b * W * K, c, pc, cm, q_off, k_off, cqw_ptr, cqb_ptr, ckw_ptr, ckb_ptr,
                           qkv_ptr, K, KP, SHARE_QK)  # fmt: skip
    tab = tl.load(pos_ptr).to(tl.int32) * (D // 2) + (c % D) // 2
    cs = tl.load(cos_ptr + tab, mask=cm, other=0.0)
    sn = tl.load(sin_ptr + tab, mask=cm, other=0.0)
    out = qkv_ptr + b * W + c
    plane = B * W
    tl.store(out, rope_rotate(q, qp, cs, sn, c).to(qkv_ptr.dtype.element_ty), mask=cm)
    tl.store(out + plane, rope_rotate(k, kp, cs, sn, c).to(qkv_ptr.dtype.element_ty), mask=cm)
    tl.store(out + 2 * plane, tl.load(row + v_off + c, mask=cm, other=0.0), mask=cm)
    if pid_c == 0:
        one = tl.arange(0, 1)
        rows = row + one[:, None] * 0
        _eta_rows(rows, lrb_ptr, eta_ptr + b * H + one[:, None] * 0, one[:, None] >= 0, H, lr_off, eta_scale,
                  qkv_ptr, BH)  # fmt: skip


@dataclass(frozen=True)
class PrologueArgs:
    """What the prologue needs besides P: conv weights (None without share_qk), lr bias, RoPE tables."""

    conv_q_w: torch.Tensor | None
    conv_q_b: torch.Tensor | None
    conv_k_w: torch.Tensor | None
    conv_k_b: torch.Tensor | None
    lr_bias: torch.Tensor
    cos: torch.Tensor  # (mini_batch_size, d/2) fp32
    sin: torch.Tensor
    head_dim: int
    eta_scale: float  # ttt_base_lr / d


def conv_ptrs(lay: InLayout, a: PrologueArgs, dummy: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if not lay.share_qk:
        return dummy, dummy, dummy, dummy, 1
    w = (a.conv_q_w.contiguous(), a.conv_q_b, a.conv_k_w.contiguous(), a.conv_k_b)  # type: ignore[union-attr]
    return (*w, w[0].shape[-1])  # type: ignore[return-value]


def prologue(
    P: torch.Tensor, lay: InLayout, a: PrologueArgs, state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """P (B, T, n) -> (qkv (3, B, T, W) in P's dtype, eta (B, T, H) fp32). With `state` (B, W, K) (share_qk), the
    last K rows of the shared q/k projection are written into it, as `CausalDepthwiseConv.forward` does."""
    B, T, N = P.shape
    assert P.stride(-1) == 1 and P.stride(1) == N and P.stride(0) == T * N, "P must be contiguous"
    H = N - lay.lr
    W = lay.v - lay.k
    cqw, cqb, ckw, ckb, K = conv_ptrs(lay, a, P)
    qkv = torch.empty(3, B, T, W, dtype=P.dtype, device=P.device)
    eta = torch.empty(B, T, H, dtype=torch.float32, device=P.device)
    if state is not None:
        assert lay.share_qk and state.is_contiguous() and state.shape == (B, W, K)
    BT, BC = 16, min(128, triton.next_power_of_2(W))
    if B and T:
        grid = (triton.cdiv(T, BT), triton.cdiv(W, BC), B)
        _prologue_kernel[grid](
            P, cqw, cqb, ckw, ckb, a.cos, a.sin, a.lr_bias, qkv, eta, state if state is not None else P,
            B, T, N, W, H, lay.q, lay.k, lay.v, lay.lr, a.eta_scale,
            D=a.head_dim, MBS=a.cos.shape[0], K=K, KP=triton.next_power_of_2(K), SHARE_QK=lay.share_qk,
            HAS_STATE=state is not None, BT=BT, BC=BC, BH=triton.next_power_of_2(H), num_warps=4,
        )  # fmt: skip
    return qkv, eta


def prologue_step(
    P: torch.Tensor, lay: InLayout, a: PrologueArgs, state: torch.Tensor | None, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: P (B, 1, n), the q/k conv window `state` (B, W, K) advanced in place (share_qk), `pos` a (1,)
    device tensor (position inside the mini-batch) -> (qkv (3, B, 1, W), eta (B, 1, H)). One launch, no host sync."""
    B, T, N = P.shape
    assert T == 1 and P.is_contiguous()
    H = N - lay.lr
    W = lay.v - lay.k
    cqw, cqb, ckw, ckb, K = conv_ptrs(lay, a, P)
    if lay.share_qk:
        assert state is not None and state.is_contiguous() and state.shape == (B, W, K)
    qkv = torch.empty(3, B, 1, W, dtype=P.dtype, device=P.device)
    eta = torch.empty(B, 1, H, dtype=torch.float32, device=P.device)
    BC = min(256, triton.next_power_of_2(W))
    pdl = pdl_on(P)
    _prologue_step_kernel[(triton.cdiv(W, BC), B)](
        P, cqw, cqb, ckw, ckb, a.cos, a.sin, a.lr_bias, pos, qkv, eta, state if state is not None else P,
        B, N, W, H, lay.q, lay.k, lay.v, lay.lr, a.eta_scale,
        D=a.head_dim, K=K, KP=triton.next_power_of_2(K), SHARE_QK=lay.share_qk, BC=BC,
        BH=triton.next_power_of_2(H), PDL=pdl, num_warps=4, **launch_opts(pdl),
    )  # fmt: skip
    return qkv, eta


@triton.jit
def norm_gate_rows(z, m, c, cm, lnw_ptr, lnb_ptr, g_ptrs, W, eps, a_ptr, HAS_GATE: tl.constexpr):
    """The layer epilogue's math on fp32 rows z [R, BW] (zero where the mask m is off; channels c, cm = c < W):
    a two-pass LayerNorm over the W channels, the weight and bias, then times GELU_tanh(gate at g_ptrs) with
    HAS_GATE, rounded to a_ptr's dtype where the unfused layer rounds. Shared by `_epilogue_kernel` and the fused
    TTT-Linear step's last-arriver epilogue (`ttt.fused.linear_step`)."""
    mu = tl.sum(z, axis=1) / W
    zc = tl.where(m, z - mu[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(zc * zc, axis=1) / W + eps)
    lnw = tl.load(lnw_ptr + c, mask=cm, other=0.0).to(tl.float32)
    lnb = tl.load(lnb_ptr + c, mask=cm, other=0.0).to(tl.float32)
    y = rnd(zc * rstd[:, None] * lnw[None, :] + lnb[None, :], a_ptr)
    if HAS_GATE:
        g = tl.load(g_ptrs, mask=m, other=0.0).to(tl.float32)
        y = rnd(rnd(gelu_tanh(g), a_ptr) * y, a_ptr)
    return y


@triton.jit
def _epilogue_kernel(
    z_ptr, p_ptr, lnw_ptr, lnb_ptr, a_ptr, T, W, N, g_off, zsb, zsh, zst, eps,
    D: tl.constexpr, HAS_GATE: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pdl_enter(PDL)
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    c = tl.arange(0, BW)
    cm = c < W
    m = (t < T)[:, None] & cm[None, :]
    zoff = b * zsb + t.to(tl.int64)[:, None] * zst + (c // D).to(tl.int64)[None, :] * zsh + (c % D)[None, :]
    z = tl.load(z_ptr + zoff, mask=m, other=0.0).to(tl.float32)
    row = b * T + t.to(tl.int64)
    y = norm_gate_rows(z, m, c, cm, lnw_ptr, lnb_ptr, p_ptr + row[:, None] * N + g_off + c[None, :], W, eps, a_ptr,
                       HAS_GATE)  # fmt: skip
    tl.store(a_ptr + row[:, None] * W + c[None, :], y.to(a_ptr.dtype.element_ty), mask=m)


def epilogue(
    z: torch.Tensor,
    P: torch.Tensor,
    lay: InLayout,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    eps: float,
    pdl: bool = False,
) -> torch.Tensor:
    """z (B, H, T, d) the op's output (any strides, unit last), P (B, T, n) -> (B, T, W) in P's dtype:
    LayerNorm(z as (B, T, W)) times GELU_tanh(P_g) when the layer has a gate. pdl: launch it as part of a PDL
    chain (`ttt.ops.pdl`; the decode step asks where `pdl_on`)."""
    B, H, T, D = z.shape
    W = H * D
    assert z.stride(-1) == 1 and P.is_contiguous()
    a = torch.empty(B, T, W, dtype=P.dtype, device=P.device)
    BW = triton.next_power_of_2(W)
    BT = max(1, min(16, 8192 // BW))
    if B and T:
        note_kernel("fused/epilogue")
        _epilogue_kernel[(triton.cdiv(T, BT), B)](
            z, P, ln_w, ln_b, a, T, W, P.shape[-1], lay.g if lay.g is not None else 0,
            z.stride(0), z.stride(1), z.stride(2), eps,
            D=D, HAS_GATE=lay.g is not None, BT=BT, BW=BW, PDL=pdl, num_warps=8 if BW >= 2048 else 4,
            **launch_opts(pdl),
        )  # fmt: skip
    return a
