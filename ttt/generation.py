"""Generation shared by every causal LM in the suite: greedy decoding over a static cache, and the
CUDA-graph runner that replays one captured `decode_step` (mamba-ssm's `generate(cg=True)` method)."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class CausalLM(Protocol):
    impl: str

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor: ...
    def allocate_cache(self, batch_size: int, max_seqlen: int) -> Any: ...
    def prefill(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor: ...
    def decode_step(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor: ...


class GraphedDecode:
    """Captures `model.decode_step(tokens, cache)` once into a CUDA graph; `__call__` copies the next tokens
    into the static input and replays it. Capture (and its warm-up) is the caller's untimed set-up."""

    def __init__(self, model: CausalLM, cache: Any, batch_size: int, warmup: int = 2) -> None:
        device = next(model.parameters()).device  # type: ignore[attr-defined]
        self.tokens = torch.zeros(batch_size, 1, dtype=torch.long, device=device)
        self.model, self.cache = model, cache
        # Warm-up runs on a side stream so lazy allocations and autotuning happen before capture; they advance
        # the cache, so callers that care about positions snapshot/restore it around construction.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                model.decode_step(self.tokens, cache)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.decode_step(self.tokens, cache)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


class GenerationMixin:
    """Greedy `generate` for any model with `allocate_cache`, `prefill` and `decode_step`."""

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, cg: bool = False) -> torch.Tensor:
        batch, prompt_len = input_ids.shape
        if max_new_tokens <= 0:
            return input_ids
        cache = self.allocate_cache(batch, prompt_len + max_new_tokens + (2 if cg else 0))  # type: ignore[attr-defined]
        logits = self.prefill(input_ids, cache)  # type: ignore[attr-defined]
        out = [input_ids, logits.argmax(-1, keepdim=True)]
        if cg and input_ids.is_cuda:
            snapshot = snapshot_cache(cache)
            step = GraphedDecode(self, cache, batch)  # type: ignore[arg-type]
            restore_cache(cache, snapshot)
        else:
            step = lambda tok: self.decode_step(tok, cache)  # type: ignore[attr-defined]  # noqa: E731
        for _ in range(max_new_tokens - 1):
            out.append(step(out[-1]).argmax(-1, keepdim=True))
        return torch.cat(out, dim=1)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor reachable in a cache object (dataclasses, lists, dicts, objects with __dict__)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "__dict__"):
        return [t for v in vars(obj).values() for t in _tensors(v)]
    return []


def snapshot_cache(cache: Any) -> list[torch.Tensor]:
    """Copies of every cache tensor, to undo the warm-up steps a graph capture takes."""
    return [t.clone() for t in _tensors(cache)]


def restore_cache(cache: Any, snapshot: list[torch.Tensor]) -> None:
    for t, s in zip(_tensors(cache), snapshot, strict=True):
        t.copy_(s)
