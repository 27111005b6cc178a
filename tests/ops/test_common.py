"""Shared op pieces against torch's own LayerNorm/GELU and autograd (float64)."""

import pytest
import torch
import torch.nn.functional as F

from ttt.errors import UserError
from ttt.ops.common import (
    TTTLinearState,
    TTTMLPState,
    dispatch,
    gelu_tanh,
    gelu_tanh_bwd,
    ln_fused_l2_bwd,
    ln_fwd,
    ln_params,
)
from ttt.ops.ttt_linear import init_state as init_linear
from ttt.ops.ttt_mlp import init_state as init_mlp


def _rand(seed: int, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_ln_fwd_matches_torch() -> None:
    x, w, b = _rand(0, 2, 3, 5, 16, scale=3.0), _rand(1, 3, 16), _rand(2, 3, 16)
    lw, lb = ln_params(w, b, torch.float64)
    ref = F.layer_norm(x, (16,), eps=1e-6) * w[:, None] + b[:, None]
    torch.testing.assert_close(ln_fwd(x, lw, lb), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e-2])  # small inputs: eps matters, so a wrong eps shows
def test_ln_fused_l2_bwd_is_autograd(scale: float) -> None:
    x, tgt = _rand(3, 2, 3, 5, 16, scale=scale), _rand(4, 2, 3, 5, 16)
    w, b = 1.0 + _rand(5, 3, 16, scale=0.3), _rand(6, 3, 16, scale=0.3)
    lw, lb = ln_params(w, b, torch.float64)
    xr = x.clone().requires_grad_(True)
    loss = 0.5 * ((F.layer_norm(xr, (16,), eps=1e-6) * w[:, None] + b[:, None] - tgt) ** 2).sum()
    (ref,) = torch.autograd.grad(loss, xr)
    torch.testing.assert_close(ln_fused_l2_bwd(x, tgt, lw, lb), ref, rtol=1e-10, atol=1e-12)


def test_gelu_tanh_and_derivative() -> None:
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64).requires_grad_(True)
    y = F.gelu(x, approximate="tanh")
    (ref,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(gelu_tanh(x.detach()), y.detach(), rtol=0, atol=0)
    torch.testing.assert_close(gelu_tanh_bwd(x.detach()), ref, rtol=1e-12, atol=1e-14)


def test_linear_init_state_and_clone() -> None:
    W0, b0 = _rand(7, 3, 8, 8).float(), _rand(8, 3, 8).float()
    st = init_linear(W0, b0, batch_size=2)
    assert isinstance(st, TTTLinearState)
    assert st.W.shape == (2, 3, 8, 8) and st.b.shape == (2, 3, 8) and st.W.dtype == torch.float32
    assert st.W_acc.abs().sum() == 0 and st.b_acc.abs().sum() == 0
    assert st.offset.shape == () and st.offset.dtype == torch.int64 and int(st.offset) == 0
    assert torch.equal(st.W[1], W0)
    c = st.clone()
    c.W.add_(1.0)
    c.offset.add_(1)
    assert torch.equal(st.W[0], W0) and int(st.offset) == 0  # clone owns its memory
    st.copy_(c)
    assert torch.equal(st.W, c.W) and int(st.offset) == 1
    assert init_linear(W0.double(), b0.double(), 1).W.dtype == torch.float64
    assert init_linear(W0.bfloat16(), b0.bfloat16(), 1).W.dtype == torch.float32


def test_mlp_init_state() -> None:
    H, d = 2, 4
    st = init_mlp(_rand(0, H, d, 4 * d), _rand(1, H, 1, 4 * d), _rand(2, H, 4 * d, d), _rand(3, H, d), 3)
    assert isinstance(st, TTTMLPState) and st.W1.dtype == torch.float64
    assert st.W1.shape == (3, H, d, 4 * d) and st.b1.shape == (3, H, 4 * d)
    assert st.W2.shape == (3, H, 4 * d, d) and st.b2.shape == (3, H, d)
    assert all(getattr(st, n).abs().sum() == 0 for n in ("W1_acc", "b1_acc", "W2_acc", "b2_acc"))


def test_init_state_is_differentiable() -> None:
    W0 = _rand(0, 2, 4, 4).requires_grad_(True)
    st = init_linear(W0, torch.zeros(2, 4, dtype=torch.float64), 3)
    st.W.sum().backward()
    torch.testing.assert_close(W0.grad, torch.full_like(W0, 3.0))


def test_dispatch_error_is_one_line() -> None:
    with pytest.raises(UserError, match=r"unknown ttt_linear impl 'x'; known: a, b$"):
        dispatch({"b": print, "a": print}, "x", "ttt_linear")
