"""Row kernels of a block: RMSNorm (optionally after a residual add), and the Mamba backbone's pre-conv
x1 = x + conv(RMSNorm_pre(x)) fused with the TTT layer's input norm h = RMSNorm_seq(x1).

References (the plain PyTorch they replace): `ttt.layer.RMSNorm`, `ttt.layer.PreConv` (forward and step) and the
residual adds in `ttt.model.Block`. A program owns whole rows (the norms reduce over the full width); the conv
reads its K-1 earlier rows again (from L2) and recomputes their norms instead of exchanging them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ttt.fused._jit import rms_rows, rnd
from ttt.ops.common import note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on


def _row_tile(width: int) -> tuple[int, int, int]:
    """(padded width, rows per program, warps): about 8K elements per tile, so a few fp32 tiles fit in registers."""
    BW = triton.next_power_of_2(width)
    return BW, max(1, min(16, 8192 // BW)), 8 if BW >= 2048 else 4


@triton.jit
def _rmsnorm_kernel(x_ptr, r_ptr, w_ptr, s_ptr, h_ptr, M, W, eps, HAS_RES: tl.constexpr, BT: tl.constexpr,
                    BW: tl.constexpr, PDL: tl.constexpr):  # fmt: skip
    pdl_enter(PDL)
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    cols = tl.arange(0, BW)
    cm = cols < W
    m = (rows < M)[:, None] & cm[None, :]
    off = rows.to(tl.int64)[:, None] * W + cols[None, :]
    x = tl.load(x_ptr + off, mask=m, other=0.0).to(tl.float32)
    if HAS_RES:
        x = rnd(x + tl.load(r_ptr + off, mask=m, other=0.0).to(tl.float32), s_ptr)
        tl.store(s_ptr + off, x.to(s_ptr.dtype.element_ty), mask=m)
    w = tl.load(w_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    tl.store(h_ptr + off, rms_rows(x, w, W, eps, h_ptr).to(h_ptr.dtype.element_ty), mask=m)


def _launch_rmsnorm(x: torch.Tensor, r: torch.Tensor | None, weight: torch.Tensor, eps: float, pdl: bool):
    x = x.contiguous()
    W = x.shape[-1]
    M = x.numel() // W
    BW, BT, nw = _row_tile(W)
    h = torch.empty_like(x)
    s = torch.empty_like(x) if r is not None else h
    rr = r.contiguous() if r is not None else x
    note_kernel("fused/rmsnorm")
    _rmsnorm_kernel[(triton.cdiv(M, BT),)](x, rr, weight, s, h, M, W, eps, HAS_RES=r is not None, BT=BT, BW=BW,
                                           PDL=pdl, num_warps=nw, **launch_opts(pdl))  # fmt: skip
    return s, h


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, pdl: bool = False) -> torch.Tensor:
    """`ttt.layer.RMSNorm` over the last dim of x (any leading shape). pdl: as part of a PDL chain (`ttt.ops.pdl`)."""
    return _launch_rmsnorm(x, None, weight, eps, pdl)[1]


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float, pdl: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, RMSNorm(s)) with s = x + residual rounded to x's dtype: a block's residual add and the next norm."""
    return _launch_rmsnorm(x, residual, weight, eps, pdl)


