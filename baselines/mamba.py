"""Mamba (v1) language model in plain PyTorch, with mamba-ssm's parameter names and shapes.

One state_dict loads both into this module and into mamba-ssm's `MambaLMHeadModel` (`backbone.embedding`,
`backbone.layers.{i}.norm`/`.mixer.*`, `backbone.norm_f`, `lm_head`, tied to the embedding).

`impl` is a field, switchable on a built model (the weights stay):
- `torch_ref`: plain PyTorch; the selective scan is a sequential loop over time in float32 (the reference).
- `mamba_ssm`: mamba-ssm's CUDA selective scan + causal-conv1d kernels on our module, the same kernels
  MambaLMHeadModel uses: `selective_scan_fn` and `causal_conv1d_fn` for forward/prefill,
  `selective_state_update` (Triton) and `causal_conv1d_update` for decode. The RMSNorms, the fp32 residual
  stream, the projections and the LM head stay plain torch in both impls (mamba-ssm fuses add+norm in Triton).
  The packages are imported only when this impl is selected.

Cache per layer: `conv` (B, d_inner, d_conv) in the model's dtype (causal_conv1d_update requires the input's
dtype; it holds raw inputs, so this is lossless) and `ssm` (B, d_inner, d_state) in float32 (float64 for a
float64 model), both preallocated and updated in place, so `decode_step` can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttt.errors import UserError, require
from ttt.generation import GenerationMixin

IMPLS = ("torch_ref", "mamba_ssm")


@functools.cache
def _kernels() -> SimpleNamespace:
    what = "impl 'mamba_ssm' of model 'mamba'"
    require("mamba_ssm", "gpu", what=what)
    scan = require("mamba_ssm.ops.selective_scan_interface", "gpu", what=what)
    ssu = require("mamba_ssm.ops.triton.selective_state_update", "gpu", what=what)
    conv = require("causal_conv1d", "gpu", what=what)
    return SimpleNamespace(
        selective_scan_fn=scan.selective_scan_fn,
        selective_state_update=ssu.selective_state_update,
        causal_conv1d_fn=conv.causal_conv1d_fn,
        causal_conv1d_update=conv.causal_conv1d_update,
    )


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def selective_scan(u, delta, A, B, C, D, z, delta_bias, state=None):
    """Reference selective scan, sequential over time; computes in float32 (float64 if any input is).

    u, delta, z: (b, d, T); A: (d, n); B, C: (b, n, T); D, delta_bias: (d,); state: (b, d, n) or None (zeros).
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t . h_t + D u_t, out = y * silu(z), with
    dt = softplus(delta + delta_bias). Returns (out in u's dtype, last state in the compute dtype).
    """
    acc = _acc_dtype(torch.promote_types(u.dtype, A.dtype))
    dt = F.softplus(delta.to(acc) + delta_bias.to(acc)[:, None])
    uf, Bf, Cf, Af = u.to(acc), B.to(acc), C.to(acc), A.to(acc)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=acc) if state is None else state.to(acc)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[:, :, t, None] * Af) * h + (dt[:, :, t] * uf[:, :, t])[..., None] * Bf[:, None, :, t]
        ys.append((h * Cf[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D.to(acc)[:, None] * uf
    return (y * F.silu(z.to(acc))).to(u.dtype), h


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = _acc_dtype(x.dtype)
        xf = x.to(acc)
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.to(acc)
        return out.to(self.weight.dtype)


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.d_state, self.d_conv = d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 1e-1, dt_floor: float = 1e-4) -> None:
        """mamba-ssm's init: S4D-real A, D = 1, dt bias = softplus^-1(log-uniform dt), dt_proj weight uniform."""
        if self.A_log.is_meta:  # parameter counting: no values to set
            return
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner, device=self.D.device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = dt.clamp(min=dt_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log.copy_(
            torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.D.device)).expand_as(
                self.A_log
            )
        )
        self.D.fill_(1.0)

    def _split(self, x_dbl: torch.Tensor):
        return torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)

    def forward(self, h: torch.Tensor, impl: str, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """h: (b, T, d_model). With `state` = (conv, ssm), overwrites it with the state after the last token."""
        T = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).contiguous().chunk(2, dim=1)  # (b, d_inner, T) each
        if state is not None:
            state[0].copy_(F.pad(x, (self.d_conv - T, 0)))  # the last d_conv inputs, zero left-padded
        if impl == "mamba_ssm":
            w = self.conv1d.weight.squeeze(1)
            x = _kernels().causal_conv1d_fn(x, w, self.conv1d.bias, activation="silu")
        else:
            x = F.silu(self.conv1d(x)[..., :T])
        dt, B, C = self._split(self.x_proj(x.transpose(1, 2)))  # (b, T, .)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2).contiguous()  # bias goes in as delta_bias
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        A = -torch.exp(self.A_log.to(_acc_dtype(self.A_log.dtype)))
        if impl == "mamba_ssm":
            y, last = _kernels().selective_scan_fn(
                x, dt, A.float(), B, C, self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                delta_softplus=True, return_last_state=True,
            )  # fmt: skip
        else:
            y, last = selective_scan(x, dt, A, B, C, self.D, z, self.dt_proj.bias)
        if state is not None:
            state[1].copy_(last)
        return self.out_proj(y.transpose(1, 2))

    def step(self, h: torch.Tensor, impl: str, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """One token, h: (b, 1, d_model); updates conv and ssm in place (no host syncs)."""
        x, z = self.in_proj(h[:, 0]).chunk(2, dim=-1)  # (b, d_inner)
        w = self.conv1d.weight.squeeze(1)  # (d_inner, d_conv)
        if impl == "mamba_ssm":
            x = _kernels().causal_conv1d_update(x, conv, w, self.conv1d.bias, "silu")
        else:
            conv.copy_(torch.cat([conv[..., 1:], x[..., None].to(conv.dtype)], dim=-1))
            acc = _acc_dtype(x.dtype)
            x = F.silu((conv.to(acc) * w.to(acc)).sum(-1) + self.conv1d.bias.to(acc)).to(x.dtype)
        dt, B, C = self._split(self.x_proj(x))
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(self.A_log.to(_acc_dtype(self.A_log.dtype)))
        if impl == "mamba_ssm":
            y = _kernels().selective_state_update(
                ssm, x, dt, A.float(), B, C, self.D.float(), z=z, dt_bias=self.dt_proj.bias.float(), dt_softplus=True
            )
        else:
            y, last = selective_scan(
                x[..., None], dt[..., None], A, B[..., None], C[..., None], self.D, z[..., None], self.dt_proj.bias, ssm
            )
            ssm.copy_(last)
            y = y[..., 0]
        return self.out_proj(y)[:, None]


class Block(nn.Module):
    def __init__(self, d_model: int, **mixer_kw: int) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model, eps=1e-5)
        self.mixer = MambaMixer(d_model, **mixer_kw)


