"""One table of models: name x size x implementation -> builder. Matched runs come from here by construction.

`python -m bench.registry` prints every model's parameter count at every paper size next to the nominal size.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ttt.errors import UserError, require, require_cuda

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PAPER_SIZES = ("125m", "350m", "760m", "1.3b")


@dataclass(frozen=True)
class Impl:
    """One implementation of a model family; `package` is the optional module it needs and its extra."""

    name: str
    gpu_only: bool = False
    package: str | None = None
    extra: str | None = None
    reference: str | None = None  # the plain implementation its first output is checked against


@dataclass(frozen=True)
class Family:
    builder: str  # "module:function" taking (size_cfg, model_cfg, impl) and returning an nn.Module
    impls: dict[str, Impl] = field(default_factory=dict)
    default_gpu: str = ""
    default_cpu: str = ""


def _impls(*impls: Impl) -> dict[str, Impl]:
    return {i.name: i for i in impls}


FAMILIES: dict[str, Family] = {
    "ttt": Family(
        builder="ttt.model:build",
        impls=_impls(
            Impl("naive"),
            Impl("dual", reference="naive"),
            Impl("dual_compiled", gpu_only=True, reference="naive"),
            Impl("triton", gpu_only=True, package="triton", extra="triton", reference="naive"),
        ),
        default_gpu="dual",
        default_cpu="dual",
    ),
    "transformer": Family(
        builder="baselines.transformer:build",
        impls=_impls(
            Impl("sdpa_math"),
            Impl("sdpa_flash", gpu_only=True, reference="sdpa_math"),
            Impl("sdpa_cudnn", gpu_only=True, reference="sdpa_math"),
            Impl("flash_attn", gpu_only=True, package="flash_attn", extra="gpu", reference="sdpa_math"),
        ),
        default_gpu="flash_attn",
        default_cpu="sdpa_math",
    ),
    "mamba": Family(
        builder="baselines.mamba:build",
        impls=_impls(
            Impl("torch_ref"),
            Impl("mamba_ssm", gpu_only=True, package="mamba_ssm", extra="gpu", reference="torch_ref"),
        ),
        default_gpu="mamba_ssm",
        default_cpu="torch_ref",
    ),
}


def known_models() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def known_sizes() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "size").glob("*.yaml"))


def model_config(model: str) -> DictConfig:
    path = CONF_DIR / "model" / f"{model}.yaml"
    if not path.is_file():
        raise UserError(f"unknown model '{model}'; known models: {', '.join(known_models())}")
    return OmegaConf.load(path)


def size_config(size: str | DictConfig | dict) -> DictConfig:
    """A named size (`conf/size/<size>.yaml`), or a size given whole (e.g. the one a checkpoint recorded)."""
    if isinstance(size, DictConfig | dict):
        return OmegaConf.create(size) if isinstance(size, dict) else size
    path = CONF_DIR / "size" / f"{size}.yaml"
    if not path.is_file():
        raise UserError(f"unknown size '{size}'; known sizes: {', '.join(known_sizes())}")
    return OmegaConf.load(path)


def family_of(model_cfg: DictConfig) -> Family:
    fam = model_cfg.family
    if fam not in FAMILIES:
        raise UserError(f"model '{model_cfg.name}' names unknown family '{fam}'; known: {', '.join(FAMILIES)}")
    return FAMILIES[fam]


def resolve_impl(model_cfg: DictConfig, impl: str | None, device: torch.device | str) -> Impl:
    """The implementation to build: the named one (checked against this machine) or the device's default."""
    fam = family_of(model_cfg)
    on_gpu = torch.device(device).type == "cuda"
    # A model may name its own GPU default (e.g. the fastest kernel its op has); else the family's.
    gpu_default = model_cfg.get("default_gpu_impl") or fam.default_gpu
    name = impl or (gpu_default if on_gpu else fam.default_cpu)
    if name not in fam.impls:
        raise UserError(f"unknown impl '{name}' for model '{model_cfg.name}'; known: {', '.join(fam.impls)}")
    spec = fam.impls[name]
    if spec.gpu_only:
        require_cuda(f"impl '{name}' of model '{model_cfg.name}'")
        if not on_gpu:
            raise UserError(f"impl '{name}' of model '{model_cfg.name}' runs only on a CUDA device, not '{device}'")
    if spec.package:
        require(spec.package, spec.extra or "gpu", what=f"impl '{name}' of model '{model_cfg.name}'")
    return spec


def _builder(fam: Family) -> Callable[..., torch.nn.Module]:
    mod, fn = fam.builder.split(":")
    return getattr(importlib.import_module(mod), fn)


def build(
    model: str,
    size: str | DictConfig | dict,
    impl: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    overrides: dict | None = None,
) -> torch.nn.Module:
    """Build `model` at `size` (a name in conf/size, or a whole size config) with implementation `impl` (None: the
    device's default) on `device`.

    The returned module exposes the causal-LM interface every benchmark uses: `forward(input_ids,
    logits_to_keep)`, `allocate_cache`, `prefill`, `decode_step`, `generate`, and a settable `impl`.
    """
    model_cfg = model_config(model)
    if overrides:
        model_cfg = OmegaConf.merge(model_cfg, overrides)
    size_cfg = size_config(size)
    spec = resolve_impl(model_cfg, impl, device)
    with torch.device(device):
        net = _builder(family_of(model_cfg))(size_cfg, model_cfg, spec.name)
    return net.to(dtype=dtype).eval()


def reference_impl(model: str, impl: str) -> str | None:
    """The plain implementation that `impl` is checked against before it is timed (None: it is the reference)."""
    return family_of(model_config(model)).impls[impl].reference


def count_params(net: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings count once)."""
    return sum(p.numel() for p in {id(p): p for p in net.parameters()}.values())


def param_table(sizes: tuple[str, ...] = PAPER_SIZES) -> list[dict]:
    """Parameter count of every model at every size, built on the meta device (no memory, no time)."""
    rows = []
    for size in sizes:
        nominal = size_config(size).nominal_params
        for model in known_models():
            net = build(model, size, device="meta")
            n = count_params(net)
            rows.append(
                {
                    "model": model,
                    "size": size,
                    "n_params": n,
                    "nominal": nominal,
                    "ratio": n / nominal if nominal else None,
                }
            )
    return rows


def main() -> None:
    import pandas as pd

    df = pd.DataFrame(param_table())
    df["n_params"] = (df["n_params"] / 1e6).map("{:,.1f}M".format)
    df["nominal"] = (df["nominal"] / 1e6).map("{:,.0f}M".format)
    df["ratio"] = df["ratio"].map("{:.3f}".format)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