@triton.jit
def _preconv_kernel(
    x_ptr, nw_ptr, cw_ptr, cb_ptr, sw_ptr, x1_ptr, h_ptr, st_ptr, T, W, eps_n, eps_s,
    K: tl.constexpr, KP: tl.constexpr, HAS_STATE: tl.constexpr, BT: tl.constexpr, BW: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    cols = tl.arange(0, BW)
    cm = cols < W
    base = x_ptr + b * T * W
    nw = tl.load(nw_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    # conv(y)[t] = sum_j w[:, j] y[t - (K-1) + j] + bias, y = RMSNorm_pre(x), zero before the sequence start.
    acc = tl.zeros([BT, BW], dtype=tl.float32)
    for j in tl.static_range(K - 1):
        ts = t - (K - 1) + j
        m = ((ts >= 0) & (ts < T))[:, None] & cm[None, :]
        xj = tl.load(base + ts.to(tl.int64)[:, None] * W + cols[None, :], mask=m, other=0.0).to(tl.float32)
        wj = tl.load(cw_ptr + cols * K + j, mask=cm, other=0.0).to(tl.float32)
        acc += wj[None, :] * rms_rows(xj, nw, W, eps_n, x1_ptr)
    m = (t < T)[:, None] & cm[None, :]
    off = t.to(tl.int64)[:, None] * W + cols[None, :]
    x = tl.load(base + off, mask=m, other=0.0).to(tl.float32)
    wl = tl.load(cw_ptr + cols * K + (K - 1), mask=cm, other=0.0).to(tl.float32)
    acc += wl[None, :] * rms_rows(x, nw, W, eps_n, x1_ptr)
    cb = tl.load(cb_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    x1 = rnd(x + rnd(acc + cb[None, :], x1_ptr), x1_ptr)  # conv output in the model dtype, then the residual
    tl.store(x1_ptr + b * T * W + off, x1.to(x1_ptr.dtype.element_ty), mask=m)
    sw = tl.load(sw_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    tl.store(h_ptr + b * T * W + off, rms_rows(x1, sw, W, eps_s, h_ptr).to(h_ptr.dtype.element_ty), mask=m)
    if HAS_STATE:
        if pid_t == (T - 1) // BT:
            # The decode window: the last K conv inputs, oldest first, zeros before the start (B, W, K).
            s = tl.arange(0, KP)
            t_win = T - K + s
            ms = ((s < K) & (t_win >= 0))[:, None] & cm[None, :]
            xs = tl.load(base + t_win.to(tl.int64)[:, None] * W + cols[None, :], mask=ms, other=0.0).to(tl.float32)
            ys = rms_rows(xs, nw, W, eps_n, st_ptr)
            sp = st_ptr + b * W * K + cols[None, :] * K + s[:, None]
            tl.store(sp, ys.to(st_ptr.dtype.element_ty), mask=(s < K)[:, None] & cm[None, :])


def preconv_rmsnorm(
    x: torch.Tensor,
    norm_w: torch.Tensor,
    norm_eps: float,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    seq_w: torch.Tensor,
    seq_eps: float,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, W) -> (x1, h): x1 = x + CausalDepthwiseConv(RMSNorm_pre(x)), h = RMSNorm_seq(x1). conv_w (W, K).
    With `state` (B, W, K), the conv's last K inputs are written into it (as `CausalDepthwiseConv.forward`)."""
    x = x.contiguous()
    B, T, W = x.shape
    K = conv_w.shape[-1]
    BW, BT, nw = _row_tile(W)
    x1, h = torch.empty_like(x), torch.empty_like(x)
    st = state if state is not None else x1
    if state is not None:
        assert state.is_contiguous() and state.shape == (B, W, K), "the conv window must be a contiguous (B, W, K)"
    if B and T:
        _preconv_kernel[(triton.cdiv(T, BT), B)](
            x, norm_w, conv_w.contiguous(), conv_b, seq_w, x1, h, st, T, W, norm_eps, seq_eps,
            K=K, KP=triton.next_power_of_2(K), HAS_STATE=state is not None, BT=BT, BW=BW, num_warps=nw,
        )  # fmt: skip
    return x1, h


@triton.jit
def _preconv_step_kernel(
    x_ptr, nw_ptr, cw_ptr, cb_ptr, sw_ptr, x1_ptr, h_ptr, st_ptr, W, eps_n, eps_s,
    K: tl.constexpr, KP: tl.constexpr, BW: tl.constexpr, PDL: tl.constexpr,
):  # fmt: skip
    pdl_enter(PDL)
    b = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BW)
    cm = cols < W
    one = tl.arange(0, 1)
    off = b * W + one[:, None] * 0 + cols[None, :]  # a (1, BW) tile: the row helpers reduce over axis 1
    x = tl.load(x_ptr + off, mask=cm[None, :], other=0.0).to(tl.float32)
    nw = tl.load(nw_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    y = tl.sum(rms_rows(x, nw, W, eps_n, st_ptr), axis=0)  # (BW,)
    # Window (BW, KP): state[..., 1:] then y, as `CausalDepthwiseConv.step`; products, sum and bias each rounded
    # to the model dtype like its elementwise PyTorch ops.
    s = tl.arange(0, KP)
    wofs = b * W * K + cols[:, None] * K + s[None, :]
    older = tl.load(st_ptr + wofs + 1, mask=cm[:, None] & (s < K - 1)[None, :], other=0.0).to(tl.float32)
    win = tl.where((s == K - 1)[None, :], y[:, None], older)
    cw = tl.load(cw_ptr + cols[:, None] * K + s[None, :], mask=cm[:, None] & (s < K)[None, :], other=0.0)
    conv = rnd(tl.sum(rnd(win * cw.to(tl.float32), x1_ptr), axis=1), x1_ptr)
    conv = rnd(conv + tl.load(cb_ptr + cols, mask=cm, other=0.0).to(tl.float32), x1_ptr)
    tl.store(st_ptr + wofs, win.to(st_ptr.dtype.element_ty), mask=cm[:, None] & (s < K)[None, :])
    x1 = rnd(x + conv[None, :], x1_ptr)
    tl.store(x1_ptr + off, x1.to(x1_ptr.dtype.element_ty), mask=cm[None, :])
    sw = tl.load(sw_ptr + cols, mask=cm, other=0.0).to(tl.float32)
    tl.store(h_ptr + off, rms_rows(x1, sw, W, eps_s, h_ptr).to(h_ptr.dtype.element_ty), mask=cm[None, :])


def preconv_rmsnorm_step(
    x: torch.Tensor,
    state: torch.Tensor,
    norm_w: torch.Tensor,
    norm_eps: float,
    conv_w: torch.Tensor,
    conv_b: torch.Tensor,
    seq_w: torch.Tensor,
    seq_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token x (B, 1, W) against the conv window `state` (B, W, K), updated in place -> (x1, h), as
    `PreConv.step` + residual + RMSNorm_seq. One launch, no host sync (CUDA-graph capturable)."""
    x = x.contiguous()
    B, T, W = x.shape
    assert T == 1 and state.is_contiguous(), "one token per sequence and a contiguous (B, W, K) window"
    K = conv_w.shape[-1]
    x1, h = torch.empty_like(x), torch.empty_like(x)
    BW = triton.next_power_of_2(W)
    pdl = pdl_on(x)
    _preconv_step_kernel[(B,)](
        x, norm_w, conv_w.contiguous(), conv_b, seq_w, x1, h, state, W, norm_eps, seq_eps,
        K=K, KP=triton.next_power_of_2(K), BW=BW, PDL=pdl, num_warps=8 if BW >= 2048 else 4, **launch_opts(pdl),
    )  # fmt: skip
    return x1, h
