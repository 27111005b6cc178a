"""TTTConfig: the shape of a TTT language model, built from `conf/size/*.yaml` + `conf/model/ttt_*.yaml`.

Kept apart from `ttt.model` so `ttt.layer` can import it without a cycle; `ttt.model` re-exports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ttt.errors import UserError

BACKBONES = ("mamba", "transformer")
LAYER_TYPES = ("linear", "mlp")


@dataclass
class TTTConfig:
    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5504
    num_layers: int = 24
    num_heads: int = 32
    ttt_layer_type: str = "linear"
    backbone: str = "mamba"
    mini_batch_size: int = 16
    ttt_base_lr: float = 1.0
    rope_theta: float = 10000.0
    conv_kernel: int = 4
    # The three Mamba-backbone switches; `backbone` sets them (all on for mamba, all off for transformer) unless
    # a model config names one explicitly. Official TTTConfig uses the same three names.
    pre_conv: bool = True
    share_qk: bool = True
    use_gate: bool = True
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.ttt_layer_type not in LAYER_TYPES:
            raise UserError(f"ttt_layer_type must be one of {LAYER_TYPES}, got {self.ttt_layer_type!r}")
        if self.hidden_size % self.num_heads:
            raise UserError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise UserError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.mini_batch_size < 1 or self.conv_kernel < 1:
            raise UserError(
                f"mini_batch_size and conv_kernel must be >= 1, got {self.mini_batch_size}, {self.conv_kernel}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_cfgs(cls, size_cfg: Any, model_cfg: Any) -> TTTConfig:
        """size_cfg: conf/size/*.yaml (vocab_size, hidden_size, intermediate_size, num_layers, num_heads);
        model_cfg: conf/model/ttt_*.yaml (ttt_layer_type, backbone, mini_batch_size, ttt_base_lr, ...)."""
        get = model_cfg.get
        backbone = get("backbone", "mamba")
        if backbone not in BACKBONES:
            raise UserError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        mamba = backbone == "mamba"
        return cls(
            vocab_size=int(size_cfg.vocab_size),
            hidden_size=int(size_cfg.hidden_size),
            intermediate_size=int(size_cfg.intermediate_size),
            num_layers=int(size_cfg.num_layers),
            num_heads=int(size_cfg.num_heads),
            ttt_layer_type=str(get("ttt_layer_type", "linear")),
            backbone=backbone,
            mini_batch_size=int(get("mini_batch_size", 16)),
            ttt_base_lr=float(get("ttt_base_lr", 1.0)),
            rope_theta=float(get("rope_theta", 10000.0)),
            conv_kernel=int(get("conv_kernel", 4)),
            pre_conv=bool(get("pre_conv", mamba)),
            share_qk=bool(get("share_qk", mamba)),
            use_gate=bool(get("use_gate", mamba)),
        )
