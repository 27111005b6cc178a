"""The outer-loop optimizer of the matched training runs: AdamW parameter groups and the learning-rate schedules.

The paper's recipe (the official JAX runs), scaled down: AdamW with betas (0.9, 0.95) and weight decay 0.1, a
linear warm-up over the first 10% of the steps, then a cosine decay to 1e-5; TTT-MLP's inner `ttt_base_lr` rises
linearly from 0.01 to 0.1 over the same warm-up.

Weight decay follows the common convention (GPT-2/nanoGPT, Hugging Face's Trainer): matrices decay, that is the
weights of linear layers, convolutions and the (tied) embedding, TTT's initial inner weights W0/W1/W2 and its
inner-lr projection; biases, norm scales, TTT's inner LayerNorm (ln_weight/ln_bias) and per-position bias, and
Mamba's A_log and D (which mamba-ssm marks `_no_weight_decay`) do not.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters of two or more dims that are not matrices of a linear map: norms, biases, SSM constants.
NO_DECAY_NAMES = frozenset({"ln_weight", "ln_bias", "b0", "b1", "b2", "A_log", "D", "token_idx_bias", "lr_bias"})


def decays(name: str, p: torch.Tensor) -> bool:
    """Whether weight decay applies to the parameter `name` (a dotted name from `named_parameters`)."""
    leaf = name.rsplit(".", 1)[-1]
    if p.ndim < 2 or leaf in NO_DECAY_NAMES or getattr(p, "_no_weight_decay", False):
        return False
    return not ("norm" in name and leaf == "weight")


def param_groups(net: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, decayed and not; tied parameters appear once (named_parameters removes duplicates)."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(
    net: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool = False
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(net, weight_decay), lr=lr, betas=betas, fused=fused or None)


def warmup_steps(total_steps: int, warmup_frac: float) -> int:
    """round(warmup_frac * total_steps), at least one step (a schedule with no warm-up starts at the peak)."""
    return max(1, round(warmup_frac * total_steps)) if warmup_frac > 0 else 0


def lr_at(step: int, total_steps: int, peak: float, min_lr: float, warmup: int) -> float:
    """The learning rate of optimizer step `step` (0-based): (step + 1) / warmup * peak during the warm-up (the
    first step is not wasted at lr 0), then a cosine from `peak` at the end of the warm-up to `min_lr` at
    `total_steps`, and `min_lr` beyond."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total_steps:
        return min_lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * progress))


def ramp(step: int, warmup: int, start: float, end: float) -> float:
    """Linear from `start` at step 0 to `end` at step `warmup`, then `end` (TTT-MLP's ttt_base_lr warm-up)."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup
