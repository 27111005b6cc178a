"""One whole training step (forward, backward, grad clip, AdamW) captured in a CUDA graph and replayed.

Why: the TTT dual forms run a few small kernels per mini-batch and layer, and at 32k there are 2,048 mini-batches
per layer. Eager PyTorch spends ~1.4 ms of host time on each (autograd, dispatch, torch.compile guards), so a 32k
step took ~17 s whatever the batch (bench/notes/train_probe.py); a replay launches the same kernels with no host
work. `train.cuda_graph` (bench/train.py) turns this on; `auto` does for the TTT family on CUDA.

What a captured step needs (PyTorch's whole-network capture recipe), and where it is arranged:
- static inputs: each step's windows are copied into one preallocated buffer before the replay;
- no host reads inside: the TTT layers give the dual forms a host copy of the fresh state's zero offset
  (ttt/layer.py HOST_OFFSET_IMPLS); clip_grad_norm_ and fused AdamW stay on the device;
- what changes between steps lives in device tensors written in place: every param group's lr (fused AdamW takes a
  tensor lr) and TTT's ttt_base_lr (TTT-MLP's warm-up);
- autocast without its weight cache (the cached casts would be tensors of the capture, stale at replay);
- a warm-up before capture (torch.compile, cuBLAS handles, the optimizer's lazily built state) that leaves the run
  exactly as it was: at lr 0, on a short prefix of the first windows, with parameters and optimizer state restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn

StepFn = Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]

WARMUP_CALLS = 2  # the first call compiles and builds state; the second runs what the capture will see


def tensor_lr(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Every param group's lr as a device tensor (then set in place by `set_lr`), and capturable on."""
    for g in opt.param_groups:
        g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
        g["capturable"] = True


def _put_lr(group: dict, lr: float | torch.Tensor) -> None:
    """One group's lr: in place when it is a tensor (a captured step reads that memory)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the lr of every group (in place where it is a tensor)."""
    for g in opt.param_groups:
        _put_lr(g, lr)


def _snapshot(net: nn.Module, opt: torch.optim.Optimizer) -> tuple[list[torch.Tensor], dict]:
    params = [p.detach().clone() for p in net.parameters()]
    state = {p: {k: v.clone() for k, v in st.items() if isinstance(v, torch.Tensor)} for p, st in opt.state.items()}
    return params, state


def _restore(net: nn.Module, opt: torch.optim.Optimizer, saved: tuple[list[torch.Tensor], dict]) -> None:
    """Parameters and optimizer state back to the snapshot, in place; state the warm-up created is zeroed, which
    is what a fresh AdamW state is (step 0, zero moments)."""
    params, state = saved
    with torch.no_grad():
        for p, s in zip(net.parameters(), params):
            p.copy_(s)
        for p, st in opt.state.items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    v.copy_(state[p][k]) if p in state else v.zero_()


def warm_up(
    step: StepFn,
    micro: list[torch.Tensor],
    net: nn.Module,
    opt: torch.optim.Optimizer,
    calls: int = WARMUP_CALLS,
) -> None:
    """Run `step` `calls` times on `micro` at lr 0 (on a side stream on CUDA, as capture wants), then put the
    parameters, the optimizer state and the lr back as they were, and drop the gradients."""
    lrs = [g["lr"].clone() if isinstance(g["lr"], torch.Tensor) else g["lr"] for g in opt.param_groups]
    saved = _snapshot(net, opt)
    set_lr(opt, 0.0)
    cuda = micro[0].is_cuda
    stream = torch.cuda.Stream() if cuda else None
    if stream is not None:
        stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        for _ in range(calls):
            opt.zero_grad(set_to_none=True)
            step(micro)
    if stream is not None:
        torch.cuda.current_stream().wait_stream(stream)
    _restore(net, opt, saved)
    for g, lr in zip(opt.param_groups, lrs):
        _put_lr(g, lr)
    opt.zero_grad(set_to_none=True)


class GraphedStep:
    """`step` captured once for micro-batches of a fixed shape; `__call__` copies the windows in and replays.
    Returns the captured (loss, grad_norm) tensors, overwritten by every replay."""

    def __init__(
        self,
        step: StepFn,
        net: nn.Module,
        opt: torch.optim.Optimizer,
        example: list[torch.Tensor],
        warm_tokens: int | None = None,
    ) -> None:
        if not example or not example[0].is_cuda:
            raise ValueError("GraphedStep needs CUDA micro-batches")
        # The warm-up compiles and builds state; the per-mini-batch kernels of the TTT forms have the same shapes
        # at any length, so a short prefix does it (a 32k eager step would cost as much host time as the capture).
        short = [w[:, : warm_tokens + 1] for w in example] if warm_tokens else example
        warm_up(step, short, net, opt)
        self.static = [w.clone() for w in example]
        self.graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)  # the capture's backward allocates the grads in the graph's pool
        with torch.cuda.graph(self.graph):
            self.loss, self.grad_norm = step(self.static)

    def __call__(self, micro: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for s, w in zip(self.static, micro, strict=True):
            s.copy_(w, non_blocking=True)
        self.graph.replay()
        return self.loss, self.grad_norm
