"""The machine's own floors, measured once per run: copy bandwidth and matmul rate.

Rows carry them so "fraction of the floor" is honest for the machine that produced the row, not a datasheet.
"""

from __future__ import annotations

import torch

from bench.timing import median, time_calls


def copy_bandwidth_gbps(device: torch.device, nbytes: int) -> float:
    """Achieved GB/s of one large device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    times = time_calls(lambda: dst.copy_(src), device, warmup=2, min_repeats=5, max_repeats=20, budget_s=0.3)
    return 2 * nbytes / (median(times) * 1e-3) / 1e9


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_calls(lambda: a @ b, device, warmup=2, min_repeats=5, max_repeats=20, budget_s=0.3)
    return 2 * n**3 / (median(times) * 1e-3) / 1e12


def measure(device: torch.device | str) -> dict[str, float]:
    """{hw_copy_gbps, hw_matmul_tflops}: about a second on a GPU (1 GiB copy, bf16 8192^3), less on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        out = {
            "hw_copy_gbps": copy_bandwidth_gbps(device, 1 << 30),
            "hw_matmul_tflops": matmul_tflops(device, 8192, torch.bfloat16),
        }
        torch.cuda.empty_cache()
        return out
    # A CPU's floors only label CPU rows; small sizes keep the CPU default quick.
    return {
        "hw_copy_gbps": copy_bandwidth_gbps(device, 64 << 20),
        "hw_matmul_tflops": matmul_tflops(device, 512, torch.float32),
    }
