"""SwiGLU's decode step in one launch: out += down(SiLU(x W_gate^T) * (x W_up^T)) for x of at most 16 rows.

The two skinny GEMMs of `ttt.fused.skinny` (gate|up with the SiLU * up epilogue, then down, split-K, with the
residual epilogue) as one grid. Programs take tickets from an atomic counter in the order they start: the first T1
tickets are gate|up tiles, the rest are down's split-K tiles, ordered by K group. A down tile waits, spinning on
its group's counter, only for the gate|up tiles that produce its K range of the activation. Those hold smaller
tickets, so they are already running and wait on nothing: no deadlock whatever the block scheduler does, and no
need for every program to be resident at once. The interpreter runs programs one after another in ticket order,
so it never spins.

The hope was that down's programs would stream their weights while gate|up's last tiles still run, instead of
after gate|up's tail has drained (every standalone launch sits 3-3.5 us above its bytes' time,
bench/notes/session10.md). Measured on the H200 (bench/notes/session13.md), it does not pay, so it is opt-in
(TTT_FFN_STEP=1): 27.7 us a layer against 25.6 for the two launches, PDL off; 1.3B TTT-Linear decode 1.497 against
1.441 ms a step. The likely reasons, not isolated: all 172 gate|up tiles run at once, so the K groups complete
together at the end and down still starts from cold; and 428 programs at three an SM (gate|up's 60 KB of shared
memory, 64-72 registers, offline sm_90a) leave a second wave of down tiles. An L2 prefetch of down's slice before
the wait made it worse (39.6 us). The tiles, split and K order are those of the two standalone launches, so the
result has the same bits: the tickets and per-group counters are tested scaffolding for a persistent layer kernel.

Counters (int32, `skinny.workspace`): [0] tickets, [1] finished programs, [2, 2 + SPLIT) gate|up tiles done per
K group, then one split-K fixup counter per down tile. The last program to finish zeroes the first three kinds;
each fixup program zeroes its own, so the next call (or graph replay) starts from zero.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ttt.fused import skinny
from ttt.fused.skinny import k_loop, prefetch_slice, row_rstd, split_arrive, split_sum, tile_epilogue
from ttt.ops.common import note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on


@triton.jit
def _ffn_step_kernel(
    x_ptr, wgu_ptr, a_ptr, wd_ptr, o_ptr, ws_ptr, sync_ptr, st_ptr, M, I, K, G, sxm, som, eps,
    BM: tl.constexpr, BN: tl.constexpr, BK1: tl.constexpr, BK2: tl.constexpr, KS2: tl.constexpr,
    SPLIT: tl.constexpr, STAGES: tl.constexpr, RMS: tl.constexpr, GP: tl.constexpr, PREFETCH: tl.constexpr,
    LINES: tl.constexpr, NS: tl.constexpr, PDL: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    T1 = tl.cdiv(I, BN)
    T2 = tl.cdiv(K, BN)
    # Tickets only after the PDL wait: a dependent launch of this same kernel must not draw from counters that
    # this launch has not reset yet.
    pdl_enter(PDL)
    t = tl.atomic_add(sync_ptr, 1, sem="relaxed", scope="gpu")
    rm = tl.arange(0, BM)
    mm = rm < M
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    acc_u = tl.zeros([BM, BN], dtype=tl.float32)
    if t < T1:
        rn = t * BN + tl.arange(0, BN)
        nm = rn < I
        wrow = wgu_ptr + rn.to(tl.int64)[:, None] * K
        acc, acc_u = k_loop(x_ptr, sxm, rm, mm, wrow, I * K, nm, tl.arange(0, BK1), 0, K, acc, acc_u, BK1, 2,
                            STAGES, False, INTERP)  # fmt: skip
        rstd = row_rstd(st_ptr, rm, mm, G, K, GP, eps) if RMS else tl.zeros([BM], dtype=tl.float32)
        om = mm[:, None] & nm[None, :]
        tile_epilogue(acc, acc_u, a_ptr, a_ptr, rstd, rm, rn, om, M, I, t, T1, 2, False, RMS)
        tl.debug_barrier()  # every thread's share of the tile is stored before the group counter says so
        tl.atomic_add(sync_ptr + 2 + (t * BN) // KS2, 1, sem="release", scope="gpu")
    else:
        u = t - T1
        s = u // T2
        n = u % T2
        rn = n * BN + tl.arange(0, BN)
        nm = rn < K
        k_lo = s * KS2
        k_hi = tl.minimum(k_lo + KS2, I)
        if PREFETCH:
            prefetch_slice(wd_ptr, rn, nm, k_lo, k_hi, I, LINES)
        need = tl.cdiv(k_hi - k_lo, BN)
        done = tl.atomic_add(sync_ptr + 2 + s, 0, sem="acquire", scope="gpu")
        while done < need:
            done = tl.atomic_add(sync_ptr + 2 + s, 0, sem="acquire", scope="gpu")
        wrow = wd_ptr + rn.to(tl.int64)[:, None] * I
        acc, acc_u = k_loop(a_ptr, I, rm, mm, wrow, 0, nm, tl.arange(0, BK2), k_lo, k_hi, acc, acc_u, BK2, 1,
                            STAGES, True, INTERP)  # fmt: skip
        om = mm[:, None] & nm[None, :]
        none = tl.zeros([BM], dtype=tl.float32)
        if SPLIT == 1:
            tile_epilogue(acc, acc_u, o_ptr, o_ptr, none, rm, rn, om, M, som, n, T2, 1, False, False)
        else:
            cnt = sync_ptr + 2 + SPLIT + n
            if split_arrive(acc, acc_u, ws_ptr, cnt, s, rm, rn, om, K, BM, SPLIT, 1):
                acc, acc_u = split_sum(ws_ptr, rm, rn, om, K, BM, BN, SPLIT, 1)
                # Every split of this tile waited for its K group, so all gate|up tiles are done: none of them can
                # still be reading x when x is `out` (the residual stream, updated in place).
                tile_epilogue(acc, acc_u, o_ptr, o_ptr, none, rm, rn, om, M, som, n, T2, 1, False, False)
                tl.atomic_xchg(cnt, 0, sem="relaxed", scope="gpu")
    tl.debug_barrier()
    if tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel", scope="gpu") == T1 + T2 * SPLIT - 1:
        rs = tl.arange(0, NS)
        tl.store(sync_ptr + rs, tl.zeros([NS], dtype=tl.int32), mask=rs < 2 + SPLIT)


def enabled() -> bool:
    """TTT_FFN_STEP=1 takes the one grid in the model's decode step (opt-in: measured slower than the two launches,
    see the module docstring)."""
    return os.environ.get("TTT_FFN_STEP", "0") == "1"


def configs(inter: int, hidden: int) -> tuple[skinny.SkinnyConfig, skinny.SkinnyConfig]:
    """The standalone launches' configs for gate|up (2I x hidden) and down (hidden x I)."""
    return (
        skinny.default_config(inter, hidden, skinny.EPI_SILU),
        skinny.default_config(hidden, inter, skinny.EPI_RESIDUAL),
    )


