"""TTT-MLP, token by token: the definition, and the decode step.

f_res(x) = GELU_tanh(x W1 + b1) W2 + b2 (hidden 4d). Per head, with primes = weights at the start of the mini-batch
and p = state.offset:
    z1 = k W1' + b1',  x2 = gelu(z1),  g2 = d/dz 0.5 * ||LN(z) - (v - k)||^2 at z = x2 W2' + b2'
    g1 = (g2 W2'^T) * gelu'(z1)
    acc += eta * (k^T g1, g1, x2^T g2, g2)
    W_t = W' - token_eta[p] * acc (all four);   out = q + LN(gelu(q W1_t + b1_t) W2_t + b2_t)
and when p == b - 1 the mini-batch closes: W' <- W_t, acc <- 0.
"""

from __future__ import annotations

import torch

from ttt.ops.common import (
    TTTMLPState,
    check_args,
    gelu_tanh,
    gelu_tanh_bwd,
    ln_fused_l2_bwd,
    ln_fwd,
    ln_params,
    scan_steps,
)


def ttt_mlp_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTMLPState,
    *,
    mini_batch_size: int = 16,
) -> tuple[torch.Tensor, TTTMLPState]:
    """One token: q, k, v (B, H, 1, d), eta (B, H, 1). Updates `state` in place and returns (out, state).

    CUDA-graph capturable: the mini-batch position is only ever used as a device tensor (index_select, where)."""
    check_args(q, token_eta, mini_batch_size)
    out_dtype, cd = q.dtype, state.W1.dtype
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    lw, lb = ln_params(ln_w, ln_b, cd)
    e = eta.to(cd).unsqueeze(-1)  # (B, H, 1, 1)
    W1, b1, W2, b2 = state.W1, state.b1.unsqueeze(-2), state.W2, state.b2.unsqueeze(-2)

    # Gradients at the mini-batch-start weights.
    z1 = k @ W1 + b1
    x2 = gelu_tanh(z1)
    g2 = ln_fused_l2_bwd(x2 @ W2 + b2, v - k, lw, lb)
    g1 = (g2 @ W2.transpose(-1, -2)) * gelu_tanh_bwd(z1)

    W1_acc = state.W1_acc + e * (k.transpose(-1, -2) @ g1)
    b1_acc = state.b1_acc.unsqueeze(-2) + e * g1
    W2_acc = state.W2_acc + e * (x2.transpose(-1, -2) @ g2)
    b2_acc = state.b2_acc.unsqueeze(-2) + e * g2

    offset = state.offset
    te = token_eta.to(cd).index_select(0, offset.reshape(1)).reshape(())
    W1_t, b1_t = W1 - te * W1_acc, b1 - te * b1_acc
    W2_t, b2_t = W2 - te * W2_acc, b2 - te * b2_acc
    out = q + ln_fwd(gelu_tanh(q @ W1_t + b1_t) @ W2_t + b2_t, lw, lb)

    closes = offset == (mini_batch_size - 1)
    for dst, new, old in ((state.W1, W1_t, W1), (state.W2, W2_t, W2)):
        dst.copy_(torch.where(closes, new, old))
    for dst, new, old in ((state.b1, b1_t, b1), (state.b2, b2_t, b2)):
        dst.copy_(torch.where(closes, new, old).squeeze(-2))
    for dst, acc in ((state.W1_acc, W1_acc), (state.W2_acc, W2_acc)):
        dst.copy_(torch.where(closes, torch.zeros_like(acc), acc))
    for dst, acc in ((state.b1_acc, b1_acc), (state.b2_acc, b2_acc)):
        dst.copy_(torch.where(closes, torch.zeros_like(acc), acc).squeeze(-2))
    state.offset.copy_(torch.remainder(offset + 1, mini_batch_size))
    return out.to(out_dtype), state


def ttt_mlp_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTMLPState,
    *,
    mini_batch_size: int = 16,
) -> tuple[torch.Tensor, TTTMLPState]:
    """The definition: the step function over every token, on a clone of `state` (the input state is untouched)."""
    return scan_steps(ttt_mlp_step, q, k, v, eta, token_eta, ln_w, ln_b, state, mini_batch_size)
