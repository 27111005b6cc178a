"""Checkpoints of the matched models: one directory per checkpoint.

    <dir>/model.safetensors   the weights (safetensors; tied embeddings stored once)
    <dir>/meta.json           what the weights are: model name, the whole size config, model-config overrides,
                              tokenizer, corpus, training step and tokens seen, and the training config
    <dir>/train_state.pt      optimizer, scheduler, RNG and data position: only what resuming training needs

`load` rebuilds the model through `bench.registry` from meta.json alone, so a checkpoint needs no config file
beside it. A checkpoint's identity in result rows is `weights_hash` (sha256 of model.safetensors).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from bench import registry
from ttt.errors import UserError

WEIGHTS, META, TRAIN_STATE = "model.safetensors", "meta.json", "train_state.pt"
REQUIRED_META = ("model", "size")


def save(
    path: str | Path, net: torch.nn.Module, meta: dict[str, Any], train_state: dict[str, Any] | None = None
) -> str:
    """Write a checkpoint directory atomically (a crash mid-save leaves the previous one intact); returns its
    weights hash. `meta` must name "model" (conf/model) and "size" (the whole size config as a dict)."""
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"checkpoint meta lacks {', '.join(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_model(net, str(tmp / WEIGHTS))
        digest = _sha256(tmp / WEIGHTS)
        (tmp / META).write_text(json.dumps(dict(meta, weights_sha256=digest), indent=2, sort_keys=True, default=str))
        if train_state is not None:
            torch.save(train_state, tmp / TRAIN_STATE)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return digest


def load_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / META).is_file() or not (path / WEIGHTS).is_file():
        raise UserError(f"no checkpoint at '{path}' (expected {META} and {WEIGHTS} in that directory)")
    meta = json.loads((path / META).read_text())
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise UserError(f"checkpoint '{path}' has a {META} without {', '.join(missing)}")
    return meta


def load(
    path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    impl: str | None = None,
    expect_model: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode with the checkpoint's weights, meta). `expect_model` guards against loading a
    checkpoint of another architecture under a model's name; `impl` None takes the device's default."""
    meta = load_meta(path)
    if expect_model is not None and meta["model"] != expect_model:
        raise UserError(f"checkpoint '{path}' holds model '{meta['model']}', not '{expect_model}'")
    net = registry.build(
        meta["model"], meta["size"], impl, device=device, dtype=torch.float32, overrides=meta.get("model_overrides")
    )
    missing, unexpected = load_model(net, str(Path(path) / WEIGHTS), strict=False, device=str(device))
    if missing or unexpected:
        raise UserError(
            f"checkpoint '{path}' does not fit model '{meta['model']}': "
            f"missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
        )
    return net.to(dtype=dtype).eval(), meta


def load_train_state(path: str | Path) -> dict[str, Any] | None:
    """The optimizer/scheduler/RNG/data state saved beside the weights, or None (an export without it)."""
    f = Path(path) / TRAIN_STATE
    return torch.load(f, map_location="cpu", weights_only=False) if f.is_file() else None


def weights_hash(path: str | Path, n: int = 16) -> str:
    """The checkpoint's identity in result rows: the first `n` hex digits of sha256(model.safetensors)."""
    meta = load_meta(path)
    return str(meta.get("weights_sha256") or _sha256(Path(path) / WEIGHTS))[:n]


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
