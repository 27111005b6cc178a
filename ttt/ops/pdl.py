"""Programmatic dependent launch (PDL) for the decode chain, and L2 prefetch hints.

A decode step is ~290 small dependent launches; each one's launch, ramp-up and first loads used to start only
after the previous kernel had drained (bench/notes/session4.md: 7 small kernels a layer cost 19.8 us of latency).
With PDL (Hopper and newer), a kernel launched with `launch_pdl=True` may start while its predecessor still runs.
Every kernel here follows one rule that keeps this correct whatever precedes it:

    prefetch hints only (data it will read, into L2)  ->  gdc_wait()  ->  gdc_launch_dependents()  ->  the work

Before `gdc_wait` nothing is loaded into registers and nothing is stored, so a predecessor's writes can never be
missed (a prefetch only warms L2, which is the coherence point); after it, the predecessor has completed and its
memory is visible. Triggering dependents only after the wait keeps at most two kernels of a chain in flight, so
everything before the predecessor has completed too. A kernel without a PDL predecessor waits on nothing.

`TTT_PDL=0` in the environment turns it off (A/B runs); it is never on under the interpreter or below sm_90.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


def pdl_on(t: torch.Tensor) -> bool:
    """Whether kernels launched on t's device take the PDL path."""
    if not t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get("TTT_PDL", "1") == "0":
        return False
    return torch.cuda.get_device_capability(t.device)[0] >= 9


def launch_opts(pdl: bool) -> dict[str, bool]:
    """Launch keyword for a kernel whose PDL constexpr is `pdl` (absent when off, so no option reaches old builds)."""
    return {"launch_pdl": True} if pdl else {}


@triton.jit
def prefetch_l2(ptrs):
    """An L2 prefetch hint per pointer (one per 128-byte line is enough). No register result, no ordering."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def pdl_enter(PDL: tl.constexpr):
    """The point after which a kernel may read what its predecessor wrote; lets the next kernel launch."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