@dataclass
class MambaConfig:
    vocab_size: int
    d_model: int
    n_layer: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2


@dataclass
class MambaCache:
    """Per layer: conv (B, d_inner, d_conv), model dtype; ssm (B, d_inner, d_state), float32."""

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]


class MambaLM(GenerationMixin, nn.Module):
    def __init__(self, cfg: MambaConfig, impl: str = "torch_ref") -> None:
        super().__init__()
        self.cfg = cfg
        kw = {"d_state": cfg.d_state, "d_conv": cfg.d_conv, "expand": cfg.expand}
        self.backbone = nn.Module()
        self.backbone.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.backbone.layers = nn.ModuleList(Block(cfg.d_model, **kw) for _ in range(cfg.n_layer))
        self.backbone.norm_f = RMSNorm(cfg.d_model, eps=1e-5)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.backbone.embedding.weight
        self._init_weights()
        self.impl = impl

    @torch.no_grad()
    def _init_weights(self) -> None:
        if self.lm_head.weight.is_meta:
            return
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)
        for blk in self.backbone.layers:
            blk.mixer.reset_ssm_parameters()
            blk.mixer.out_proj.weight.div_(math.sqrt(self.cfg.n_layer))  # mamba-ssm's prenorm-residual rescale

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, name: str) -> None:
        if name not in IMPLS:
            raise UserError(f"unknown Mamba impl {name!r}; known: {', '.join(IMPLS)}")
        if name == "mamba_ssm":
            _kernels()
        self._impl = name

    @property
    def decode_impl(self) -> str:
        return "selective_state_update+causal_conv1d_update" if self.impl == "mamba_ssm" else "torch_ref"

    def _run(self, input_ids: torch.Tensor, cache: MambaCache | None) -> torch.Tensor:
        emb = self.backbone.embedding(input_ids)
        res = emb.to(_acc_dtype(emb.dtype))  # residual stream in fp32 (residual_in_fp32)
        for i, blk in enumerate(self.backbone.layers):
            state = None if cache is None else (cache.conv[i], cache.ssm[i])
            res = res + blk.mixer(blk.norm(res), self.impl, state).to(res.dtype)
        return res

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        res = self._run(input_ids, None)
        if logits_to_keep:
            res = res[:, -logits_to_keep:]
        return self.lm_head(self.backbone.norm_f(res))

    def allocate_cache(self, batch_size: int, max_seqlen: int) -> MambaCache:
        """Static state; its size does not depend on `max_seqlen` (kept for the shared interface)."""
        w = self.lm_head.weight
        m = self.backbone.layers[0].mixer
        conv = [w.new_zeros(batch_size, m.d_inner, m.d_conv) for _ in self.backbone.layers]
        ssm = [w.new_zeros(batch_size, m.d_inner, m.d_state, dtype=_acc_dtype(w.dtype)) for _ in conv]
        return MambaCache(conv, ssm)

    def prefill(self, input_ids: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        res = self._run(input_ids, cache)
        return self.lm_head(self.backbone.norm_f(res[:, -1]))

    def decode_step(self, input_ids: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        emb = self.backbone.embedding(input_ids)
        res = emb.to(_acc_dtype(emb.dtype))
        for i, blk in enumerate(self.backbone.layers):
            res = res + blk.mixer.step(blk.norm(res), self.impl, cache.conv[i], cache.ssm[i]).to(res.dtype)
        return self.lm_head(self.backbone.norm_f(res[:, 0]))


def build(size_cfg: Any, model_cfg: Any, impl: str = "torch_ref") -> MambaLM:
    """The registry's builder: `conf/size/<size>.yaml` (mamba.d_model, mamba.n_layer, vocab_size), `conf/model/mamba.yaml`."""
    cfg = MambaConfig(
        vocab_size=int(size_cfg.vocab_size),
        d_model=int(size_cfg.mamba.d_model),
        n_layer=int(size_cfg.mamba.n_layer),
        d_state=int(model_cfg.get("d_state", 16)),
        d_conv=int(model_cfg.get("d_conv", 4)),
        expand=int(model_cfg.get("expand", 2)),
    )
    return MambaLM(cfg, impl=impl)
