"""Tiny TTT models for the CPU tests (float64, so implementations can be compared tightly)."""

from __future__ import annotations

import torch

from ttt.model import TTTConfig, TTTForCausalLM

MBS = 4  # a small mini-batch, so short sequences cross several mini-batch boundaries


def tiny_config(layer_type: str = "linear", backbone: str = "mamba", **kw) -> TTTConfig:
    mamba = backbone == "mamba"
    base = dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=2,
        ttt_layer_type=layer_type,
        backbone=backbone,
        mini_batch_size=MBS,
        ttt_base_lr=1.0,
        pre_conv=mamba,
        share_qk=mamba,
        use_gate=mamba,
    )
    base.update(kw)
    return TTTConfig(**base)


def tiny_model(layer_type: str = "linear", backbone: str = "mamba", seed: int = 0, **kw) -> TTTForCausalLM:
    """A float64 model whose parameters are perturbed away from the init (zero biases, unit LN weights, zero
    token_idx bias would hide wiring mistakes)."""
    torch.manual_seed(seed)
    model = TTTForCausalLM(tiny_config(layer_type, backbone, **kw)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if name.endswith(("W0", "W1", "W2")) else 0.1
            p.add_(torch.randn_like(p) * scale)
    return model


def ids(batch: int, length: int, vocab: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g)
