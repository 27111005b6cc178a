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

from ttt.errors import UserError


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


@triton.jit
def share_lines(rows, row_len, prefix_lines, pid, LPP: tl.constexpr):
    """Element offsets of program `pid`'s share, LPP 128-byte lines, of the first `prefix_lines` lines of each of
    the `rows` rows (`row_len` 16-bit elements) of a weight: one offset a line; lanes past the end name line 0."""
    line = pid.to(tl.int64) * LPP + tl.arange(0, LPP)
    r = line // prefix_lines
    return tl.where(r < rows, r * row_len + (line % prefix_lines) * 64, 0)


@triton.jit
def prefetch_share(w_ptr, rows, row_len, prefix_lines, pid, LPP: tl.constexpr):
    """L2 prefetch hints for `share_lines` of a weight that the next kernel streams (`NextWeight`)."""
    prefetch_l2(w_ptr + share_lines(rows, row_len, prefix_lines, pid, LPP))


class NextWeight:
    """A weight that the kernel after this one streams, to be warmed in L2 by this one's programs (`prefetch_share`)
    while this one is latency-bound and leaves DRAM bandwidth idle: the fused decode step ahead of o_proj, the
    pre-conv step ahead of the in-proj GEMM. `frac` of each row's K extent, from its start (the GEMM's programs all
    walk K in order, so the prefix is what they read first). Kernel arguments: `args(programs)`."""

    def __init__(self, w: torch.Tensor | None, frac: float) -> None:
        on = w is not None and w.is_cuda and w.is_contiguous() and w.element_size() == 2 and frac > 0
        self.w = w if on else None
        self.rows, self.row_len = (w.shape[0], w.shape[-1]) if on else (0, 0)
        self.lines = max(1, round(min(frac, 1.0) * triton.cdiv(self.row_len, 64))) if on else 1

    def args(self, programs: int, dummy: torch.Tensor) -> tuple[tuple, int]:
        """(pointer (`dummy` when off), rows, row length, prefix lines), and the lines a program hints: the kernel's
        PF_LPP constexpr, 0 when off."""
        if self.w is None:
            return (dummy, 0, 0, 1), 0
        return (self.w, self.rows, self.row_len, self.lines), triton.next_power_of_2(
            triton.cdiv(self.rows * self.lines, programs)
        )

    @staticmethod
    def knob(name: str) -> float:
        """TTT_PF_<name>: the fraction of the next weight to prefetch (A/B runs), 0 = off."""
        v = os.environ.get(f"TTT_PF_{name}", "0")
        try:
            return float(v)
        except ValueError:
            raise UserError(f"TTT_PF_{name}={v!r}: expected a fraction in [0, 1]") from None
