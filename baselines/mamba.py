"""Mamba (v1) language model: a plain PyTorch reference, and mamba-ssm's own `MambaLMHeadModel`, on one set of weights.

`impl` is a field, switchable on a built model (the weights stay: both impls read the same Parameter objects):
- `torch_ref`: plain PyTorch written here; the selective scan is a sequential loop over time in float32 (the
  reference). Parameter names and shapes are those of mamba-ssm's `MambaLMHeadModel` (`backbone.embedding`,
  `backbone.layers.{i}.norm` / `.mixer.{in_proj,conv1d,x_proj,dt_proj,A_log,D,out_proj}`, `backbone.norm_f`,
  `lm_head` tied to the embedding; the vocabulary padded to a multiple of 8 as mamba-ssm pads it), so one
  state_dict loads into both.
- `mamba_ssm`: the real `mamba_ssm.models.mixer_seq_simple.MambaLMHeadModel` (Mamba1 layers, RMSNorm, fp32
  residual, fused add+norm), built once on the meta device and then pointed at this module's Parameters, so no
  second copy of the weights exists and `.to()`/`load_state_dict` on this module move both. It is kept out of the
  module tree (no duplicate names in `state_dict`). mamba-ssm is imported only when this impl is selected.

Decode cache per layer: conv (B, d_inner, d_conv) and ssm (B, d_inner, d_state), preallocated and updated in place.
`torch_ref` keeps ssm in float32; `mamba_ssm` allocates with mamba-ssm's `allocate_inference_cache` (its states in
the model's dtype, as its `generate` does) and drives it through an `InferenceParams` over the same tensors.
Either impl can continue a cache that the other allocated.
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
PAD_VOCAB_MULTIPLE = 8  # mamba-ssm's MambaConfig.pad_vocab_size_multiple


@functools.cache
def _mamba_ssm() -> SimpleNamespace:
    """mamba-ssm's model classes, imported on first use (the module must import on a CPU machine without it)."""
    what = "impl 'mamba_ssm' of model 'mamba'"
    models = require("mamba_ssm.models.mixer_seq_simple", "gpu", what=what)
    config = require("mamba_ssm.models.config_mamba", "gpu", what=what)
    generation = require("mamba_ssm.utils.generation", "gpu", what=what)
    return SimpleNamespace(
        MambaLMHeadModel=models.MambaLMHeadModel,
        MambaConfig=config.MambaConfig,
        InferenceParams=generation.InferenceParams,
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
    """mamba-ssm's RMSNorm (eps 1e-5): normalized and scaled in float32, returned in the weight's dtype."""

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
    """One Mamba1 mixer in plain PyTorch, named and shaped as mamba-ssm's `Mamba` (conv bias on, no proj biases)."""

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
        dev = self.D.device
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner, device=dev) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) == dt
        self.A_log.copy_(torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32, device=dev)))
        self.D.fill_(1.0)

    def _split(self, x_dbl: torch.Tensor) -> list[torch.Tensor]:
        return torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)

    def forward(self, h: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """h: (b, T, d_model). With `state` = (conv, ssm), overwrites it with the state after the last token."""
        T = h.shape[1]
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, T) each
        if state is not None:
            state[0].copy_(F.pad(x, (self.d_conv - T, 0)))  # the last d_conv conv inputs, zero left-padded
        x = F.silu(self.conv1d(x)[..., :T])  # causal: the conv pads d_conv - 1 each side, keep the first T
        dt, B, C = self._split(self.x_proj(x.transpose(1, 2)))  # (b, T, .)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # the bias goes in as delta_bias, under softplus
        A = -torch.exp(self.A_log.to(_acc_dtype(self.A_log.dtype)))
        y, last = selective_scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D, z, self.dt_proj.bias)
        if state is not None:
            state[1].copy_(last)
        return self.out_proj(y.transpose(1, 2))

    def step(self, h: torch.Tensor, conv: torch.Tensor, ssm: torch.Tensor) -> torch.Tensor:
        """One token, h: (b, 1, d_model); updates conv and ssm in place (no host syncs, graph-capturable)."""
        x, z = self.in_proj(h[:, 0]).chunk(2, dim=-1)  # (b, d_inner)
        conv.copy_(torch.cat([conv[..., 1:], x[..., None].to(conv.dtype)], dim=-1))
        acc = _acc_dtype(x.dtype)
        w = self.conv1d.weight.squeeze(1)  # (d_inner, d_conv)
        x = F.silu((conv.to(acc) * w.to(acc)).sum(-1) + self.conv1d.bias.to(acc)).to(x.dtype)
        dt, B, C = self._split(self.x_proj(x))
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(self.A_log.to(acc))
        y, last = selective_scan(
            x[..., None], dt[..., None], A, B[..., None], C[..., None], self.D, z[..., None], self.dt_proj.bias, ssm
        )
        ssm.copy_(last)
        return self.out_proj(y[..., 0])[:, None]


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

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // PAD_VOCAB_MULTIPLE) * PAD_VOCAB_MULTIPLE


