"""SwiGLU's elementwise middle: SiLU(gate) * up from one GEMM's output [gate | up] (ttt.model.SwiGLU)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ttt.fused._jit import rnd, sigmoid


@triton.jit
def _silu_mul_kernel(gu_ptr, a_ptr, M, I, BM: tl.constexpr, BC: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    m = (rows < M)[:, None] & (cols < I)[None, :]
    src = gu_ptr + rows.to(tl.int64)[:, None] * (2 * I) + cols[None, :]
    g = tl.load(src, mask=m, other=0.0).to(tl.float32)
    u = tl.load(src + I, mask=m, other=0.0).to(tl.float32)
    a = rnd(g * sigmoid(g), a_ptr) * u  # F.silu's output is materialised in the model dtype
    tl.store(a_ptr + rows.to(tl.int64)[:, None] * I + cols[None, :], a.to(a_ptr.dtype.element_ty), mask=m)


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """gu (..., 2I) = [gate | up] -> (..., I): F.silu(gate) * up, rounded like the two PyTorch ops."""
    gu = gu.contiguous()
    I = gu.shape[-1] // 2
    M = gu.numel() // max(2 * I, 1)
    a = torch.empty(*gu.shape[:-1], I, dtype=gu.dtype, device=gu.device)
    BM, BC = 4, min(1024, triton.next_power_of_2(I))
    if M and I:
        _silu_mul_kernel[(triton.cdiv(M, BM), triton.cdiv(I, BC))](gu, a, M, I, BM=BM, BC=BC, num_warps=4)
    return a
