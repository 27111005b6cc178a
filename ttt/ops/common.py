"""Pieces shared by every TTT op implementation: the per-head LayerNorm, the fused LN + L2 backward, GELU-tanh,
the recurrent state dataclasses, and the impl dispatch helper.

Shapes: LayerNorm parameters arrive as (H, d) and are broadcast against (B, H, T, d) activations."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from ttt.errors import UserError

LN_EPS = 1e-6
# Which kernel each fused op launch ran ("ttt_linear_prefill/gluon", ...), counted on the host as it is launched:
# the benchmark puts the names in its rows (op_kernels), so a row says what ran, never what a default implied.
KERNEL_LAUNCHES: Counter[str] = Counter()


def note_kernel(name: str) -> None:
    KERNEL_LAUNCHES[name] += 1


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_C = 0.044715


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 when any operand is float64 (the CPU reference tests), else float32: bf16/fp16 accumulation of
    the inner-loop gradient sums would drift over a long prefill."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def ln_params(ln_w: torch.Tensor, ln_b: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, d) LayerNorm weight/bias -> (1, H, 1, d), so they broadcast over batch and time."""
    H = ln_w.shape[0]
    return ln_w.to(dtype).reshape(1, H, 1, -1), ln_b.to(dtype).reshape(1, H, 1, -1)


def ln_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = LN_EPS) -> torch.Tensor:
    """LayerNorm over the last dim with biased variance and eps inside the sqrt (the official code's convention)."""
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(dim=-1, keepdim=True)
    return weight * (xc * torch.rsqrt(var + eps)) + bias


def ln_fused_l2_bwd(
    x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = LN_EPS
) -> torch.Tensor:
    """d/dx of 0.5 * ||LN(x) - target||^2, row-wise; the LayerNorm backward written out so no autograd graph is
    needed inside the inner loop."""
    D = x.shape[-1]
    mu = x.mean(dim=-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    x_hat = xc * rstd
    g_hat = (weight * x_hat + bias - target) * weight
    return (D * g_hat - g_hat.sum(dim=-1, keepdim=True) - x_hat * (g_hat * x_hat).sum(dim=-1, keepdim=True)) * rstd / D


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh")


def gelu_tanh_bwd(x: torch.Tensor) -> torch.Tensor:
    """Derivative of GELU-tanh. Exact constants (the official code truncates sqrt(2/pi) to 8 digits), so that the
    fp64 tests can compare against autograd of F.gelu(approximate="tanh") tightly."""
    t = torch.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_C * x * x)


class _StateMixin:
    """clone()/copy_() over all tensor fields, so the decode cache can keep static buffers (copy_) and the
    reference can run on a private copy (clone)."""

    def clone(self) -> Any:
        return type(self)(**{f.name: getattr(self, f.name).clone() for f in fields(self)})  # type: ignore[arg-type]

    def copy_(self, other: Any) -> Any:
        for f in fields(self):  # type: ignore[arg-type]
            getattr(self, f.name).copy_(getattr(other, f.name))
        return self


@dataclass
class TTTLinearState(_StateMixin):
    """W (B,H,d,d), b (B,H,d): weights at the start of the current mini-batch; W_acc, b_acc: sum of eta_j * grad_j
    over the tokens of the current partial mini-batch (zero when offset == 0); offset: 0-dim int64 tensor."""

    W: torch.Tensor
    b: torch.Tensor
    W_acc: torch.Tensor
    b_acc: torch.Tensor
    offset: torch.Tensor


@dataclass
class TTTMLPState(_StateMixin):
    """W1 (B,H,d,4d), b1 (B,H,4d), W2 (B,H,4d,d), b2 (B,H,d), their *_acc sums, and offset (see TTTLinearState)."""

    W1: torch.Tensor
    b1: torch.Tensor
    W2: torch.Tensor
    b2: torch.Tensor
    W1_acc: torch.Tensor
    b1_acc: torch.Tensor
    W2_acc: torch.Tensor
    b2_acc: torch.Tensor
    offset: torch.Tensor


def state_dtype(w: torch.Tensor) -> torch.dtype:
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def expand_param(p: torch.Tensor, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    """(H, ...) learned initial weight -> (B, H, ...) private copy; differentiable, so W0 can be learned."""
    return p.to(dtype).unsqueeze(0).expand(batch_size, *p.shape).clone()


def check_args(
    q: torch.Tensor, token_eta: torch.Tensor, mini_batch_size: int, offset: torch.Tensor | None = None
) -> None:
    """Shape checks only (never a host read of data), so they are safe inside CUDA-graph capture."""
    if mini_batch_size < 1:
        raise UserError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
    if token_eta.shape != (mini_batch_size,):
        raise UserError(
            f"token_eta must have shape ({mini_batch_size},) (one factor per mini-batch position), "
            f"got {tuple(token_eta.shape)}"
        )
    if q.dim() != 4:
        raise UserError(f"q, k, v must be (B, H, T, d), got q of shape {tuple(q.shape)}")


def scan_steps(
    step: Callable[..., tuple[torch.Tensor, Any]],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: Any,
    mini_batch_size: int,
) -> tuple[torch.Tensor, Any]:
    """The naive form of either op: its one-token `step` over every token, on a clone of `state` (the input
    state is untouched). The decode step is thereby the single definition of the op."""
    check_args(q, token_eta, mini_batch_size)
    st = state.clone()
    outs = [
        step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], eta[:, :, t : t + 1], token_eta,
             ln_w, ln_b, st, mini_batch_size=mini_batch_size)[0]
        for t in range(q.shape[2])
    ]  # fmt: skip
    out = torch.cat(outs, dim=2) if outs else q.new_empty(q.shape)
    return out, st


def dispatch(registry: dict[str, Callable[..., Any]], impl: str, op: str) -> Callable[..., Any]:
    try:
        return registry[impl]
    except KeyError:
        raise UserError(f"unknown {op} impl {impl!r}; known: {', '.join(sorted(registry))}") from None


def augment(x: torch.Tensor) -> torch.Tensor:
    """Append a ones column: [x, 1] @ [W; b] = x W + b, so a weight and its bias update as one matrix (one matmul
    instead of a matmul plus a bias add in the sequential loop)."""
    return torch.nn.functional.pad(x, (0, 1), value=1.0)


def causal_eta(token_eta_pos: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """E[..., i, j] = token_eta[p_i] * eta_j for j <= i, else 0: how much token j's gradient moved the weights that
    token i's query sees. token_eta_pos (n,), eta (..., n) -> (..., n, n)."""
    return torch.tril(token_eta_pos.unsqueeze(-1) * eta.unsqueeze(-2))


def to_chunks(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, nc*size, ...) -> (nc, B, H, size, ...) contiguous, so each loop step reads one contiguous block."""
    B, H, L = x.shape[:3]
    x = x.reshape(B, H, L // size, size, *x.shape[3:])
    return x.movedim(2, 0).contiguous()


def from_chunks(x: torch.Tensor) -> torch.Tensor:
    """(nc, B, H, size, d) -> (B, H, nc*size, d)."""
    nc, B, H, size = x.shape[:4]
    return x.movedim(0, 2).reshape(B, H, nc * size, *x.shape[4:])
