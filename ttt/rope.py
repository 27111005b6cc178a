"""Rotary position embedding as the official TTT code applies it.

The official PyTorch code permutes q/k (`permute_qk`), applies HF's rotate-half RoPE, and undoes the permutation,
to match its JAX (EasyLM) training. Net effect: the *interleaved* variant, pairs (2j, 2j+1) rotated by
pos * theta^(-2j/d). We apply that directly. Positions are taken modulo the mini-batch size by the caller."""

from __future__ import annotations

import torch


def rope_cos_sin(
    pos: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """pos (T,) integer tensor -> cos, sin (T, head_dim // 2); float32 at least (bf16 angles lose precision)."""
    dtype = torch.promote_types(dtype, torch.float32)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=dtype) / head_dim)
    ang = pos.to(dtype).unsqueeze(-1) * inv_freq
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, d); cos/sin (T, d/2). Rotates the interleaved pairs (x[2j], x[2j+1]); computed in cos's dtype."""
    xf = x.to(cos.dtype).unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return out.flatten(-2).to(x.dtype)
