"""The TTT language model: blocks of [pre_conv] -> TTT layer -> SwiGLU, tied embeddings, and the causal-LM
interface of docs/interfaces.md (forward, allocate_cache, prefill, decode_step, generate)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttt.config import TTTConfig
from ttt.errors import UserError
from ttt.fused.cache import DerivedParams
from ttt.generation import GenerationMixin
from ttt.layer import LayerCache, PreConv, RMSNorm, make_ttt_layer, row_stats_on

__all__ = ["TTTCache", "TTTConfig", "TTTForCausalLM", "build"]

BASE_IMPLS = ("naive", "dual", "dual_compiled")


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self._derived = DerivedParams()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def fused_add(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out + self(x), added into `out` (contiguous, the caller's) in place: gate and up as one GEMM over a cached
        concatenated weight, one SiLU * up kernel, and down_proj with the residual add on the GEMM (beta = 1)."""
        from ttt.fused.mlp import silu_mul

        parts = [self.gate_proj.weight, self.up_proj.weight]
        w = self._derived.get("gate_up", parts, lambda: torch.cat(parts, dim=0))
        a = silu_mul(F.linear(x, w))
        out.view(-1, out.shape[-1]).addmm_(a.view(-1, a.shape[-1]), self.down_proj.weight.t())
        return out

    def fused_add_step(
        self, x: torch.Tensor, out: torch.Tensor, rms: tuple[Any, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """`fused_add` for a decode step: the skinny kernels (`ttt.fused.skinny`), SiLU * up in the gate|up GEMM's
        epilogue and the residual in the down GEMM's; cuBLAS + `silu_mul` where they do not apply. `rms`
        (skinny.FoldedRMSNorm, the norm's weight): x is the un-normalised stream (it may be `out` itself), the
        RMSNorm is applied by the gate|up GEMM, its weight folded into a derived copy of [W_gate; W_up]. With
        TTT_FFN_STEP=1 both GEMMs run as one launch where `ttt.fused.ffn_step` applies (A/B runs)."""
        from ttt.fused import ffn_step, skinny

        parts = [self.gate_proj.weight, self.up_proj.weight]
        if rms is None:
            w = self._derived.get("gate_up", parts, lambda: torch.cat(parts, dim=0))
        else:
            nw = rms[1]
            w = self._derived.get("gate_up_rms", [*parts, nw], lambda: skinny.fold_rms_weight(torch.cat(parts), nw))
        wd = self.down_proj.weight
        if ffn_step.applies(x, w, wd) and out.is_contiguous():
            ffn_step.ffn_step(
                x.reshape(-1, x.shape[-1]), w, wd, out.view(-1, out.shape[-1]), rms=rms[0] if rms else None
            )
            return out
        a = skinny.linear_silu(x, w, rms=rms[0] if rms else None, static_weights=not self._derived.rebuilt)
        return skinny.linear(a, wd, out, static_weights=True)


class Block(nn.Module):
    """[x + conv(RMSNorm(x))] (Mamba backbone), then x + TTT(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, cfg: TTTConfig) -> None:
        super().__init__()
        self.pre_conv = PreConv(cfg) if cfg.pre_conv else None
        self.seq_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.ttt = make_ttt_layer(cfg)
        self.ffn_norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor, impl: str, cache: LayerCache | None = None) -> torch.Tensor:
        if self.ttt.fusable(x, impl):
            return self._forward_fused(x, cache)
        if self.pre_conv is not None:
            x = x + self.pre_conv(x, cache.pre_conv if cache is not None else None)
        x = x + self.ttt(self.seq_norm(x), impl=impl, cache=cache)
        return x + self.mlp(self.ffn_norm(x))

    def step(self, x: torch.Tensor, cache: LayerCache, pos: torch.Tensor, impl: str) -> torch.Tensor:
        if self.ttt.fusable(x, impl):
            return self._step_fused(x, cache, pos, impl)
        if self.pre_conv is not None:
            assert cache.pre_conv is not None
            x = x + self.pre_conv.step(x, cache.pre_conv)
        x = x + self.ttt.step(self.seq_norm(x), cache, pos, impl)
        return x + self.mlp(self.ffn_norm(x))

    # The fused path (impl "triton" at inference): the same block in 10 launches around the op (bench/notes/
    # ttt_linear_fused.md counts them). Every residual-stream tensor it adds into in place is one it made itself
    # (x1 from the pre-conv kernel, x2 from add_rmsnorm); x is never written.
    def _forward_fused(self, x: torch.Tensor, cache: LayerCache | None) -> torch.Tensor:
        from ttt.fused import norm

        if self.pre_conv is not None:
            pc = self.pre_conv
            x1, h = norm.preconv_rmsnorm(
                x, pc.norm.weight, pc.norm.eps, pc.conv.weight, pc.conv.bias, self.seq_norm.weight,
                self.seq_norm.eps, state=cache.pre_conv if cache is not None else None,
            )  # fmt: skip
            x2 = self.ttt.fused_forward(h, cache, out=x1)
            h2 = norm.rmsnorm(x2, self.ffn_norm.weight, self.ffn_norm.eps)
        else:
            h = norm.rmsnorm(x, self.seq_norm.weight, self.seq_norm.eps)
            x2, h2 = norm.add_rmsnorm(x, self.ttt.fused_forward(h, cache), self.ffn_norm.weight, self.ffn_norm.eps)
        return self.mlp.fused_add(h2, out=x2)

    def _step_fused(self, x: torch.Tensor, cache: LayerCache, pos: torch.Tensor, impl: str) -> torch.Tensor:
        from ttt.fused import norm, skinny
        from ttt.ops.pdl import pdl_on

        pdl = pdl_on(x)

        if self.pre_conv is not None:
            pc = self.pre_conv
            assert cache.pre_conv is not None
            x1, h = norm.preconv_rmsnorm_step(
                x, cache.pre_conv, pc.norm.weight, pc.norm.eps, pc.conv.weight, pc.conv.bias, self.seq_norm.weight,
                self.seq_norm.eps,
            )  # fmt: skip
            # o_proj writes x2's row sums of squares, so the gate|up GEMM applies the ffn RMSNorm as it loads x2
            ss = None
            if skinny.usable(x1, self.ttt.o_proj.weight) and row_stats_on():
                n, k = self.ttt.o_proj.weight.shape
                ss = torch.empty(x1.numel() // n, skinny.sumsq_groups(n, k), dtype=torch.float32, device=x1.device)
            x2 = self.ttt.fused_step(h, cache, pos, impl, out=x1, sumsq=ss)
            if ss is not None:
                ffn = skinny.FoldedRMSNorm(ss, self.ffn_norm.eps)
                return self.mlp.fused_add_step(x2, out=x2, rms=(ffn, self.ffn_norm.weight))
            return self.mlp.fused_add_step(norm.rmsnorm(x2, self.ffn_norm.weight, self.ffn_norm.eps, pdl), out=x2)
        h = norm.rmsnorm(x, self.seq_norm.weight, self.seq_norm.eps, pdl)
        o = self.ttt.fused_step(h, cache, pos, impl)
        x2, h2 = norm.add_rmsnorm(x, o, self.ffn_norm.weight, self.ffn_norm.eps, pdl)
        return self.mlp.fused_add_step(h2, out=x2)


@dataclass
class TTTCache:
    """Static decode cache. `seqlen` (0-dim int64) counts tokens consumed, shared by all layers (RoPE position =
    seqlen % mini_batch_size); each layer's TTT state keeps its own `offset`, which its step advances in place."""

    seqlen: torch.Tensor
    layers: list[LayerCache]
    max_seqlen: int


class TTTForCausalLM(GenerationMixin, nn.Module):
    def __init__(self, cfg: TTTConfig, impl: str = "dual") -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.embed.weight  # tied, as every official TTT config
        nn.init.normal_(self.embed.weight, std=cfg.initializer_range)
        for blk in self.layers:
            for lin in (blk.mlp.gate_proj, blk.mlp.up_proj, blk.mlp.down_proj):
                nn.init.normal_(lin.weight, std=cfg.initializer_range)
        self.impl = impl

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, name: str) -> None:
        known = self.known_impls()
        if name not in known:
            raise UserError(f"unknown TTT impl {name!r}; known: {', '.join(known)}")
        self._impl = name

    @property
    def decode_impl(self) -> str:
        """What `decode_step` runs: the op's fused step of the same name where one exists, else the PyTorch step."""
        ops = self.layers[0].ttt._ops()[0] if len(self.layers) else None
        return f"{self.impl}_step" if self.impl in getattr(ops, "STEP_IMPLS", {}) else "torch_step"

    def known_impls(self) -> list[str]:
        """naive, dual, dual_compiled, and any backend the op package registered since (e.g. a Triton prefill)."""
        ops = self.layers[0].ttt._ops()[0] if len(self.layers) else None
        extra = [n for n in getattr(ops, "IMPLS", {}) if n not in BASE_IMPLS]
        return [*BASE_IMPLS, *extra]

    # -- full sequence ----------------------------------------------------------------------------------------
    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h))

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        """(B, T) -> logits (B, T, V), or the last `logits_to_keep` positions when > 0."""
        h = self.embed(input_ids)
        for blk in self.layers:
            h = blk(h, self.impl)
        if logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        return self._head(h)

    # -- decode -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def allocate_cache(self, batch_size: int, max_seqlen: int) -> TTTCache:
        """Preallocated state for `batch_size` sequences. The TTT state is O(1) in length; `max_seqlen` is kept
        only for the interface. TTT states are float32 (float64 for a float64 model); conv windows follow the model."""
        cfg, p = self.config, self.embed.weight
        conv = lambda: torch.zeros(batch_size, cfg.hidden_size, cfg.conv_kernel, dtype=p.dtype, device=p.device)  # noqa: E731
        layers = [
            LayerCache(
                state=blk.ttt.init_state(batch_size),
                pre_conv=conv() if cfg.pre_conv else None,
                qk_conv=conv() if cfg.share_qk else None,
            )
            for blk in self.layers
        ]
        return TTTCache(seqlen=torch.zeros((), dtype=torch.long, device=p.device), layers=layers, max_seqlen=max_seqlen)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, cache: TTTCache) -> torch.Tensor:
        """Runs the prompt from position 0 with `self.impl`, overwrites the cache, returns the last logits (B, V).
        Any prompt length: a ragged tail stays in the TTT state's accumulators."""
        B, T = input_ids.shape
        if T < 1:
            raise UserError("prefill needs a prompt of at least one token")
        self._check_cache(cache, B)
        h = self.embed(input_ids)
        for blk, lc in zip(self.layers, cache.layers):
            h = blk(h, self.impl, cache=lc)
        cache.seqlen.fill_(T)
        return self._head(h[:, -1])

    @torch.no_grad()
    def decode_step(self, input_ids: torch.Tensor, cache: TTTCache) -> torch.Tensor:
        """(B, 1) -> (B, V). Updates the cache in place; no host syncs, so it can be captured in a CUDA graph."""
        fused = self.layers[0].ttt.fusable(self.embed.weight, self.impl) and os.environ.get("TTT_DECODE_HEAD") != "0"
        # On the fused path the embedding is a plain gather and the final norm one kernel (`ttt.fused.norm`): the
        # same values as nn.Embedding (index_select: 12 us a step on the H200 for 16 rows) and the RMSNorm
        # module (six elementwise and reduce launches). TTT_DECODE_HEAD=0 keeps the modules (A/B runs).
        h = self.embed.weight[input_ids] if fused else self.embed(input_ids)
        pos = torch.remainder(cache.seqlen, self.config.mini_batch_size).reshape(1)
        for blk, lc in zip(self.layers, cache.layers):
            h = blk.step(h, lc, pos, self.impl)
        cache.seqlen.add_(1)
        if fused:
            from ttt.fused import norm

            return self.lm_head(norm.rmsnorm(h[:, -1], self.norm.weight, self.norm.eps))
        return self._head(h[:, -1])

    def _check_cache(self, cache: TTTCache, batch_size: int) -> None:
        first = cache.layers[0].state
        got = next(t for t in vars(first).values() if isinstance(t, torch.Tensor) and t.dim() > 0).shape[0]
        if got != batch_size or len(cache.layers) != len(self.layers):
            raise UserError(
                f"cache holds batch {got} x {len(cache.layers)} layers, prompt has batch {batch_size} for "
                f"{len(self.layers)} layers; allocate_cache(batch_size={batch_size}, ...) first"
            )


def build(size_cfg: Any, model_cfg: Any, impl: str = "dual") -> TTTForCausalLM:
    """The registry's builder: `conf/size/<size>.yaml`, `conf/model/ttt_*.yaml`, impl name."""
    return TTTForCausalLM(TTTConfig.from_cfgs(size_cfg, model_cfg), impl=impl)
