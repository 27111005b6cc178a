"""Matched training of the small models for the perplexity figures: one model per run, the same windows in the same
order for every model, the paper's recipe scaled down (bench/optim.py), a resumable checkpoint (bench/checkpoint.py).

    python -m bench.train model=ttt_linear size=small train.ctx=32768 train.tokens=20000000 \\
        out=checkpoints/ttt_linear-small-32k
    python -m bench.train model=mamba train.time_budget_s=540      # stops cleanly; the same command resumes

Data: `bench.data.PackedWindows` over the train split (documents packed with EOS between them, shuffled per
epoch from data.seed); the number of windows consumed is saved, so a resumed run sees exactly the windows it
would have seen. A step is train.batch x train.accum windows of train.ctx tokens; keep batch x accum equal across
models and every model sees the same tokens in the same steps.

Implementation per model family (train.impls, per device): the fastest one with a working backward. TTT:
`dual_compiled` on CUDA (the dual form with each mini-batch under torch.compile; ~2.5x `dual` at 32k on an H100),
with the whole step captured in a CUDA graph (train.cuda_graph=auto; bench/train_graph.py),
`dual` on CPU (PyTorch autograd; the Triton kernels are forward-only). Transformer: `sdpa_flash` on CUDA (the flash-attn wheel
is forward-only), `sdpa_math` on CPU. Mamba: `mamba_ssm` on CUDA with its short conv run by torch instead of
causal-conv1d (whose wheel here has no backward kernels): while training, mamba-ssm's module-level
`causal_conv1d_fn` is set to None, which also turns off its fused `mamba_inner_fn` path, so each layer runs
in_proj -> torch conv1d -> `selective_scan_fn` (CUDA, with backward) -> out_proj; `torch_ref` on CPU.

Outputs: `<out>/` (model.safetensors, meta.json, train_state.pt, train_log.csv with one line per step), and rows
(mode "train": train_loss = mean of the last 100 steps, val_loss on a fixed validation sample, tokens, wall_s,
tokens_per_s) appended to `results`. Bad requests end with one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import contextlib
import csv
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from bench import checkpoint, data, optim, registry, results, train_graph
from bench.cli import guarded, main_with_groups
from bench.plan import resolve_device
from ttt.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "size", "data", "train")
LOG_FILE = "train_log.csv"
LOG_FIELDS = ("step", "tokens", "loss", "lr", "ttt_base_lr", "grad_norm", "tokens_per_s", "elapsed_s")
LOSS_WINDOW = 100  # train_loss in the rows: the mean of the last this many steps
# Settings that may change between a run and its resumption (they do not change what is trained).
# batch and accum may change too (e.g. to fit memory) as long as their product, the windows per step, stays.
RUNTIME_KEYS = (
    "time_budget_s", "stop_after_steps", "save_every_s", "save_every_steps", "resume", "progress", "grad_checkpoint",
    "batch", "accum", "cuda_graph", "graph_warmup_tokens",
)  # fmt: skip
NOT_TRAINABLE = {
    "triton": "its Triton kernels are forward-only; train with train.impl=dual",
    "naive": "it is the token-by-token definition, far too slow to train; train with train.impl=dual",
    "flash_attn": "the flash-attn build here is forward-only; train with train.impl=sdpa_flash",
}
_START = time.monotonic()  # time budgets count from the launch: imports and corpus loading are part of a command


@dataclass
class Setup:
    """Everything a run needs, resolved and checked before anything is built."""

    model: str
    model_cfg: dict[str, Any]
    size: dict[str, Any]
    impl: str
    family: str
    device: torch.device
    autocast: torch.dtype | None
    corpus: data.Corpus
    tokenizer: data.Tokenizer
    windows: data.PackedWindows
    val: torch.Tensor  # (n, ctx + 1)
    train: dict[str, Any]
    data_cfg: dict[str, Any]
    out: Path
    results: Path
    total_steps: int
    warmup: int
    graph: bool = False  # the whole step captured in a CUDA graph and replayed (bench/train_graph.py)
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def ctx(self) -> int:
        return int(self.train["ctx"])

    @property
    def tokens_per_step(self) -> int:
        return int(self.train["batch"]) * int(self.train["accum"]) * self.ctx


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"{what} must be a positive integer, not '{value}'")
    return value


def train_impl(model_cfg: DictConfig, train_cfg: dict[str, Any], device: torch.device) -> str:
    """The implementation a model trains with: train.impl, else train.impls[gpu|cpu][family]; refused (one line)
    when it cannot train or cannot run on this device."""
    family = str(model_cfg.family)
    table = train_cfg["impls"]["gpu" if device.type == "cuda" else "cpu"]
    name = train_cfg.get("impl") or table.get(family)
    if not name:
        raise UserError(f"train.impls has no {device.type} entry for family '{family}' of model '{model_cfg.name}'")
    if name in NOT_TRAINABLE:
        raise UserError(f"impl '{name}' of model '{model_cfg.name}' cannot train: {NOT_TRAINABLE[name]}")
    registry.resolve_impl(model_cfg, name, device)  # unknown name, GPU-only on a CPU, missing package: one line
    return str(name)


def use_cuda_graph(value: Any, family: str, device: torch.device) -> bool:
    """train.cuda_graph: auto (on for the TTT family on CUDA, whose eager step is bound by host time per
    mini-batch), true (any family; CUDA only) or false."""
    if value == "auto":
        return family == "ttt" and device.type == "cuda"
    if not isinstance(value, bool):
        raise UserError(f"train.cuda_graph must be auto, true or false, not '{value}'")
    if value and device.type != "cuda":
        raise UserError(f"train.cuda_graph=true captures the step in a CUDA graph; device '{device}' has none")
    return value


def resolve(cfg: DictConfig) -> Setup:
    """Check the composed config and load the data; every bad request is a one-line UserError."""
    tcfg: dict[str, Any] = OmegaConf.to_container(cfg.train, resolve=True)  # type: ignore[assignment]
    dcfg: dict[str, Any] = OmegaConf.to_container(cfg.data, resolve=True)  # type: ignore[assignment]
    for key in ("ctx", "batch", "accum", "tokens"):
        _positive_int(f"train.{key}", tcfg[key])
    if isinstance(tcfg["val_windows"], bool) or not isinstance(tcfg["val_windows"], int) or tcfg["val_windows"] < 0:
        raise UserError(f"train.val_windows must be a non-negative integer, not '{tcfg['val_windows']}'")
    device = resolve_device(cfg.device)
    model = str(cfg.model.name)
    model_cfg = registry.model_config(model)  # unknown model: one line (check_groups catches it earlier on the CLI)
    model_cfg = OmegaConf.merge(model_cfg, cfg.model)
    ctx = tcfg["ctx"]
    mbs = model_cfg.get("mini_batch_size")
    if model_cfg.family == "ttt" and ctx % int(mbs):
        raise UserError(f"train.ctx={ctx} is not a multiple of {model}'s TTT mini-batch size {mbs}")
    impl = train_impl(model_cfg, tcfg, device)
    dtype = str(tcfg.get("dtype", "auto"))
    if dtype not in ("auto", "float32", "bfloat16"):
        raise UserError(f"unknown train.dtype '{dtype}'; known: auto, bfloat16 (CUDA autocast), float32")
    autocast = torch.bfloat16 if device.type == "cuda" and dtype in ("auto", "bfloat16") else None
    if dtype == "bfloat16" and device.type != "cuda":
        raise UserError("train.dtype=bfloat16 (autocast over fp32 weights) is for CUDA; on a CPU train in float32")
    if autocast is None and impl in ("sdpa_flash", "sdpa_cudnn"):
        raise UserError(f"impl '{impl}' runs in bf16/fp16 only; train it with train.dtype=auto (bf16 autocast)")
    graph = use_cuda_graph(tcfg.get("cuda_graph", "auto"), str(model_cfg.family), device)

    corpus = data.load_corpus(dcfg["corpus"], root=dcfg.get("root"), val_percent=int(dcfg.get("val_percent", 5)))
    tok = data.get_tokenizer(
        dcfg.get("tokenizer", "byte"),
        corpus=corpus,
        vocab_size=dcfg.get("bpe_vocab"),
        path=dcfg.get("tokenizer_path"),
    )
    windows = data.PackedWindows(corpus, tok, "train", ctx, seed=int(dcfg.get("seed", 0)))
    val = torch.zeros(0, ctx + 1, dtype=torch.long)
    if tcfg["val_windows"]:
        val = data.token_windows(corpus, tok, "validation", ctx + 1, tcfg["val_windows"], seed=int(dcfg.get("seed", 0)))

    size = OmegaConf.to_container(registry.size_config(cfg.size), resolve=True)
    assert isinstance(size, dict)
    size["vocab_size"] = tok.vocab_size  # the model's vocabulary is the tokenizer's
    size_name = size.get("name", "custom")
    out = Path(cfg.out) if cfg.get("out") else Path("checkpoints") / f"{model}-{size_name}-ctx{ctx}"
    res = Path(cfg.results) if cfg.get("results") else results.default_path("train", device.type != "cuda")
    total = math.ceil(tcfg["tokens"] / (tcfg["batch"] * tcfg["accum"] * ctx))
    setup = Setup(
        model=model,
        model_cfg=OmegaConf.to_container(model_cfg, resolve=True),  # type: ignore[arg-type]
        size=size,
        impl=impl,
        family=str(model_cfg.family),
        device=device,
        autocast=autocast,
        corpus=corpus,
        tokenizer=tok,
        windows=windows,
        val=val,
        train=tcfg,
        data_cfg=dcfg,
        out=out,
        results=res,
        total_steps=total,
        warmup=optim.warmup_steps(total, float(tcfg["warmup_frac"])),
        graph=graph,
    )
    setup.identity = {
        "model": model,
        "size": size,
        "model_overrides": setup.model_cfg,
        "tokenizer": tok.name,
        "corpus": corpus.name,
        "corpus_checksum": corpus.checksum,
        "data": {k: v for k, v in dcfg.items() if k not in ("tokenizer_path", "root")},  # the checksum says it
        "train": {k: v for k, v in tcfg.items() if k not in RUNTIME_KEYS},
        "windows_per_step": tcfg["batch"] * tcfg["accum"],
    }
    return setup


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            d = _first_difference(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    return None if old == new else f"{path}: {old!r} there, {new!r} now"


# ---- the model in training --------------------------------------------------------------------------------------


def checkpointed_blocks(net: torch.nn.Module, family: str, impl: str) -> list[torch.nn.Module]:
    """The modules whose forward is recomputed in the backward under train.grad_checkpoint."""
    if family == "mamba":
        layers = net.ssm_model.backbone.layers if impl == "mamba_ssm" else net.backbone.layers
        return [blk.mixer for blk in layers]
    return list(net.layers)


def enable_grad_checkpoint(blocks: list[torch.nn.Module]) -> None:
    """Per-block activation checkpointing, set on the instances (the model code stays as it is)."""
    from torch.utils.checkpoint import checkpoint

    for blk in blocks:
        forward = blk.forward

        def wrapped(*args: Any, _fwd: Any = forward, **kwargs: Any) -> Any:
            return checkpoint(_fwd, *args, use_reentrant=False, **kwargs)

        blk.forward = wrapped  # type: ignore[method-assign]


@contextlib.contextmanager
def trainable_path(impl: str) -> Iterator[None]:
    """mamba_ssm: mamba-ssm's short conv through torch's conv1d instead of causal-conv1d (forward-only here).
    Held over forward and backward, since checkpointed blocks run their forward again in the backward."""
    if impl != "mamba_ssm":
        yield
        return
    import mamba_ssm.modules.mamba_simple as simple

    saved = simple.causal_conv1d_fn
    simple.causal_conv1d_fn = None
    try:
        yield
    finally:
        simple.causal_conv1d_fn = saved


def ttt_layers(net: torch.nn.Module) -> list[Any]:
    from ttt.layer import TTTBase

    return [m for m in net.modules() if isinstance(m, TTTBase)]


def set_ttt_base_lr(net: torch.nn.Module, value: float | torch.Tensor) -> None:
    """The inner lr enters every forward as `layer.cfg.ttt_base_lr` (ttt/layer.py `eta`); the config object is
    shared by the layers, and setting it per step is the warm-up. A float replaces it; while it is a tensor (the
    graphed step reads its memory) a float is written into it, and a tensor value replaces it."""
    for layer in ttt_layers(net):
        cur = layer.cfg.ttt_base_lr
        if isinstance(cur, torch.Tensor) and not isinstance(value, torch.Tensor):
            cur.fill_(value)
        else:
            layer.cfg.ttt_base_lr = value


def tensor_ttt_base_lr(net: torch.nn.Module, device: torch.device) -> None:
    """ttt_base_lr as a 0-dim device tensor holding its current value (a captured step reads it; `set_ttt_base_lr`
    then writes into it)."""
    for layer in ttt_layers(net):
        if not isinstance(layer.cfg.ttt_base_lr, torch.Tensor):
            layer.cfg.ttt_base_lr = torch.tensor(float(layer.cfg.ttt_base_lr), dtype=torch.float32, device=device)


def plain_ttt_base_lr(net: torch.nn.Module) -> None:
    """ttt_base_lr back to a float of its current value (after a graphed run: the fused inference path and the
    model's config take a number)."""
    for layer in ttt_layers(net):
        if isinstance(layer.cfg.ttt_base_lr, torch.Tensor):
            layer.cfg.ttt_base_lr = float(layer.cfg.ttt_base_lr)


def ttt_base_lr_at(setup: Setup, step: int) -> float | None:
    if setup.family != "ttt":
        return None
    end = float(setup.model_cfg.get("ttt_base_lr", 1.0))
    start = (setup.train.get("ttt_base_lr_init") or {}).get(setup.model)
    return end if start is None else optim.ramp(step, setup.warmup, float(start), end)


def lm_loss(net: torch.nn.Module, windows: torch.Tensor, setup: Setup) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per token) of windows (B, ctx + 1), computed in float32."""
    # A captured step must recast the weights at every replay: no autocast weight cache under a graph.
    on = setup.autocast is not None
    with torch.autocast(setup.device.type, dtype=setup.autocast, enabled=on, cache_enabled=on and not setup.graph):
        logits = net(windows[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def val_loss(net: torch.nn.Module, setup: Setup) -> float | None:
    """Mean loss over the fixed validation windows, one window at a time (a 32k window of logits is enough)."""
    if not len(setup.val):
        return None
    net.eval()
    # dual_compiled is compiled for the training batch shape; the same math uncompiled spares a recompile.
    impl = net.impl
    if impl == "dual_compiled":
        net.impl = "dual"
    total = 0.0
    for w in setup.val:
        total += float(lm_loss(net, w[None].to(setup.device), setup))
    net.impl = impl
    net.train()
    return total / len(setup.val)


# ---- the loop ---------------------------------------------------------------------------------------------------


@dataclass
class State:
    step: int = 0  # optimizer steps taken
    position: int = 0  # training windows consumed
    tokens: int = 0
    wall_s: float = 0.0  # training time over all invocations
    losses: list[float] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)


def _read_log(path: Path, upto_step: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)


def _append_log(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def start(setup: Setup) -> tuple[torch.nn.Module, torch.optim.Optimizer, State, bool]:
    """(model, optimizer, state, resumed): fresh from train.seed, or the checkpoint in `out` when it holds this
    config's run and train.resume is on."""
    out = setup.out
    resumable = None
    if out.exists() and not (out / checkpoint.META).is_file():
        # checkpoint.save replaces the whole directory: never point it at one holding anything else.
        others = [p.name for p in out.iterdir() if p.name != LOG_FILE] if out.is_dir() else [out.name]
        if others:
            raise UserError(
                f"out='{out}' exists and holds no checkpoint ({others[0]}, ...); saving would replace it: "
                "choose a new or empty directory"
            )
    if (out / checkpoint.META).is_file():
        meta = checkpoint.load_meta(out)
        if meta["model"] != setup.model:
            raise UserError(
                f"out='{out}' holds a checkpoint of model '{meta['model']}', not '{setup.model}'; choose another out="
            )
        if setup.train["resume"]:
            resumable = checkpoint.load_train_state(out)
            if resumable is None:
                raise UserError(
                    f"out='{out}' holds a checkpoint without {checkpoint.TRAIN_STATE} (an export), which cannot be "
                    "resumed; choose another out= or start over with train.resume=false"
                )
            diff = _first_difference(resumable["identity"], setup.identity)
            if diff:
                raise UserError(
                    f"out='{out}' holds a run of another config ({diff}); choose another out= or start over with "
                    "train.resume=false"
                )
    if resumable is None:
        torch.manual_seed(int(setup.train["seed"]))
        net = registry.build(setup.model, setup.size, setup.impl, device=setup.device, overrides=setup.model_cfg)
        state = State()
        (out / LOG_FILE).unlink(missing_ok=True)
    else:
        net, _ = checkpoint.load(out, device=setup.device, impl=setup.impl, expect_model=setup.model)
        s = resumable["state"]
        state = State(s["step"], s["position"], s["tokens"], s["wall_s"], list(s["losses"]))
        state.log = _read_log(out / LOG_FILE, state.step)
        _write_log(out / LOG_FILE, state.log)  # steps after the saved one are done again: their lines go
        torch.set_rng_state(resumable["rng"]["cpu"])
        if setup.device.type == "cuda" and resumable["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumable["rng"]["cuda"], setup.device)
    net.train()
    opt = optim.make_optimizer(
        net,
        lr=float(setup.train["lr"]),
        betas=tuple(setup.train["betas"]),  # type: ignore[arg-type]
        weight_decay=float(setup.train["weight_decay"]),
        fused=setup.device.type == "cuda",
    )
    if resumable is not None:
        opt.load_state_dict(resumable["optimizer"])
    return net, opt, state, resumable is not None


def _portable(opt_state: dict[str, Any]) -> dict[str, Any]:
    """The optimizer state as an eager run expects it: a graphed run's device-tensor lr saved as a float, and
    capturable off (a resumed graphed run turns both on again before its capture)."""
    for g in opt_state["param_groups"]:  # state_dict() gives new group dicts: the live optimizer is untouched
        if isinstance(g.get("lr"), torch.Tensor):
            g["lr"] = float(g["lr"])
        if "capturable" in g:
            g["capturable"] = False
    return opt_state


def save(setup: Setup, net: torch.nn.Module, opt: torch.optim.Optimizer, state: State, extra: dict[str, Any]) -> str:
    commit, dirty = results.git_state()
    meta = {
        "model": setup.model,
        "size": setup.size,
        "model_overrides": setup.model_cfg,
        "impl": setup.impl,
        "tokenizer": setup.tokenizer.name,
        "corpus": setup.corpus.name,
        "corpus_checksum": setup.corpus.checksum,
        "train_ctx": setup.ctx,
        "step": state.step,
        "total_steps": setup.total_steps,
        "tokens_seen": state.tokens,
        "wall_s": round(state.wall_s, 3),
        "complete": state.step >= setup.total_steps,
        "dtype": "bfloat16-autocast" if setup.autocast is not None else "float32",
        "train": setup.train,
        "data": setup.data_cfg,
        "git_commit": commit,
        "git_dirty": dirty,
        "device": setup.device.type,
        "gpu_name": torch.cuda.get_device_name(setup.device) if setup.device.type == "cuda" else "",
        "torch": torch.__version__,
        "n_params": registry.count_params(net),
        **extra,
    }
    train_state = {
        "identity": setup.identity,
        "state": {
            "step": state.step,
            "position": state.position,
            "tokens": state.tokens,
            "wall_s": state.wall_s,
            "losses": state.losses[-LOSS_WINDOW:],
        },
        "optimizer": _portable(opt.state_dict()),
        "rng": {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(setup.device) if setup.device.type == "cuda" else None,
        },
    }
    digest = checkpoint.save(setup.out, net, meta, train_state)
    _write_log(setup.out / LOG_FILE, state.log)  # save() replaces the directory: the log goes back in
    return digest


def run(setup: Setup) -> dict[str, Any]:
    """Train until the token budget, train.stop_after_steps or the time budget; save; append rows. TF32 for the
    fp32 matmuls outside autocast is this run's setting: the process gets its own back afterwards (a later fp32
    check in the same process, e.g. the GPU tests after a training test, would otherwise run in TF32)."""
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        return _run(setup)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32


def _run(setup: Setup) -> dict[str, Any]:
    t = setup.train
    net, opt, state, resumed = start(setup)
    if resumed:
        print(f"resume: {setup.out} at step {state.step}/{setup.total_steps}", file=sys.stderr)
    if state.step >= setup.total_steps:
        print(f"{setup.out} already holds the whole run ({state.step} steps): nothing to do", file=sys.stderr)
        return {"step": state.step, "stop_reason": "done", "rows": 0}
    if t["grad_checkpoint"]:
        enable_grad_checkpoint(checkpointed_blocks(net, setup.family, setup.impl))
    params = [p for g in opt.param_groups for p in g["params"]]
    batch, accum = int(t["batch"]), int(t["accum"])
    clip = float(t["grad_clip"] or math.inf)

    def step(micro: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return train_step(net, opt, params, micro, setup, clip)

    graphed: train_graph.GraphedStep | None = None
    capture_s = 0.0
    if setup.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 parts outside autocast
        torch.cuda.reset_peak_memory_stats(setup.device)

    bar = tqdm(
        total=setup.total_steps * setup.tokens_per_step,
        initial=state.tokens,
        unit="tok",
        unit_scale=True,
        disable=not t["progress"],
        file=sys.stderr,
        desc=f"{setup.model}/{setup.impl}",
    )
    steps_here, step_s, last_save, stop = 0, None, time.monotonic(), "tokens"
    # Reserve for the validation pass at the end: forward only, but uncompiled for dual_compiled and one window at a
    # time, so count a window as twice its share of a training step.
    val_share = 2 * len(setup.val) / (batch * accum)
    while state.step < setup.total_steps:
        if t["stop_after_steps"] is not None and steps_here >= int(t["stop_after_steps"]):
            stop = "stop_after_steps"
            break
        if t["time_budget_s"] is not None and step_s is not None:
            if time.monotonic() - _START + step_s * (1.1 + val_share) > float(t["time_budget_s"]):
                stop = "time_limit"
                break
        t0 = time.monotonic()
        lr = optim.lr_at(state.step, setup.total_steps, float(t["lr"]), float(t["min_lr"]), setup.warmup)
        train_graph.set_lr(opt, lr)
        inner = ttt_base_lr_at(setup, state.step)
        if inner is not None:
            set_ttt_base_lr(net, inner)
        micro = []
        for _ in range(accum):
            micro.append(setup.windows.take(state.position, batch).to(setup.device, non_blocking=True))
            state.position += batch
        try:
            if setup.graph and graphed is None:
                c0 = time.monotonic()
                graphed = capture(setup, net, opt, step, micro)
                capture_s = time.monotonic() - c0
                print(f"{setup.model}: training step captured in a CUDA graph in {capture_s:.1f} s", file=sys.stderr)
                t0 += capture_s  # the step's own time (rates, the time budget) leaves the one-off capture out
                state.wall_s += capture_s
            if graphed is not None:
                loss_t, gn = graphed(micro)
            else:
                loss_t, gn = step(micro)
                opt.zero_grad(set_to_none=True)
            loss_v = float(loss_t)  # one host sync per step: the log and the bar need it
        except torch.OutOfMemoryError as e:
            bar.close()
            raise UserError(out_of_memory(setup, e)) from None
        if not math.isfinite(loss_v):
            bar.close()
            raise UserError(
                f"{setup.model}: the training loss is {loss_v} at step {state.step + 1}; lower train.lr "
                f"(the last checkpoint in '{setup.out}' is kept)"
            )
        state.step += 1
        state.tokens += setup.tokens_per_step
        steps_here += 1
        step_s = time.monotonic() - t0
        state.wall_s += step_s
        state.losses = (state.losses + [loss_v])[-LOSS_WINDOW:]
        row = {
            "step": state.step,
            "tokens": state.tokens,
            "loss": round(loss_v, 6),
            "lr": lr,
            "ttt_base_lr": inner,
            "grad_norm": round(float(gn), 6),
            "tokens_per_s": round(setup.tokens_per_step / step_s, 1),
            "elapsed_s": round(state.wall_s, 3),
        }
        state.log.append(row)
        _append_log(setup.out / LOG_FILE, row)
        bar.update(setup.tokens_per_step)
        bar.set_postfix(loss=f"{loss_v:.4f}", tok_s=f"{row['tokens_per_s']:.3g}")
        every_s, every_steps = t["save_every_s"], t["save_every_steps"]
        if state.step < setup.total_steps and (
            (every_s is not None and time.monotonic() - last_save >= float(every_s))
            or (every_steps is not None and state.step % int(every_steps) == 0)
        ):
            save(setup, net, opt, state, {"time_limited": False, "stop_reason": "periodic"})
            last_save = time.monotonic()
    bar.close()
    if state.step >= setup.total_steps:
        stop = "tokens"
    if graphed is not None:
        del graphed  # the graph's memory pool goes before validation, with the grads that live in it
        opt.zero_grad(set_to_none=True)
        plain_ttt_base_lr(net)
    vloss = val_loss(net, setup)
    extra = {"time_limited": stop == "time_limit", "stop_reason": stop, "val_loss": vloss}
    if setup.graph:
        extra["cuda_graph"] = True
        extra["graph_capture_s"] = round(capture_s, 3)
    if setup.family == "ttt":
        extra["ttt_base_lr"] = ttt_base_lr_at(setup, state.step)
    digest = save(setup, net, opt, state, extra)
    n_rows = append_rows(setup, net, state, vloss, stop, digest)
    print(
        f"{setup.model}: step {state.step}/{setup.total_steps}, {state.tokens:,} tokens, "
        f"train_loss {_mean(state.losses):.4f}, val_loss {vloss if vloss is None else round(vloss, 4)}, "
        f"stopped by {stop}; checkpoint {setup.out} ({digest[:12]}), {n_rows} row(s) in {setup.results}",
        file=sys.stderr,
    )
    return {"step": state.step, "stop_reason": stop, "val_loss": vloss, "rows": n_rows, "checkpoint": digest}


def out_of_memory(setup: Setup, e: BaseException) -> str:
    """The one line for a step that did not fit: what ran out, and the settings that make it fit."""
    what = " ".join(str(e).split())[:160]
    return (
        f"{setup.model}: out of GPU memory at train.batch={setup.train['batch']}, train.ctx={setup.ctx} ({what}); "
        "lower train.batch and raise train.accum to keep the windows per step, or set train.grad_checkpoint=true "
        f"(the last checkpoint in '{setup.out}' is kept)"
    )


def train_step(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    params: list[torch.Tensor],
    micro: list[torch.Tensor],
    setup: Setup,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over the micro-batches (windows (B, ctx + 1) each): (mean loss, grad norm before
    clipping) as device tensors. The same code runs eagerly and under CUDA-graph capture: no host reads."""
    loss_sum = torch.zeros((), device=setup.device)
    for w in micro:
        with trainable_path(setup.impl):
            loss = lm_loss(net, w, setup)
            (loss / len(micro)).backward()
        loss_sum = loss_sum + loss.detach()
    gn = torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()
    return loss_sum / len(micro), gn


def capture(
    setup: Setup,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    step: train_graph.StepFn,
    micro: list[torch.Tensor],
) -> train_graph.GraphedStep:
    """The step as a CUDA graph: lr and ttt_base_lr become device tensors first (set in place from then on)."""
    train_graph.tensor_lr(opt, setup.device)
    tensor_ttt_base_lr(net, setup.device)
    warm = int(setup.train.get("graph_warmup_tokens") or 0)
    return train_graph.GraphedStep(step, net, opt, micro, warm_tokens=warm if 0 < warm < setup.ctx else None)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def append_rows(setup: Setup, net: torch.nn.Module, state: State, vloss: float | None, stop: str, digest: str) -> int:
    prov = results.provenance(setup.device)
    cfg_hash = results.config_hash(setup.identity)
    peak = torch.cuda.max_memory_allocated(setup.device) if setup.device.type == "cuda" else None
    tps = state.tokens / state.wall_s if state.wall_s else None
    base = {
        "model": setup.model,
        "impl": f"{setup.model}/{setup.impl}",
        "size": setup.size.get("name"),
        "n_params": registry.count_params(net),
        "mode": "train",
        "ctx": setup.ctx,
        "batch": int(setup.train["batch"]) * int(setup.train["accum"]),
        "dtype": "bfloat16" if setup.autocast is not None else "float32",
        "peak_mem_bytes": peak,
        "tokens_per_s": tps,
        "checkpoint": digest[:16],
        "corpus": setup.corpus.name,
        "tokenizer": setup.tokenizer.name,
        "stop_reason": stop,
        "step": state.step,
        "corpus_checksum": setup.corpus.checksum[:12],
    }
    n_loss = min(len(state.losses), LOSS_WINDOW) * setup.tokens_per_step
    metrics = [  # (metric, value, unit, stat, tokens it averages over)
        ("train_loss", _mean(state.losses[-LOSS_WINDOW:]), "nats/token", f"mean_last{LOSS_WINDOW}", n_loss),
        ("val_loss", vloss, "nats/token", "mean", len(setup.val) * setup.ctx),
        ("tokens", state.tokens, "tokens", "total", state.tokens),
        ("wall_s", state.wall_s, "s", "total", state.tokens),
        ("tokens_per_s", tps, "tokens/s", "mean", state.tokens),
    ]
    rows = [
        results.complete(dict(base, metric=m, value=v, unit=u, stat=s, n_tokens=n), prov, cfg_hash)
        for m, v, u, s, n in metrics
        if v is not None
    ]
    return results.append(setup.results, rows)


# ---- the command line -------------------------------------------------------------------------------------------


def execute(cfg: DictConfig) -> dict[str, Any]:
    return run(resolve(cfg))


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    guarded(lambda: execute(cfg))


def cli() -> None:
    main_with_groups(main, GROUPS)


if __name__ == "__main__":
    cli()