def applies(x: torch.Tensor, w_gu: torch.Tensor, w_down: torch.Tensor) -> bool:
    """Whether `ffn_step` runs for x (..., hidden): the skinny kernel applies to both GEMMs, and their default tiles
    fit the one-grid form (gate|up not split, one tile width)."""
    if not (enabled() and skinny.usable(x, w_gu) and skinny.usable(x, w_down)):
        return False
    c1, c2 = configs(w_down.shape[1], w_down.shape[0])
    return c1.split == 1 and c1.bn == c2.bn and c2.bk % c2.bn == 0


def ffn_step(
    x: torch.Tensor,
    w_gu: torch.Tensor,
    w_down: torch.Tensor,
    out: torch.Tensor,
    rms: skinny.FoldedRMSNorm | None = None,
    cfgs: tuple[skinny.SkinnyConfig, skinny.SkinnyConfig] | None = None,
    pdl: bool | None = None,
) -> torch.Tensor:
    """out + W_down (SiLU(x W_gate^T) * (x W_up^T)), added into `out` in place (x may be `out` itself) and returned.
    x, out (M, hidden) with M <= 16 and unit last stride; w_gu = [W_gate; W_up] (2I, hidden); w_down (hidden, I).
    `rms`: x is normalised by a FoldedRMSNorm, w_gu being the folded weight (as `skinny.linear_silu`). `cfgs`:
    (gate|up, down) tiles, default `configs`; the two share bn, gate|up is not split, and down's bk is a multiple
    of bn, so that a gate|up tile feeds one K group of down. TTT_FFN_PREFETCH=1: down's programs prefetch their
    weight slice into L2 before they wait (A/B runs)."""
    M, K = x.shape
    inter = w_down.shape[1]
    if M > skinny.MAX_ROWS or x.stride(-1) != 1 or out.shape != (M, K) or out.stride(-1) != 1:
        raise ValueError(f"ffn_step takes x and out of the same (M <= {skinny.MAX_ROWS}, K) unit-stride shape, got "
                         f"{tuple(x.shape)} and {tuple(out.shape)}")  # fmt: skip
    if w_gu.shape != (2 * inter, K) or w_down.shape != (K, inter):
        raise ValueError(f"ffn_step needs w_gu (2I, K) and w_down (K, I), got {tuple(w_gu.shape)} and "
                         f"{tuple(w_down.shape)}")  # fmt: skip
    c1, c2 = cfgs or configs(inter, K)
    ks = triton.cdiv(triton.cdiv(inter, c2.split), c2.bk) * c2.bk
    split = triton.cdiv(inter, ks)
    if c1.split != 1 or c1.bn != c2.bn or ks % c1.bn:
        raise ValueError(f"ffn_step tiles: gate|up {c1} and down {c2} do not chain (one bn, gate|up unsplit)")
    st = skinny.rms_stats(rms, M)
    pdl = pdl_on(x) if pdl is None else pdl
    tiles1, tiles2 = triton.cdiv(inter, c1.bn), triton.cdiv(K, c2.bn)
    ws, sync = skinny.workspace(x.device, split * skinny.MAX_ROWS * K, 2 + split + tiles2)
    a = torch.empty(M, inter, dtype=x.dtype, device=x.device)
    G = st.shape[1] if st is not None else 1
    prefetch = x.is_cuda and os.environ.get("TTT_FFN_PREFETCH") == "1"
    note_kernel(f"decode_ffn/one_grid{'+pdl' if pdl else ''}")
    _ffn_step_kernel[(tiles1 + tiles2 * split,)](
        x, w_gu, a, w_down, out, ws, sync, st if st is not None else x, M, inter, K, G, x.stride(0), out.stride(0),
        rms.eps if rms is not None else 0.0,
        BM=skinny.MAX_ROWS, BN=c1.bn, BK1=c1.bk, BK2=c2.bk, KS2=ks, SPLIT=split,
        STAGES=c2.stages, RMS=st is not None, GP=triton.next_power_of_2(G), PREFETCH=prefetch,
        LINES=triton.next_power_of_2(triton.cdiv(ks, 64)), NS=triton.next_power_of_2(2 + split), PDL=pdl,
        INTERP=not x.is_cuda, num_warps=c2.warps, **launch_opts(pdl),
    )  # fmt: skip
    return out
