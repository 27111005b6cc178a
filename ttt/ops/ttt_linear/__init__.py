"""TTT-Linear ops: one functional entry (`ttt_linear`) over registered implementations, the decode step, and the
initial state. A new backend (e.g. Triton) registers itself with `register_impl("triton", fn)`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttt.ops.common import TTTLinearState, dispatch, expand_param, state_dtype
from ttt.ops.ttt_linear.dual import ttt_linear_dual, ttt_linear_dual_compiled
from ttt.ops.ttt_linear.naive import ttt_linear_naive, ttt_linear_step

__all__ = [
    "IMPLS",
    "TTTLinearState",
    "init_state",
    "register_impl",
    "ttt_linear",
    "ttt_linear_dual",
    "ttt_linear_naive",
    "ttt_linear_step",
]


def _triton_prefill(*args, **kwargs) -> tuple[torch.Tensor, TTTLinearState]:
    # Imported on first use: triton is an optional extra, and its import is slow.
    from ttt.ops.ttt_linear.prefill import ttt_linear_triton

    return ttt_linear_triton(*args, **kwargs)


def _triton_step(*args, **kwargs) -> tuple[torch.Tensor, TTTLinearState]:
    from ttt.ops.ttt_linear.decode import ttt_linear_step_triton

    return ttt_linear_step_triton(*args, **kwargs)


# name -> fn(q, k, v, eta, token_eta, ln_w, ln_b, state, *, mini_batch_size) -> (out, new_state)
IMPLS: dict[str, Callable[..., tuple[torch.Tensor, TTTLinearState]]] = {
    "naive": ttt_linear_naive,
    "dual": ttt_linear_dual,
    "dual_compiled": ttt_linear_dual_compiled,  # each mini-batch under torch.compile: the training path
    "triton": _triton_prefill,
}


# name -> one-token step fn(q, k, v, eta, token_eta, ln_w, ln_b, state, *, mini_batch_size) -> (out, state), in place
STEP_IMPLS: dict[str, Callable[..., tuple[torch.Tensor, TTTLinearState]]] = {
    "naive": ttt_linear_step,
    "triton": _triton_step,
}


def register_impl(name: str, fn: Callable[..., tuple[torch.Tensor, TTTLinearState]]) -> None:
    IMPLS[name] = fn


def ttt_linear(
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
    impl: str = "dual",
) -> tuple[torch.Tensor, TTTLinearState]:
    """q, k, v (B, H, T, d); eta (B, H, T); token_eta (mini_batch_size,); ln_w, ln_b (H, d).
    Returns (out with q's dtype and shape, new state); the input state is left unchanged."""
    fn = dispatch(IMPLS, impl, "ttt_linear")
    return fn(q, k, v, eta, token_eta, ln_w, ln_b, state, mini_batch_size=mini_batch_size)


def init_state(W0: torch.Tensor, b0: torch.Tensor, batch_size: int) -> TTTLinearState:
    """W0 (H, d, d), b0 (H, d) (or (H, 1, d)) -> a fresh state for `batch_size` sequences: float32 (float64 when W0 is
    float64), zero accumulators, offset 0. Differentiable w.r.t. W0 and b0 (they are learned)."""
    dt = state_dtype(W0)
    H = W0.shape[0]
    W = expand_param(W0, batch_size, dt)
    b = expand_param(b0.reshape(H, -1), batch_size, dt)
    return TTTLinearState(
        W=W,
        b=b,
        W_acc=torch.zeros_like(W, requires_grad=False),
        b_acc=torch.zeros_like(b, requires_grad=False),
        offset=torch.zeros((), dtype=torch.int64, device=W0.device),
    )
