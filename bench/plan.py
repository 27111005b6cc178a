"""What a run measures: the composed config, checked and resolved for this machine, as a list of points.

Every bad request is a `UserError` with one line naming the value, raised before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from bench import registry, results
from bench.latency import CHECK_TOL, Timing
from ttt.errors import UserError

DTYPES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float64": torch.float64,
}
DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
MODES = ("prefill", "decode", "both", "op")
# Keys that, given on the command line, win over the CPU defaults (`hardware.cpu_default`).
CPU_DEFAULT_KEYS = ("size", "batch", "dtype", "ctx")


@dataclass
class Plan:
    device: torch.device
    models: list[str]
    ctxs: list[int]
    modes: list[str]
    size: str
    batch: int
    dtype: str
    impl: str | None
    results: Path
    force: bool
    decode_graphs: bool
    timing: Timing
    prefill_via: str
    check: bool
    check_batch: int
    check_tokens: int
    check_tol: float
    progress: bool
    time_limit_s: float | None  # no new point starts after this many seconds (a rerun resumes)
    cpu_default: bool  # True: the labelled CPU default filled at least one field
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> its composed config
    impls: dict[str, str] = field(default_factory=dict)  # model -> resolved impl name


def resolve_device(name: str) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("hardware.device=cuda asked for, but this machine has no CUDA GPU")
    return dev


def dtype_name(name: str) -> str:
    name = DTYPE_ALIASES.get(str(name), str(name))
    if name not in DTYPES:
        raise UserError(f"unknown dtype '{name}'; known: {', '.join(DTYPES)} (or bf16, fp16, fp32)")
    return name


def _positive_int(what: str, value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a positive integer, not '{value}'") from None
    if n <= 0 or n != value and str(n) != str(value):
        raise UserError(f"{what} must be a positive integer, not '{value}'")
    return n


def _as_list(value: Any) -> list[Any]:
    if OmegaConf.is_list(value):
        return list(OmegaConf.to_container(value))
    return list(value) if isinstance(value, list | tuple) else [value]


def make_plan(cfg: DictConfig, explicit: set[str]) -> Plan:
    """Resolve `cfg` for this machine; `explicit` holds the keys given on the command line (they always win)."""
    if cfg.bench.name == "ppl":  # conf/bench/ppl.yaml belongs to `python -m bench.ppl`, not the latency harness
        raise UserError("bench=ppl is perplexity evaluation: run `python -m bench.ppl checkpoints=[...]`")
    device = resolve_device(cfg.hardware.get("device", "auto"))
    on_cpu = device.type != "cuda"
    cpu_defaults = cfg.hardware.get("cpu_default") or {}
    filled = {k: cpu_defaults[k] for k in CPU_DEFAULT_KEYS if on_cpu and k in cpu_defaults and k not in explicit}
    size = str(filled.get("size", cfg.size.name))
    registry.size_config(size)  # one line for an unknown size
    batch = _positive_int("batch", filled.get("batch", cfg.batch))
    dtype = dtype_name(filled.get("dtype", cfg.dtype))
    mode = str(cfg.mode)
    if mode not in MODES:
        raise UserError(f"unknown mode '{mode}'; known: {', '.join(MODES)}")

    sweep = cfg.get("sweep")
    if sweep is not None and "model" not in explicit and sweep.get("models"):
        models = [str(m) for m in _as_list(sweep.models)]
    else:
        models = [str(cfg.model.name)]
    if sweep is not None and "ctx" not in explicit and sweep.get("ctxs"):
        use_cpu = on_cpu and "sweep.ctxs" not in explicit and "ctxs" in cpu_defaults
        ctxs = _as_list(cpu_defaults.ctxs if use_cpu else sweep.ctxs)
        filled["ctxs"] = ctxs if use_cpu else None
    else:
        ctxs = [filled.get("ctx", cfg.ctx)]
    ctxs = [_positive_int("ctx", c) for c in ctxs]
    if sweep is not None and "mode" not in explicit and sweep.get("modes"):
        modes = [str(m) for m in _as_list(sweep.modes)]
    else:
        modes = ["prefill", "decode"] if mode == "both" else [mode]

    bench = cfg.bench
    explicit_impl = cfg.get("impl")
    plan = Plan(
        device=device,
        models=models,
        ctxs=ctxs,
        modes=modes,
        size=size,
        batch=batch,
        dtype=dtype,
        impl=explicit_impl,
        results=Path(cfg.results) if cfg.results else results.default_path(bench.name, on_cpu),
        force=bool(cfg.force),
        decode_graphs=bool(cfg.decode_graphs),
        timing=Timing(
            warmup=int(bench.get("warmup", 1)),
            min_repeats=int(bench.get("min_repeats", 3)),
            max_repeats=int(bench.get("max_repeats", 20)),
            budget_s=float(bench.get("budget_s", 2.0)),
            decode_steps=int(bench.get("decode_steps", 16)),
        ),
        prefill_via=str(bench.get("prefill_via", "forward")),
        check=bool(bench.get("check", True)),
        check_batch=int(bench.get("check_batch", 2)),
        check_tokens=int(bench.get("check_tokens", 64)),
        check_tol=float(bench.get("check_tol") or CHECK_TOL[dtype]),
        progress=bool(cfg.get("progress", True)),
        time_limit_s=float(cfg.time_limit_s) if cfg.get("time_limit_s") else None,
        cpu_default=any(v is not None for v in filled.values()),
    )
    if mode == "op":
        return plan
    for model in models:
        # The composed model group carries command-line tweaks (model.backbone=transformer) for that model only.
        mcfg = cfg.model if model == cfg.model.name else registry.model_config(model)
        plan.model_overrides[model] = OmegaConf.to_container(mcfg, resolve=True)
        plan.impls[model] = registry.resolve_impl(mcfg, explicit_impl, device).name
        mbs = mcfg.get("mini_batch_size") if mcfg.get("family") == "ttt" else None
        for ctx in ctxs:
            if mbs and ctx % int(mbs):
                raise UserError(
                    f"ctx={ctx} is not a multiple of {model}'s TTT mini-batch size {mbs}; use a multiple of {mbs}"
                )
    return plan


def describe(plan: Plan) -> str:
    """One line saying what will run (and, on a CPU, that these are the labelled CPU defaults)."""
    if plan.modes == ["op"]:
        return f"op-level job (bench/op.py, options from conf/bench/op.yaml) on {plan.device} -> {plan.results}"
    label = "CPU default (not a paper measurement): " if plan.cpu_default else ""
    return (
        f"{label}{','.join(plan.models)} size={plan.size} batch={plan.batch} dtype={plan.dtype} "
        f"ctx={','.join(map(str, plan.ctxs))} mode={','.join(plan.modes)} on {plan.device} -> {plan.results}"
    )
