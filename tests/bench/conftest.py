"""A tiny causal LM with the interface of docs/interfaces.md, and helpers to run bench.run in-process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import nn

from bench import registry
from ttt.generation import GenerationMixin

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
REFERENCE_IMPLS = ("naive", "sdpa_math", "torch_ref")
# Timing settings that make every point a few milliseconds.
FAST = ["bench.warmup=0", "bench.min_repeats=2", "bench.max_repeats=2", "bench.budget_s=0", "bench.decode_steps=2"]


@dataclass
class FakeCache:
    total: torch.Tensor  # running sum of embeddings (B, D)
    pos: torch.Tensor  # tokens seen (0-dim)


class FakeLM(GenerationMixin, nn.Module):
    """Logits of the running mean embedding: prefill then decode equals one forward, as the interface asks."""

    def __init__(self, impl: str, vocab: int = 64, hidden: int = 8, mismatch: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, hidden)
        self.head = nn.Linear(hidden, vocab)
        self.impl = impl
        self.mismatch = mismatch  # added to the logits of every non-reference impl: a wrong fast path

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        out = self.head(h)
        return out if self.impl in REFERENCE_IMPLS else out + self.mismatch

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        e = self.emb(input_ids)
        n = torch.arange(1, e.shape[1] + 1, device=e.device).view(1, -1, 1)
        h = e.cumsum(1) / n
        return self._logits(h[:, -logits_to_keep:] if logits_to_keep else h)

    def allocate_cache(self, batch_size: int, max_seqlen: int) -> FakeCache:
        return FakeCache(torch.zeros(batch_size, self.emb.embedding_dim), torch.zeros((), dtype=torch.long))

    def prefill(self, input_ids: torch.Tensor, cache: FakeCache) -> torch.Tensor:
        cache.total.copy_(self.emb(input_ids).sum(1))
        cache.pos.fill_(input_ids.shape[1])
        return self._logits(cache.total / cache.pos)

    def decode_step(self, input_ids: torch.Tensor, cache: FakeCache) -> torch.Tensor:
        cache.total.add_(self.emb(input_ids[:, 0]))
        cache.pos.add_(1)
        return self._logits(cache.total / cache.pos)


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> dict:
    """registry.build returns FakeLMs; the dict's 'mismatch' sets the next builds' fast-path error, 'built' counts."""
    state = {"mismatch": 0.0, "built": []}

    def build(model, size, impl=None, device="cpu", dtype=torch.float32, overrides=None):
        state["built"].append(model)
        return FakeLM(impl, vocab=int(registry.size_config(size).vocab_size), mismatch=state["mismatch"]).to(dtype)

    monkeypatch.setattr(registry, "build", build)
    return state


def load_cfg(overrides: list[str]) -> tuple[DictConfig, set[str]]:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return cfg, {o.split("=", 1)[0].lstrip("+~") for o in overrides}
