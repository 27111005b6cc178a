"""Wall-clock timing of one callable: CUDA events on a GPU, perf_counter on a CPU; repeats adapt to a budget."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def time_calls(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 1,
    min_repeats: int = 3,
    max_repeats: int = 20,
    budget_s: float = 2.0,
    setup: Callable[[], object] | None = None,
) -> list[float]:
    """Milliseconds of each timed call of `fn`. `setup` (untimed) runs before every call, warm-ups included.

    At least `min_repeats` calls, then more until `max_repeats` or until `budget_s` of timed work is spent,
    so a point at 32k costs three forwards and a point at 1k gets a tight median.
    """
    cuda = device.type == "cuda"
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < budget_s * 1e3):
        if setup is not None:
            setup()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def median(times: list[float]) -> float:
    return float(np.median(times))


def spread(times: list[float]) -> tuple[float, float]:
    """p10 and p90 of the repeats."""
    lo, hi = np.percentile(times, [10, 90])
    return float(lo), float(hi)
