"""Llama-style "Transformer++" (RoPE, SwiGLU, RMSNorm, no biases, tied embeddings) at the TTT widths and depths.

Self-contained plain PyTorch (it shares no layers with `ttt/`, so a change there cannot move this baseline).
Parameter names follow HF's Llama (`embed_tokens`, `layers.{i}.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`,
`input_layernorm`, `post_attention_layernorm`, `norm`); RoPE is Llama's rotate-half form.

The attention backend is a field, `impl`, switchable on a built model (the weights stay):
- `sdpa_math`: torch SDPA's math backend (CPU; the reference every other backend is checked against),
- `sdpa_flash`, `sdpa_cudnn`: torch SDPA forced to exactly that backend (it raises rather than fall back),
- `flash_attn`: the flash-attn package (`flash_attn_func` for prefill, `flash_attn_with_kvcache` for decode).

Decode runs over a static, preallocated KV cache so one step can be captured in a CUDA graph: the position is a
device tensor (`cache.seqlen`), new k/v are written with index ops, and nothing reads a value back to the host.
SDPA's flash and cuDNN kernels take no mask, and over a static cache the unfilled tail must be masked, so the
`sdpa_flash`/`sdpa_cudnn` models decode with SDPA's memory-efficient kernel (forced, not a fallback);
`model.decode_impl` names what decode runs, and it goes into every decode row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ttt.errors import UserError, require
from ttt.generation import GenerationMixin

SDPA_BACKENDS = {
    "sdpa_math": SDPBackend.MATH,
    "sdpa_flash": SDPBackend.FLASH_ATTENTION,
    "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION,
}
IMPLS = (*SDPA_BACKENDS, "flash_attn")
# The memory-efficient kernel reads an attention mask with its last dim padded to a multiple of 16; a static cache of
# that physical length avoids a per-step pad (the extra slots are masked out like any unfilled slot).
_CACHE_ALIGN = 16


def _flash_attn() -> Any:
    """flash-attn, imported only when its impl runs (the module must import on a CPU machine without it)."""
    return require("flash_attn", "gpu", what="impl 'flash_attn' of model 'transformer'")


def decode_backend(impl: str) -> SDPBackend:
    """The SDPA kernel that a `sdpa_*` model decodes with (see the module docstring)."""
    return SDPBackend.MATH if impl == "sdpa_math" else SDPBackend.EFFICIENT_ATTENTION


@dataclass
class TransformerConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class KVCache:
    """Per layer k, v of shape (B, S, H, d) (flash-attn's layout), S = max_seqlen rounded up to 16; `seqlen` is the
    number of filled positions, a 0-dim long tensor on the device so a captured decode step reads it there."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    seqlen: torch.Tensor
    max_seqlen: int

    @property
    def pos(self) -> torch.Tensor:  # the older name
        return self.seqlen


class RMSNorm(nn.Module):
    """Llama's RMSNorm: normalized in float32, cast back, then scaled."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_cos_sin(pos: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """pos (T,) integer tensor -> cos, sin (T, head_dim) in float32 (bf16 angles lose precision at long context)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float32) / head_dim)
    ang = pos.to(torch.float32)[:, None] * inv_freq
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, d); cos/sin (T, d). Rotate-half RoPE (Llama), computed in float32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.num_heads * cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, width, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, width, bias=False)
        self.o_proj = nn.Linear(width, cfg.hidden_size, bias=False)

    def _qkv(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, hidden), pos (T,) -> q, k, v (B, T, H, d) with RoPE on q and k."""
        B, T, _ = x.shape
        shape = (B, T, self.cfg.num_heads, self.cfg.head_dim)
        q, k, v = (p(x).view(shape) for p in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = rope_cos_sin(pos, self.cfg.head_dim, self.cfg.rope_theta)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x: torch.Tensor, impl: str, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """Causal attention over x from position 0; with `cache`, also writes k, v into its first T slots."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x, torch.arange(T, device=x.device))
        if cache is not None:
            cache.k[layer][:, :T].copy_(k)
            cache.v[layer][:, :T].copy_(v)
        if impl == "flash_attn":
            out = _flash_attn().flash_attn_func(q, k, v, causal=True)
        else:
            with sdpa_kernel([SDPA_BACKENDS[impl]]):
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
                ).transpose(1, 2)
        return self.o_proj(out.reshape(B, T, -1))

    def step(self, x: torch.Tensor, impl: str, cache: KVCache, layer: int) -> torch.Tensor:
        """One token per sequence at position `cache.seqlen`; writes its k, v into the cache in place."""
        B = x.shape[0]
        q, k, v = self._qkv(x, cache.seqlen.view(1))
        k_cache, v_cache = cache.k[layer], cache.v[layer]
        if impl == "flash_attn":
            # flash-attn appends k, v at cache_seqlens inside the kernel and attends over [0, seqlen].
            seqlens = cache.seqlen.to(torch.int32).expand(B).contiguous()
            out = _flash_attn().flash_attn_with_kvcache(
                q, k_cache, v_cache, k=k, v=v, cache_seqlens=seqlens, causal=True
            )
        else:
            k_cache.index_copy_(1, cache.seqlen.view(1), k)
            v_cache.index_copy_(1, cache.seqlen.view(1), v)
            visible = torch.arange(k_cache.shape[1], device=x.device) <= cache.seqlen  # filled slots + this one
            with sdpa_kernel([decode_backend(impl)]):
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2),
                    k_cache.transpose(1, 2),
                    v_cache.transpose(1, 2),
                    attn_mask=visible.view(1, 1, 1, -1),
                ).transpose(1, 2)
        return self.o_proj(out.reshape(B, 1, -1))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, impl: str, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), impl, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))

    def step(self, x: torch.Tensor, impl: str, cache: KVCache, layer: int) -> torch.Tensor:
        x = x + self.self_attn.step(self.input_layernorm(x), impl, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class TransformerLM(GenerationMixin, nn.Module):
    """The causal-LM interface of docs/interfaces.md over a Llama-style decoder."""

    def __init__(self, cfg: TransformerConfig, impl: str = "sdpa_math") -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_heads or cfg.head_dim % 2:
            raise UserError(f"hidden_size {cfg.hidden_size} must split into {cfg.num_heads} heads of even size")
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed_tokens.weight  # tied
        self.impl = impl
        self.reset_parameters()

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, name: str) -> None:
        if name not in IMPLS:
            raise UserError(f"unknown transformer impl {name!r}; known: {', '.join(IMPLS)}")
        self._impl = name

    @property
    def decode_impl(self) -> str:
        """What one decode step runs, for the result rows."""
        if self.impl == "flash_attn":
            return "flash_attn_with_kvcache"
        return f"sdpa_{decode_backend(self.impl).name.lower()}_static_cache"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Llama's init: normal(0, 0.02) for every matrix, ones for the norms. A no-op on the meta device."""
        for name, p in self.named_parameters():
            if p.is_meta:
                continue
            if name.endswith("norm.weight") or "layernorm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=self.cfg.initializer_range)

    def _logits(self, h: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return self.lm_head(self.norm(h))

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        for blk in self.layers:
            h = blk(h, self.impl)
        return self._logits(h, logits_to_keep)

    def allocate_cache(self, batch_size: int, max_seqlen: int) -> KVCache:
        p = self.embed_tokens.weight
        slots = -(-max_seqlen // _CACHE_ALIGN) * _CACHE_ALIGN
        shape = (batch_size, slots, self.cfg.num_heads, self.cfg.head_dim)
        k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.layers]
        v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in self.layers]
        return KVCache(k=k, v=v, seqlen=torch.zeros((), dtype=torch.long, device=p.device), max_seqlen=max_seqlen)

    def prefill(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > cache.max_seqlen:
            raise UserError(f"prompt of {T} tokens does not fit a cache of {cache.max_seqlen} positions")
        h = self.embed_tokens(input_ids)
        for i, blk in enumerate(self.layers):
            h = blk(h, self.impl, cache, i)
        cache.seqlen.fill_(T)
        return self._logits(h, 1)[:, -1]

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """(B, 1) -> (B, V). Graph-capturable: no host reads, so it cannot check for a full cache (the caller's
        `allocate_cache(batch, max_seqlen)` bounds the steps)."""
        h = self.embed_tokens(input_ids)
        for i, blk in enumerate(self.layers):
            h = blk.step(h, self.impl, cache, i)
        cache.seqlen.add_(1)
        return self._logits(h, 1)[:, -1]


def build(size_cfg: Any, model_cfg: Any, impl: str = "sdpa_math") -> TransformerLM:
    """The registry's builder: `conf/size/<size>.yaml`, `conf/model/transformer.yaml`, attention backend."""
    cfg = TransformerConfig(
        vocab_size=int(size_cfg.vocab_size),
        hidden_size=int(size_cfg.hidden_size),
        intermediate_size=int(size_cfg.intermediate_size),
        num_layers=int(size_cfg.num_layers),
        num_heads=int(size_cfg.num_heads),
        rope_theta=float(model_cfg.get("rope_theta", 10000.0)),
    )
    return TransformerLM(cfg, impl=impl)