@dataclass
class MambaCache:
    """Per layer conv (B, d_inner, d_conv) and ssm (B, d_inner, d_state). `params` is mamba-ssm's InferenceParams
    over the same tensors (made on first use by the mamba_ssm impl); its `seqlen_offset` is a host int that counts
    tokens for mamba-ssm's sake only (see `MambaLM.decode_step`)."""

    conv: list[torch.Tensor]
    ssm: list[torch.Tensor]
    params: Any = None


class MambaLM(GenerationMixin, nn.Module):
    """The causal-LM interface of docs/interfaces.md over Mamba1, in two implementations on one set of weights."""

    def __init__(self, cfg: MambaConfig, impl: str = "torch_ref") -> None:
        super().__init__()
        self.cfg = cfg
        kw = {"d_state": cfg.d_state, "d_conv": cfg.d_conv, "expand": cfg.expand}
        self.backbone = nn.Module()
        self.backbone.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.backbone.layers = nn.ModuleList(Block(cfg.d_model, **kw) for _ in range(cfg.n_layer))
        self.backbone.norm_f = RMSNorm(cfg.d_model, eps=1e-5)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        self.lm_head.weight = self.backbone.embedding.weight  # tied, as MambaConfig.tie_embeddings
        # mamba-ssm's model, outside the module tree (object.__setattr__ skips nn.Module's registration).
        object.__setattr__(self, "_ssm_model", None)
        self._init_weights()
        self.impl = impl

    @torch.no_grad()
    def _init_weights(self) -> None:
        """mamba-ssm's `_init_weights`: embedding normal(0.02), out_proj (kaiming-uniform, torch's Linear default)
        divided by sqrt(n_layer), the mixer's own SSM init; conv/x_proj keep torch's defaults, as there."""
        if self.lm_head.weight.is_meta:
            return
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)
        for blk in self.backbone.layers:
            blk.mixer.reset_ssm_parameters()
            blk.mixer.out_proj.weight.div_(math.sqrt(self.cfg.n_layer))

    # ---- implementation switch -------------------------------------------------------------------------------

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, name: str) -> None:
        if name not in IMPLS:
            raise UserError(f"unknown Mamba impl {name!r}; known: {', '.join(IMPLS)}")
        if name == "mamba_ssm":
            self._tie_ssm_model()
        self._impl = name

    @property
    def decode_impl(self) -> str:
        """What one decode step runs, for the result rows."""
        if self.impl == "mamba_ssm":
            return "mamba_ssm_step"  # MambaLMHeadModel in step mode: causal_conv1d_update + selective_state_update
        return "torch_ref"

    @property
    def ssm_model(self) -> nn.Module:
        """mamba-ssm's MambaLMHeadModel on this module's weights (built on first use). Not re-tied here: this runs
        on every call, and the Parameter objects change only through `.to()`-style conversions (see `_apply`);
        `load_state_dict` copies into them in place."""
        return self._ssm_model if self._ssm_model is not None else self._tie_ssm_model()

    def _tie_ssm_model(self) -> nn.Module:
        """Build mamba-ssm's model once, with no weights of its own (meta device), and point every parameter of it
        at ours. Called again after `.to()` (see `_apply`), in case a conversion replaced Parameter objects."""
        model = self._ssm_model
        if model is None:
            m = _mamba_ssm()
            cfg = m.MambaConfig(
                d_model=self.cfg.d_model,
                n_layer=self.cfg.n_layer,
                vocab_size=self.cfg.vocab_size,
                ssm_cfg={"layer": "Mamba1", "d_state": self.cfg.d_state, "d_conv": self.cfg.d_conv,
                         "expand": self.cfg.expand},
                rms_norm=True,
                residual_in_fp32=True,
                fused_add_norm=True,
                pad_vocab_size_multiple=PAD_VOCAB_MULTIPLE,
                tie_embeddings=True,
            )  # fmt: skip
            model = m.MambaLMHeadModel(cfg, device="meta").eval()
            object.__setattr__(self, "_ssm_model", model)
        theirs = dict(model.named_parameters(remove_duplicate=False))
        ours = dict(self.named_parameters(remove_duplicate=False))
        if theirs.keys() != ours.keys():
            raise RuntimeError(f"mamba-ssm parameter names differ from ours: {sorted(theirs.keys() ^ ours.keys())}")
        for name, p in ours.items():
            if theirs[name].shape != p.shape:
                raise RuntimeError(f"mamba-ssm's {name} has shape {tuple(theirs[name].shape)}, ours {tuple(p.shape)}")
            owner, _, attr = name.rpartition(".")
            setattr(model.get_submodule(owner), attr, p)
        return model

    def _apply(self, fn: Any, recurse: bool = True) -> MambaLM:
        """`.to()`/`.cuda()`/`.half()`, with two of mamba-ssm's habits: A_log and D stay in float32 under a cast to
        a 16-bit dtype (its Mamba builds them in fp32 whatever the model dtype, "Keep in fp32"; we convert from the
        pre-cast values, so no precision is lost), and its model is re-pointed at our (possibly new) Parameters."""
        keep = [
            (m, name, getattr(m, name).data)
            for m in self.modules()
            if isinstance(m, MambaMixer)
            for name in ("A_log", "D")
        ]
        super()._apply(fn, recurse)
        half = (torch.float16, torch.bfloat16)
        for m, name, old in keep:
            p = getattr(m, name)
            if p.dtype in half and old.dtype not in half:
                p.data = old.to(device=p.device, dtype=torch.float32)
        if self._ssm_model is not None:
            self._tie_ssm_model()
        return self

    def _vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Drop the padded vocabulary rows (a no-op at the paper sizes: 32000 is a multiple of 8)."""
        return logits if self.cfg.padded_vocab_size == self.cfg.vocab_size else logits[..., : self.cfg.vocab_size]

    # ---- the causal-LM interface -----------------------------------------------------------------------------

    def _run_ref(self, input_ids: torch.Tensor, cache: MambaCache | None) -> torch.Tensor:
        emb = self.backbone.embedding(input_ids)
        res = emb.to(_acc_dtype(emb.dtype))  # residual stream in fp32 (residual_in_fp32)
        for i, blk in enumerate(self.backbone.layers):
            state = None if cache is None else (cache.conv[i], cache.ssm[i])
            res = res + blk.mixer(blk.norm(res), state).to(res.dtype)
        return res

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        if self.impl == "mamba_ssm":
            return self._vocab(self.ssm_model(input_ids, num_last_tokens=logits_to_keep).logits)
        res = self._run_ref(input_ids, None)
        if logits_to_keep:
            res = res[:, -logits_to_keep:]
        return self._vocab(self.lm_head(self.backbone.norm_f(res)))

    def allocate_cache(self, batch_size: int, max_seqlen: int) -> MambaCache:
        """Static state; its size does not depend on `max_seqlen` (kept for the shared interface)."""
        if self.impl == "mamba_ssm":
            states = self.ssm_model.allocate_inference_cache(batch_size, max_seqlen)
            params = _mamba_ssm().InferenceParams(
                max_seqlen=max_seqlen, max_batch_size=batch_size, key_value_memory_dict=states
            )
            n = len(states)
            return MambaCache([states[i][0] for i in range(n)], [states[i][1] for i in range(n)], params)
        w = self.lm_head.weight
        m = self.backbone.layers[0].mixer
        conv = [w.new_zeros(batch_size, m.d_inner, m.d_conv) for _ in self.backbone.layers]
        ssm = [w.new_zeros(batch_size, m.d_inner, m.d_state, dtype=_acc_dtype(w.dtype)) for _ in conv]
        return MambaCache(conv, ssm)

    def _params(self, cache: MambaCache) -> Any:
        """mamba-ssm's InferenceParams over the cache's tensors (a cache allocated under torch_ref gets one here)."""
        if cache.params is None:
            batch = cache.conv[0].shape[0]
            states = {i: (c, s) for i, (c, s) in enumerate(zip(cache.conv, cache.ssm, strict=True))}
            cache.params = _mamba_ssm().InferenceParams(
                max_seqlen=0, max_batch_size=batch, key_value_memory_dict=states
            )
        return cache.params

    def prefill(self, input_ids: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        if self.impl == "mamba_ssm":
            params = self._params(cache)
            params.seqlen_offset = 0  # 0: mamba-ssm's full-sequence path, which also writes conv/ssm states
            logits = self.ssm_model(input_ids, inference_params=params, num_last_tokens=1).logits[:, -1]
            params.seqlen_offset = input_ids.shape[1]
            return self._vocab(logits)
        res = self._run_ref(input_ids, cache)
        return self._vocab(self.lm_head(self.backbone.norm_f(res[:, -1])))

    def decode_step(self, input_ids: torch.Tensor, cache: MambaCache) -> torch.Tensor:
        """(B, 1) -> (B, V); updates the cache in place; CUDA-graph capturable in both impls.

        mamba_ssm: mamba-ssm's Mamba1 layer reads `InferenceParams.seqlen_offset` only as a switch (> 0: step mode
        on the cached conv/ssm states, which carry the whole history); the value itself enters no kernel. Its own
        `capture_graph` (utils/generation.py) therefore sets seqlen_offset to a fixed positive number for the
        capture, and replays never touch it. We do the same: the host int is set to >= 1 before the call (so step
        mode is what gets captured) and counted up afterwards; under a graph that Python runs at capture only and a
        replay reads nothing from it. (`lengths_per_sample`, which mamba-ssm refreshes per replay, is read only by
        attention layers, which a pure Mamba1 model has none of.)"""
        if self.impl == "mamba_ssm":
            params = self._params(cache)
            params.seqlen_offset = max(params.seqlen_offset, 1)
            logits = self.ssm_model(input_ids, inference_params=params, num_last_tokens=1).logits[:, -1]
            params.seqlen_offset += 1
            return self._vocab(logits)
        emb = self.backbone.embedding(input_ids)
        res = emb.to(_acc_dtype(emb.dtype))
        for i, blk in enumerate(self.backbone.layers):
            res = res + blk.mixer.step(blk.norm(res), cache.conv[i], cache.ssm[i]).to(res.dtype)
        return self._vocab(self.lm_head(self.backbone.norm_f(res[:, 0])))


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
