"""TTT-Linear, token by token: the definition, and the decode step.

`ttt_linear_step` is the single source of truth for the recurrence; `ttt_linear_naive` just loops it over a private
copy of the state. Per head, with W' = state.W (weights at the start of the mini-batch) and p = state.offset:
    g   = d/dz 0.5 * ||LN(z) - (v - k)||^2 at z = k W' + b'
    acc += eta * (k^T g, g)
    W_t = W' - token_eta[p] * acc;   out = q + LN(q W_t + b_t)
and when p == b - 1 the mini-batch closes: W' <- W_t, acc <- 0.
"""

from __future__ import annotations

import torch

from ttt.ops.common import TTTLinearState, check_args, ln_fused_l2_bwd, ln_fwd, ln_params, scan_steps


def ttt_linear_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTLinearState,
    *,
    mini_batch_size: int = 16,
) -> tuple[torch.Tensor, TTTLinearState]:
    """One token: q, k, v (B, H, 1, d), eta (B, H, 1). Updates `state` in place and returns (out, state).

    CUDA-graph capturable: the mini-batch position is only ever used as a device tensor (index_select, where)."""
    check_args(q, token_eta, mini_batch_size)
    out_dtype, cd = q.dtype, state.W.dtype
    q, k, v = q.to(cd), k.to(cd), v.to(cd)
    lw, lb = ln_params(ln_w, ln_b, cd)
    e = eta.to(cd).unsqueeze(-1)  # (B, H, 1, 1)
    W, b = state.W, state.b.unsqueeze(-2)

    g = ln_fused_l2_bwd(k @ W + b, v - k, lw, lb)  # (B, H, 1, d), taken at W'
    W_acc = state.W_acc + e * (k.transpose(-1, -2) @ g)
    b_acc = state.b_acc.unsqueeze(-2) + e * g

    offset = state.offset
    te = token_eta.to(cd).index_select(0, offset.reshape(1)).reshape(())
    W_t = W - te * W_acc
    b_t = b - te * b_acc
    out = q + ln_fwd(q @ W_t + b_t, lw, lb)

    closes = offset == (mini_batch_size - 1)
    state.W.copy_(torch.where(closes, W_t, W))
    state.b.copy_(torch.where(closes, b_t, b).squeeze(-2))
    state.W_acc.copy_(torch.where(closes, torch.zeros_like(W_acc), W_acc))
    state.b_acc.copy_(torch.where(closes, torch.zeros_like(b_acc), b_acc).squeeze(-2))
    state.offset.copy_(torch.remainder(offset + 1, mini_batch_size))
    return out.to(out_dtype), state


def ttt_linear_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTLinearState,
    *,
    mini_batch_size: int = 16,
) -> tuple[torch.Tensor, TTTLinearState]:
    """The definition: the step function over every token, on a clone of `state` (the input state is untouched)."""
    return scan_steps(ttt_linear_step, q, k, v, eta, token_eta, ln_w, ln_b, state, mini_batch_size)
