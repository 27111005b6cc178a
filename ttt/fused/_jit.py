"""Triton device helpers shared by the fused kernels. Arithmetic is fp32; `rnd` rounds to a storage dtype at the
points where the PyTorch reference materialises a tensor in the model dtype, so bf16 results stay close to it."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rnd(x, like_ptr):
    """x rounded to the element type of `like_ptr`, returned in fp32 (a no-op for fp32 models)."""
    return x.to(like_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def rms_rows(x, w, W, eps, like_ptr):
    """RMSNorm of each row of x (fp32, padded columns zero) in the reference's order: w * dtype(x * rstd)."""
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / W + eps)
    return rnd(w[None, :] * rnd(x * rstd[:, None], like_ptr), like_ptr)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def gelu_tanh(x):
    # tanh through exp of a non-positive argument: no overflow, and no libdevice call (not stable across versions).
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    e = tl.exp(-2.0 * tl.abs(u))
    t = (1.0 - e) / (1.0 + e)
    return 0.5 * x * (1.0 + tl.where(u >= 0, t, -t))
