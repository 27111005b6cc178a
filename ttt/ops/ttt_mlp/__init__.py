"""TTT-MLP ops: one functional entry (`ttt_mlp`) over registered implementations, the decode step, and the initial
state. A new backend (e.g. Triton) registers itself with `register_impl("triton", fn)`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttt.ops.common import TTTMLPState, dispatch, expand_param, state_dtype
from ttt.ops.ttt_mlp.dual import ttt_mlp_dual, ttt_mlp_dual_compiled
from ttt.ops.ttt_mlp.naive import ttt_mlp_naive, ttt_mlp_step

__all__ = [
    "IMPLS",
    "STEP_IMPLS",
    "TTTMLPState",
    "init_state",
    "register_impl",
    "ttt_mlp",
    "ttt_mlp_dual",
    "ttt_mlp_naive",
    "ttt_mlp_step",
]


def _triton_prefill(*args, **kwargs) -> tuple[torch.Tensor, TTTMLPState]:
    # Imported on first use: triton is an optional extra, and its import is slow.
    from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton

    return ttt_mlp_triton(*args, **kwargs)


def _triton_step(*args, **kwargs) -> tuple[torch.Tensor, TTTMLPState]:
    from ttt.ops.ttt_mlp.decode import ttt_mlp_step_triton

    return ttt_mlp_step_triton(*args, **kwargs)


def _triton_single_step(*args, **kwargs) -> tuple[torch.Tensor, TTTMLPState]:
    from ttt.ops.ttt_mlp.decode import ttt_mlp_step_triton

    return ttt_mlp_step_triton(*args, split=False, **kwargs)


# name -> fn(q, k, v, eta, token_eta, ln_w, ln_b, state, *, mini_batch_size) -> (out, new_state)
IMPLS: dict[str, Callable[..., tuple[torch.Tensor, TTTMLPState]]] = {
    "naive": ttt_mlp_naive,
    "dual": ttt_mlp_dual,
    "dual_compiled": ttt_mlp_dual_compiled,  # each mini-batch under torch.compile: the training path
    "triton": _triton_prefill,
}


# name -> one-token step fn(q, k, v, eta, token_eta, ln_w, ln_b, state, *, mini_batch_size) -> (out, state), in place
STEP_IMPLS: dict[str, Callable[..., tuple[torch.Tensor, TTTMLPState]]] = {
    "naive": ttt_mlp_step,
    "triton": _triton_step,  # hidden-split: several programs per head (H200, B=16: 94 vs 133 us for triton_single)
    "triton_single": _triton_single_step,  # one program per head
}


def register_impl(name: str, fn: Callable[..., tuple[torch.Tensor, TTTMLPState]]) -> None:
    IMPLS[name] = fn


def ttt_mlp(
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
    impl: str = "dual",
) -> tuple[torch.Tensor, TTTMLPState]:
    """q, k, v (B, H, T, d); eta (B, H, T); token_eta (mini_batch_size,); ln_w, ln_b (H, d).
    Returns (out with q's dtype and shape, new state); the input state is left unchanged."""
    fn = dispatch(IMPLS, impl, "ttt_mlp")
    return fn(q, k, v, eta, token_eta, ln_w, ln_b, state, mini_batch_size=mini_batch_size)


def init_state(W1: torch.Tensor, b1: torch.Tensor, W2: torch.Tensor, b2: torch.Tensor, batch_size: int) -> TTTMLPState:
    """W1 (H, d, 4d), b1 (H, 4d), W2 (H, 4d, d), b2 (H, d) (biases may also be (H, 1, n)) -> a fresh state:
    float32 (float64 when W1 is float64), zero accumulators, offset 0. Differentiable w.r.t. the initial weights."""
    dt = state_dtype(W1)
    H = W1.shape[0]
    w1, w2 = expand_param(W1, batch_size, dt), expand_param(W2, batch_size, dt)
    c1, c2 = expand_param(b1.reshape(H, -1), batch_size, dt), expand_param(b2.reshape(H, -1), batch_size, dt)
    return TTTMLPState(
        W1=w1,
        b1=c1,
        W2=w2,
        b2=c2,
        W1_acc=torch.zeros_like(w1, requires_grad=False),
        b1_acc=torch.zeros_like(c1, requires_grad=False),
        W2_acc=torch.zeros_like(w2, requires_grad=False),
        b2_acc=torch.zeros_like(c2, requires_grad=False),
        offset=torch.zeros((), dtype=torch.int64, device=W1.device),
    )
