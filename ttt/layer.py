"""TTT-Linear and TTT-MLP sequence-modeling layers (the official ttt-lm-pytorch layer, written anew).

Per layer: q/k/v projections (with `share_qk`: one shared q/k projection followed by separate causal depthwise
convs, as in the Mamba backbone), RoPE on q and k with positions modulo the mini-batch size, the learnable inner
lr eta = ttt_base_lr / d * sigmoid(x . theta_lr[h] + b_lr[h]), the per-position factor token_eta, the TTT op from
`ttt.ops`, post-LayerNorm over the full width, the optional gate GELU_tanh(g_proj x) * out, and o_proj.

The inner loop itself lives in `ttt.ops`; this module only prepares its inputs and owns the learned parameters.
`forward` runs a whole sequence from the learned initial state (optionally writing the final state into a decode
cache); `step` runs one token against a cache in place, with no host syncs, so it can be captured in a CUDA graph.

impl "triton" at inference (no autograd) takes a fused path (`fused_forward` / `fused_step`, and `ttt.model.Block`
around them): one GEMM for every input projection, one prologue kernel (q/k convs, RoPE, eta), the op, one epilogue
kernel (post-norm, gate), o_proj; kernels in `ttt.fused`. `fused = False` on a layer (or TTT_FUSED=0 in the
environment) keeps the unfused PyTorch code around the Triton op, which is also what runs when gradients are on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttt.config import TTTConfig
from ttt.fused.cache import DerivedParams
from ttt.rope import apply_rope, rope_cos_sin

FUSED_DEFAULT = os.environ.get("TTT_FUSED", "1") != "0"
# Impls that read the state's mini-batch offset on the host (the dual forms: chunk boundaries are shapes). From a
# fresh state they get a host copy of its zero offset, so a forward has no device read: none would be allowed while
# a CUDA graph captures a training step (bench/train_graph.py), and each one is a sync.
HOST_OFFSET_IMPLS = frozenset({"dual", "dual_compiled"})
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def row_stats_on() -> bool:
    """Whether a decode step's row norms ride on other kernels instead of their own launches: the post-norm + gate in
    TTT-Linear's fused step (`ttt.fused.linear_step`), the ffn RMSNorm folded into the gate|up GEMM from o_proj's
    row sums of squares (`ttt.fused.skinny.FoldedRMSNorm`). TTT_ROW_STATS=0 keeps the launches (A/B runs)."""
    return os.environ.get("TTT_ROW_STATS", "1") != "0"


def fused_path_possible(x: torch.Tensor, impl: str, fused: bool) -> bool:
    """impl 'triton', asked for, inference only (the fused kernels have no backward, and their concatenated weights
    are a cached copy), a dtype the kernels take, on CUDA (or under TRITON_INTERPRET for the CPU tests)."""
    return (
        impl == "triton"
        and fused
        and not torch.is_grad_enabled()
        and x.dtype in _FUSED_DTYPES
        and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
    )


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, scaled in the input dtype (the official code's order)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class CausalDepthwiseConv(nn.Module):
    """Causal depthwise conv over time with bias. weight (C, k) (the official nn.Conv1d keeps (C, 1, k)).

    The decode state is the last k inputs, (B, C, k), oldest first, zero-padded at the start of a sequence."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(channels, kernel))
        self.bias = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv1d's default init (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)), fan_in = k for depthwise):
        # the official model never re-initialises its convs.
        bound = 1.0 / math.sqrt(self.kernel)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); when `state` is given, the last k inputs are written into it."""
        xt = x.transpose(1, 2)
        if state is not None:
            T = xt.shape[-1]
            state.copy_(F.pad(xt, (max(self.kernel - T, 0), 0))[..., -self.kernel :])
        y = F.conv1d(F.pad(xt, (self.kernel - 1, 0)), self.weight.unsqueeze(1), self.bias, groups=xt.shape[1])
        return y.transpose(1, 2)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """x (B, 1, C), state (B, C, k) updated in place -> (B, 1, C)."""
        state.copy_(torch.cat((state[..., 1:], x.transpose(1, 2).to(state.dtype)), dim=-1))
        y = (state * self.weight).sum(-1) + self.bias
        return y.unsqueeze(1).to(x.dtype)


class PreConv(nn.Module):
    """The Mamba backbone's block-level conv: RMSNorm then a causal depthwise conv (the block adds the residual)."""

    def __init__(self, cfg: TTTConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.conv = CausalDepthwiseConv(cfg.hidden_size, cfg.conv_kernel)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(self.norm(x), state)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.conv.step(self.norm(x), state)


@dataclass
class LayerCache:
    """Decode cache of one block: the TTT state (from `ttt.ops`), and the conv windows (None when unused).

    One `qk_conv` window serves both conv_q and conv_k: they read the same shared q/k projection."""

    state: Any
    pre_conv: torch.Tensor | None = None
    qk_conv: torch.Tensor | None = None


_COMPILED: dict[Callable[..., Any], Callable[..., Any]] = {}


def _sequence_op(ops: Any, entry: Callable[..., Any], impl: str) -> Callable[..., Any]:
    """The op callable for `impl`. 'dual_compiled' goes to the op package if it registered one; otherwise we
    torch.compile its dual form ourselves, once per process."""
    if impl == "dual_compiled" and "dual_compiled" not in ops.IMPLS:
        dual = ops.IMPLS["dual"]
        if dual not in _COMPILED:
            _COMPILED[dual] = torch.compile(dual, dynamic=False)
        return _COMPILED[dual]

    def call(*args: Any, mini_batch_size: int) -> Any:
        return entry(*args, mini_batch_size=mini_batch_size, impl=impl)

    return call


class TTTBase(nn.Module):
    """Everything but the inner model: projections, convs, RoPE, eta, LN parameters, post-norm, gate, o_proj."""

    inner_names: tuple[str, ...] = ()
    fused: bool = FUSED_DEFAULT  # impl "triton" at inference takes the fused kernels (set False to compare)

    def __init__(self, cfg: TTTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._derived = DerivedParams()  # concatenated weights etc. of the fused path (not in state_dict)
        w, H, d, b = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.mini_batch_size
        self.num_heads, self.head_dim, self.mini_batch_size = H, d, b
        if cfg.share_qk:
            self.qk_proj = nn.Linear(w, w, bias=False)
            self.conv_q = CausalDepthwiseConv(w, cfg.conv_kernel)
            self.conv_k = CausalDepthwiseConv(w, cfg.conv_kernel)
        else:
            self.q_proj = nn.Linear(w, w, bias=False)
            self.k_proj = nn.Linear(w, w, bias=False)
        self.v_proj = nn.Linear(w, w, bias=False)
        self.o_proj = nn.Linear(w, w, bias=False)
        self.g_proj = nn.Linear(w, w, bias=False) if cfg.use_gate else None
        self.lr_weight = nn.Parameter(torch.empty(H, w))  # theta_lr, one row per head
        self.lr_bias = nn.Parameter(torch.empty(H))
        self.token_idx_bias = nn.Parameter(torch.empty(b))  # learnable offset added to 1/i
        self.ln_weight = nn.Parameter(torch.empty(H, d))  # the per-head LayerNorm inside f
        self.ln_bias = nn.Parameter(torch.empty(H, d))
        self.post_norm = nn.LayerNorm(w, eps=1e-6)
        self._init_inner()
        self.reset_parameters()

    # -- subclass hooks -------------------------------------------------------------------------------------
    def _init_inner(self) -> None:
        raise NotImplementedError

    def _reset_inner(self, std: float) -> None:
        raise NotImplementedError

    def _ops(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        """(ops module, sequence entry, step entry)."""
        raise NotImplementedError

    def init_state(self, batch_size: int) -> Any:
        """A fresh TTT state from the learned initial weights (differentiable w.r.t. them)."""
        ops = self._ops()[0]
        return ops.init_state(*(getattr(self, n) for n in self.inner_names), batch_size)

    # -- init -----------------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        std = self.cfg.initializer_range
        for lin in (self.v_proj, self.o_proj, self.g_proj, getattr(self, "qk_proj", None)):
            if lin is not None:
                nn.init.normal_(lin.weight, std=std)
        for lin in (getattr(self, "q_proj", None), getattr(self, "k_proj", None)):
            if lin is not None:
                nn.init.normal_(lin.weight, std=std)
        nn.init.normal_(self.lr_weight, std=std)
        nn.init.zeros_(self.lr_bias)
        nn.init.zeros_(self.token_idx_bias)
        nn.init.ones_(self.ln_weight)
        nn.init.zeros_(self.ln_bias)
        self.post_norm.reset_parameters()
        self._reset_inner(std)

    # -- input preparation ----------------------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.reshape(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def _qkv(
        self, x: torch.Tensor, cache: LayerCache | None, step: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.cfg.share_qk:
            xqk = self.qk_proj(x)
            if step:
                assert cache is not None and cache.qk_conv is not None
                # Both convs read the same input window: advance it once, then apply each kernel to it.
                cache.qk_conv.copy_(torch.cat((cache.qk_conv[..., 1:], xqk.transpose(1, 2)), dim=-1))
                win = cache.qk_conv
                q = ((win * self.conv_q.weight).sum(-1) + self.conv_q.bias).unsqueeze(1)
                k = ((win * self.conv_k.weight).sum(-1) + self.conv_k.bias).unsqueeze(1)
            else:
                q = self.conv_q(xqk, cache.qk_conv if cache is not None else None)
                k = self.conv_k(xqk)
        else:
            q, k = self.q_proj(x), self.k_proj(x)
        return self._heads(q), self._heads(k), self._heads(self.v_proj(x))

    def _rope(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_cos_sin(pos, self.head_dim, self.cfg.rope_theta, q.dtype)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    def eta(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, width) -> (B, H, T): ttt_base_lr / d * sigmoid(x . theta_lr[h] + b_lr[h]). cfg.ttt_base_lr is a
        float, or a 0-dim tensor while a CUDA-graphed training run warms it up (set in place between replays)."""
        logits = F.linear(x, self.lr_weight, self.lr_bias)
        cd = torch.promote_types(logits.dtype, torch.float32)
        return (self.cfg.ttt_base_lr / self.head_dim * torch.sigmoid(logits.to(cd))).transpose(1, 2)

    def token_eta(self) -> torch.Tensor:
        """(b,): clamp_min(1/i + learnable bias, 0), i = 1..b. 1/i is built here in float32 rather than kept as a
        buffer, so a model cast to bf16 does not round it."""
        bias = self.token_idx_bias
        cd = torch.promote_types(bias.dtype, torch.float32)
        i = torch.arange(1, self.mini_batch_size + 1, device=bias.device, dtype=cd)
        return (1.0 / i + bias.to(cd)).clamp_min(0.0)

    def _output(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z (B, H, T, d) -> post_norm -> gate (after the norm, as the official code) -> o_proj."""
        B, H, T, d = z.shape
        out = self.post_norm(z.transpose(1, 2).reshape(B, T, H * d).to(x.dtype))
        if self.g_proj is not None:
            out = F.gelu(self.g_proj(x), approximate="tanh") * out
        return self.o_proj(out)

    # -- forward / step -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, impl: str = "dual", cache: LayerCache | None = None) -> torch.Tensor:
        """x (B, T, width), a sequence from position 0. With `cache`, its TTT state and conv windows are set to
        the state after x (prefill)."""
        if self.fusable(x, impl):
            return self.fused_forward(x, cache)
        B, T, _ = x.shape
        q, k, v = self._qkv(x, cache, step=False)
        pos = torch.arange(T, device=x.device) % self.mini_batch_size
        q, k = self._rope(q, k, pos)
        ops, entry, _ = self._ops()
        fn = _sequence_op(ops, entry, impl)
        state = self.init_state(B)
        if impl in HOST_OFFSET_IMPLS:
            state.offset = torch.zeros((), dtype=torch.int64)
        z, state = fn(
            q, k, v, self.eta(x), self.token_eta(), self.ln_weight, self.ln_bias, state,
            mini_batch_size=self.mini_batch_size,
        )  # fmt: skip
        if cache is not None:
            cache.state.copy_(state)
        return self._output(x, z)

    def step(self, x: torch.Tensor, cache: LayerCache, pos: torch.Tensor, impl: str = "naive") -> torch.Tensor:
        """One token x (B, 1, width); pos (1,) long tensor = position inside the mini-batch. In-place, graph-safe.
        A sequence impl with a fused step of the same name (e.g. 'triton') decodes with it; others use the
        PyTorch step, the definition."""
        if self.fusable(x, impl):
            return self.fused_step(x, cache, pos, impl)
        q, k, v = self._qkv(x, cache, step=True)
        q, k = self._rope(q, k, pos)
        ops, _, step_fn = self._ops()
        step_fn = getattr(ops, "STEP_IMPLS", {}).get(impl, step_fn)
        z, _ = step_fn(
            q, k, v, self.eta(x), self.token_eta(), self.ln_weight, self.ln_bias, cache.state,
            mini_batch_size=self.mini_batch_size,
        )  # fmt: skip
        return self._output(x, z)

    # -- fused inference path (impl "triton") -----------------------------------------------------------------
    def fusable(self, x: torch.Tensor, impl: str) -> bool:
        return fused_path_possible(x, impl, self.fused) and x.dtype == self.v_proj.weight.dtype

    def _in_weight(self) -> torch.Tensor:
        """[W_qk | W_q; W_k] + [W_v] + [W_g] + [theta_lr]: every input projection as one GEMM (ttt.fused.ttt_io
        .in_layout gives the column offsets). A cached copy, rebuilt when any of these parameters changes."""
        parts = [self.qk_proj.weight] if self.cfg.share_qk else [self.q_proj.weight, self.k_proj.weight]
        parts += [self.v_proj.weight, *([self.g_proj.weight] if self.g_proj is not None else []), self.lr_weight]
        return self._derived.get("in_proj", parts, lambda: torch.cat(parts, dim=0))

    def _prologue_args(self) -> Any:
        from ttt.fused.ttt_io import PrologueArgs

        d, dev = self.head_dim, self.lr_bias.device

        def table() -> torch.Tensor:  # the reference's own cos/sin at positions 0..b-1 (positions are mod b)
            pos = torch.arange(self.mini_batch_size, device=dev)
            return torch.stack(rope_cos_sin(pos, d, self.cfg.rope_theta, torch.float32))

        cos_sin = self._derived.get("rope", [], table, extra=(str(dev), d, self.mini_batch_size))
        convs = (
            (self.conv_q.weight, self.conv_q.bias, self.conv_k.weight, self.conv_k.bias)
            if self.cfg.share_qk
            else (None,) * 4
        )
        return PrologueArgs(
            *convs, lr_bias=self.lr_bias, cos=cos_sin[0], sin=cos_sin[1], head_dim=d,
            eta_scale=self.cfg.ttt_base_lr / d,
        )  # fmt: skip

    def _token_eta_cached(self) -> torch.Tensor:
        return self._derived.get("token_eta", [self.token_idx_bias], self.token_eta)

    def _fused_layout(self) -> Any:
        from ttt.fused.ttt_io import in_layout

        return in_layout(self.cfg.hidden_size, self.num_heads, self.cfg.share_qk, self.g_proj is not None)

    def _o_proj(self, a: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        if out is None:
            return self.o_proj(a)
        # The residual add rides on the GEMM (beta = 1): no separate read of out and o.
        W = a.shape[-1]
        out.view(-1, W).addmm_(a.view(-1, W), self.o_proj.weight.t())
        return out

    def fused_forward(
        self, x: torch.Tensor, cache: LayerCache | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`forward(x, 'triton', cache)` through the fused kernels. With `out` (contiguous, same shape as x, owned by
        the caller) returns out + forward(x), added into out in place."""
        from ttt.fused import ttt_io

        B = x.shape[0]
        lay = self._fused_layout()
        P = F.linear(x.contiguous(), self._in_weight())
        qkv, eta = ttt_io.prologue(P, lay, self._prologue_args(), cache.qk_conv if cache is not None else None)
        q, k, v = (self._heads(t) for t in qkv)  # (B, H, T, d) views sharing one set of strides
        ops, entry, _ = self._ops()
        z, state = _sequence_op(ops, entry, "triton")(
            q, k, v, eta.transpose(1, 2), self._token_eta_cached(), self.ln_weight, self.ln_bias,
            self.init_state(B), mini_batch_size=self.mini_batch_size,
        )  # fmt: skip
        if cache is not None:
            cache.state.copy_(state)
        a = ttt_io.epilogue(z, P, lay, self.post_norm.weight, self.post_norm.bias, self.post_norm.eps)
        return self._o_proj(a, out)

    def fused_step(
        self,
        x: torch.Tensor,
        cache: LayerCache,
        pos: torch.Tensor,
        impl: str = "triton",
        out: torch.Tensor | None = None,
        sumsq: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`step` through the fused kernels: in-proj GEMM, prologue (conv window advanced in place), the op's step,
        epilogue, o_proj (into `out` in place when given, as `fused_forward`; then `sumsq`, if given, gets the
        result's row partials for the next RMSNorm, `ttt.fused.skinny.linear`). No host syncs. At <= 16 sequences
        the GEMMs take the skinny decode kernel (`ttt.fused.skinny`), and where the op's step kernel can also run
        the epilogue (TTT-Linear's fused step) it does, with no launch of its own (TTT_ROW_STATS=0 keeps the launch,
        for A/B runs); the chain is PDL-launched on Hopper (`ttt.ops.pdl`)."""
        from ttt.fused import skinny, ttt_io
        from ttt.ops.pdl import pdl_on

        lay = self._fused_layout()
        w_in = self._in_weight()
        P = skinny.linear(x.contiguous(), w_in, static_weights=not self._derived.rebuilt)
        pn = self.post_norm
        z, a = self._fused_step_op(P, lay, cache, pos, impl, (pn.weight, pn.bias, pn.eps) if row_stats_on() else None)
        if a is None:
            a = ttt_io.epilogue(z, P, lay, pn.weight, pn.bias, pn.eps, pdl_on(P))
        return skinny.linear(a, self.o_proj.weight, out, sumsq=sumsq)

    def _fused_step_op(
        self, P: torch.Tensor, lay: Any, cache: LayerCache, pos: torch.Tensor, impl: str, post_norm: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The op's step from the in-proj row P: the prologue kernel, then the op's step for `impl` -> (z, None).
        An override whose kernel can also run the epilogue given `post_norm` (weight, bias, eps) returns its
        result, o_proj's input, in place of None."""
        from ttt.fused import ttt_io

        qkv, eta = ttt_io.prologue_step(P, lay, self._prologue_args(), cache.qk_conv, pos)
        q, k, v = (self._heads(t) for t in qkv)
        ops, _, step_fn = self._ops()
        step_fn = getattr(ops, "STEP_IMPLS", {}).get(impl, step_fn)
        z, _ = step_fn(
            q, k, v, eta.transpose(1, 2), self._token_eta_cached(), self.ln_weight, self.ln_bias, cache.state,
            mini_batch_size=self.mini_batch_size,
        )  # fmt: skip
        return z, None


class TTTLinear(TTTBase):
    """f_res(x) = x W + b; learned initial W0 (H, d, d), b0 (H, d)."""

    inner_names = ("W0", "b0")

    def _init_inner(self) -> None:
        H, d = self.num_heads, self.head_dim
        self.W0 = nn.Parameter(torch.empty(H, d, d))
        self.b0 = nn.Parameter(torch.empty(H, d))

    def _reset_inner(self, std: float) -> None:
        nn.init.normal_(self.W0, std=std)
        nn.init.zeros_(self.b0)

    def _ops(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        from ttt.ops import ttt_linear as ops

        return ops, ops.ttt_linear, ops.ttt_linear_step

    def _fused_step_op(
        self, P: torch.Tensor, lay: Any, cache: LayerCache, pos: torch.Tensor, impl: str, post_norm: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """impl 'triton': prologue and step in one kernel (`ttt.fused.linear_step`, the epilogue too given
        `post_norm`; TTT_FUSED_STEP=0 keeps the two launches, for A/B runs). Other step impls take the generic
        path."""
        from ttt.ops import ttt_linear as ops

        if ops.STEP_IMPLS.get(impl) is not ops.STEP_IMPLS["triton"] or os.environ.get("TTT_FUSED_STEP") == "0":
            return super()._fused_step_op(P, lay, cache, pos, impl)
        from ttt.fused.linear_step import linear_decode_step

        return linear_decode_step(
            P, lay, self._prologue_args(), cache.qk_conv, pos, self._token_eta_cached(), self.ln_weight,
            self.ln_bias, cache.state, self.mini_batch_size, post_norm=post_norm,
        )  # fmt: skip


class TTTMLP(TTTBase):
    """f_res(x) = GELU_tanh(x W1 + b1) W2 + b2 with hidden 4d; learned initial W1, b1, W2, b2."""

    inner_names = ("W1", "b1", "W2", "b2")

    def _init_inner(self) -> None:
        H, d = self.num_heads, self.head_dim
        self.W1 = nn.Parameter(torch.empty(H, d, 4 * d))
        self.b1 = nn.Parameter(torch.empty(H, 4 * d))
        self.W2 = nn.Parameter(torch.empty(H, 4 * d, d))
        self.b2 = nn.Parameter(torch.empty(H, d))

    def _reset_inner(self, std: float) -> None:
        nn.init.normal_(self.W1, std=std)
        nn.init.zeros_(self.b1)
        nn.init.normal_(self.W2, std=std)
        nn.init.zeros_(self.b2)

    def _ops(self) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
        from ttt.ops import ttt_mlp as ops

        return ops, ops.ttt_mlp, ops.ttt_mlp_step


def make_ttt_layer(cfg: TTTConfig) -> TTTBase:
    return TTTLinear(cfg) if cfg.ttt_layer_type == "linear" else TTTMLP(cfg)
