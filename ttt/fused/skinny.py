"""The decode step's GEMMs: y = x W^T for x of at most 16 rows (one token of each of B <= 16 sequences).

At that size every GEMM is a stream over its weight (bench/notes/session4.md: cuBLAS reached 1.4-3.2 TB/s, most of
the gap being each kernel's ramp-up and tail). This kernel is built for the stream:
- each program first issues L2 prefetches for its whole weight slice, so the memory system has every byte of the
  GEMM requested at once instead of a few pipeline stages a program; under PDL (`ttt.ops.pdl`) this happens
  while the previous kernel of the step still runs, and the loads that follow mostly hit L2;
- split-K for the GEMMs with few output tiles: each program writes its fp32 partial tile, and the last of a tile's
  programs to arrive (an atomic counter, reset by that program) sums them in a fixed order, so the result does not
  depend on arrival order;
- the epilogue the block needs is fused: a residual added in place (one rounding, as `addmm_` with beta = 1) or
  SwiGLU's SiLU(gate) * up from the paired rows of a [W_gate; W_up] weight (rounded as `mlp.silu_mul` does);
- an RMSNorm before the GEMM costs no launch and no pass over A (`FoldedRMSNorm`): its weight is folded into W,
  and each output row is scaled by its 1/rms in the epilogue, from the per-tile sums of squares that the residual
  GEMM producing x wrote (`sumsq`). Both other ways measured slower on the H200: recomputing the row statistics
  in every consumer program (session 10: +0.56 ms a 1.3B step, each program re-read the rows before its first K
  step), and normalising A as it is loaded from producer statistics (session 11: the per-K-step transform costs
  more than the launch it saves).
References: F.linear, `out.addmm_(x, W.t())` and `mlp.silu_mul(F.linear(x, W_gu))`; `linear` / `linear_silu` fall
back to them where this kernel does not apply (more than 16 rows, a 32-bit dtype, CPU without the interpreter, or
TTT_SKINNY=0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ttt.fused._jit import rnd, sigmoid
from ttt.ops.common import note_kernel
from ttt.ops.pdl import launch_opts, pdl_enter, pdl_on, prefetch_l2

MAX_ROWS = 16
EPI_NONE, EPI_RESIDUAL, EPI_SILU = 0, 1, 2


def experimental(name: str) -> bool:
    """Opt-in decode variants kept for A/B runs: TTT_SKINNY_PRELOAD=1 (static_weights honoured; measured neutral to
    slightly slower, bench/notes/session10.md)."""
    return os.environ.get(f"TTT_SKINNY_{name}") == "1"


@dataclass(frozen=True)
class SkinnyConfig:
    """Tile (bn output columns, bk a K step), split-K factor, pipeline stages, warps, L2 prefetch of the slice."""

    bn: int = 32
    bk: int = 128
    split: int = 1
    stages: int = 4
    warps: int = 4
    prefetch: bool = False


# L2 prefetch of a program's whole slice pays only where the weight is small enough to sit in L2 while it waits: the
# o_proj (8 MB) under PDL, 5.6 vs 6.1-6.6 us; at 22-45 MB it halved the bandwidth (session-10 screen, H200).
PREFETCH_MAX_BYTES = 16 << 20


def default_config(n: int, k: int, epi: int) -> SkinnyConfig:
    """The session-10 screen's best tile at M = 16 for each 1.3B decode GEMM (bench/notes/session10/run1): 32
    columns a program, split-K only where that leaves too few programs to stream (down: 64 tiles, split 4)."""
    rows = 2 * n if epi == EPI_SILU else n
    if rows * k * 2 <= PREFETCH_MAX_BYTES:  # TTT_SKINNY_PREFETCH=0: the same tile without the prefetch (A/B runs)
        pf = os.environ.get("TTT_SKINNY_PREFETCH", "1") != "0"
        return SkinnyConfig(bn=32, bk=256 if k % 256 == 0 else 128, split=1, prefetch=pf)
    tiles = triton.cdiv(n, 32)
    split = max(1, min(8, 256 // max(tiles, 1), triton.cdiv(k, 512)))
    bk = 256 if k % 256 == 0 and epi != EPI_SILU and split == 1 else 128
    return SkinnyConfig(bn=32, bk=bk, split=split, prefetch=False)


def usable(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether `linear` takes this kernel for x (..., K) and w (N, K)."""
    rows = x.numel() // max(x.shape[-1], 1)
    return (
        os.environ.get("TTT_SKINNY", "1") != "0"
        and 0 < rows <= MAX_ROWS
        and x.dtype in (torch.bfloat16, torch.float16)
        and w.dtype == x.dtype
        and w.is_contiguous()
        and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")
    )


@triton.jit
def prefetch_slice(w_ptr, rows, rmask, k_lo, k_hi, K, LINES: tl.constexpr):
    # 64 16-bit elements to a 128-byte line; masked lanes re-prefetch the first line (harmless) instead of branching.
    col = k_lo + tl.arange(0, LINES) * 64
    m = rmask[:, None] & (col < k_hi)[None, :]
    p = w_ptr + rows.to(tl.int64)[:, None] * K + col[None, :]
    prefetch_l2(tl.where(m, p, w_ptr))


@triton.jit
def _dot_t(x, w, acc, INTERP: tl.constexpr):
    """acc + x w^T. The interpreter (triton 3.9) returns garbage for 16-bit operands straight from a load; it gets
    them widened to fp32 with exact products instead (bf16 x bf16 is exact in fp32), the GPU the bf16 MMA."""
    if INTERP:
        return tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)), acc, input_precision="ieee")
    else:
        return tl.dot(x, tl.trans(w), acc)


@triton.jit
def tile_epilogue(acc, acc_u, o_ptr, ss_ptr, rstd, rm, rn, om, M, som, pid_n, tiles, EPI: tl.constexpr,
                  SUMSQ: tl.constexpr, RMS: tl.constexpr):  # fmt: skip
    optr = o_ptr + rm[:, None] * som + rn[None, :]
    if RMS:
        acc = acc * rstd[:, None]
        acc_u = acc_u * rstd[:, None]
    if EPI == 1:
        y = acc + tl.load(optr, mask=om, other=0.0).to(tl.float32)
    elif EPI == 2:
        g = rnd(acc, o_ptr)
        y = rnd(g * sigmoid(g), o_ptr) * rnd(acc_u, o_ptr)
    else:
        y = acc
    tl.store(optr, y.to(o_ptr.dtype.element_ty), mask=om)
    if SUMSQ:
        # this tile's share of each row's sum of squares, of the values as stored: the next RMSNorm's statistics
        yr = tl.where(om, rnd(y, o_ptr), 0.0)
        tl.store(ss_ptr + rm * tiles + pid_n, tl.sum(yr * yr, axis=1), mask=rm < M)


@triton.jit
def row_rstd(st_ptr, rm, mm, G, K, GP: tl.constexpr, eps):
    """1/sqrt(mean square + eps) of each of x's full rows, from the sums of squares its producer wrote over G column
    groups."""
    rg = tl.arange(0, GP)
    ss = tl.load(st_ptr + rm[:, None] * G + rg[None, :], mask=mm[:, None] & (rg < G)[None, :], other=0.0)
    return 1.0 / tl.sqrt(tl.sum(ss, axis=1) / K + eps)


@triton.jit
def k_loop(x_ptr, sxm, rm, mm, wrow, up_off, nm, rk, k_start, k_hi, acc, acc_u, BK: tl.constexpr, EPI: tl.constexpr,
           STAGES: tl.constexpr, CG: tl.constexpr, INTERP: tl.constexpr):  # fmt: skip
    """acc + x[:, k_start:k_hi] W^T over the tile's weight rows `wrow` (acc_u too, from the rows `up_off` further on,
    for EPI_SILU). CG: x was written by other programs of the same launch, so it is read past this SM's L1."""
    for k0 in tl.range(k_start, k_hi, BK, num_stages=STAGES):
        kk = k0 + rk
        km = kk < k_hi
        xp = x_ptr + rm[:, None] * sxm + kk[None, :]
        if CG:
            x = tl.load(xp, mask=mm[:, None] & km[None, :], other=0.0, cache_modifier=".cg")
        else:
            x = tl.load(xp, mask=mm[:, None] & km[None, :], other=0.0)
        wm = nm[:, None] & km[None, :]
        acc = _dot_t(x, tl.load(wrow + kk[None, :], mask=wm, other=0.0), acc, INTERP)
        if EPI == 2:
            acc_u = _dot_t(x, tl.load(wrow + up_off + kk[None, :], mask=wm, other=0.0), acc_u, INTERP)
    return acc, acc_u


@triton.jit
def split_arrive(acc, acc_u, ws_ptr, cnt_ptr, pid_k, rm, rn, om, N, BM: tl.constexpr, SPLIT: tl.constexpr,
                 EPI: tl.constexpr):  # fmt: skip
    """Split-K: writes this program's fp32 partial tile and counts it in at `cnt_ptr`; returns whether this program
    arrived last (it then sums the partials, `split_sum`, runs the epilogue and resets the counter)."""
    part = ws_ptr + (pid_k * BM + rm)[:, None] * N + rn[None, :]
    tl.store(part, acc, mask=om)
    if EPI == 2:
        tl.store(part + SPLIT * BM * N, acc_u, mask=om)
    tl.debug_barrier()  # every thread's partial is written before the counter says so
    return tl.atomic_add(cnt_ptr, 1, sem="acq_rel", scope="gpu") == SPLIT - 1


@triton.jit
def split_sum(ws_ptr, rm, rn, om, N, BM: tl.constexpr, BN: tl.constexpr, SPLIT: tl.constexpr, EPI: tl.constexpr):
    """The SPLIT partial tiles summed in split order, so the result does not depend on arrival order."""
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    acc_u = tl.zeros([BM, BN], dtype=tl.float32)
    first = ws_ptr + rm[:, None] * N + rn[None, :]
    for s in tl.static_range(SPLIT):
        # .cg: the partials were written by other SMs; never read them through this SM's L1.
        acc += tl.load(first + s * BM * N, mask=om, other=0.0, cache_modifier=".cg")
        if EPI == 2:
            acc_u += tl.load(first + SPLIT * BM * N + s * BM * N, mask=om, other=0.0, cache_modifier=".cg")
    return acc, acc_u


@triton.jit
def _skinny_kernel(
    x_ptr, w_ptr, o_ptr, ws_ptr, cnt_ptr, st_ptr, ss_ptr, M, N, K, G, sxm, som, eps,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KS: tl.constexpr, SPLIT: tl.constexpr,
    EPI: tl.constexpr, STAGES: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr, PDL: tl.constexpr,
    PRELOAD: tl.constexpr, RMS: tl.constexpr, GP: tl.constexpr, SUMSQ: tl.constexpr, INTERP: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rn = pid_n * BN + tl.arange(0, BN)
    nm = rn < N
    k_lo = pid_k * KS
    k_hi = tl.minimum(k_lo + KS, K)
    rk = tl.arange(0, BK)
    wrow = w_ptr + rn.to(tl.int64)[:, None] * K
    if PREFETCH:
        prefetch_slice(w_ptr, rn, nm, k_lo, k_hi, K, LINES)
        if EPI == 2:
            prefetch_slice(w_ptr, rn + N, nm, k_lo, k_hi, K, LINES)
    if PRELOAD:
        # The caller vouches that the kernel launched just before does not write w (true of a decode step's
        # weights): the first K step's weight tile is loaded before the PDL wait, while that kernel still runs.
        wm0 = nm[:, None] & (k_lo + rk < k_hi)[None, :]
        w0 = tl.load(wrow + (k_lo + rk)[None, :], mask=wm0, other=0.0)
        if EPI == 2:
            w0u = tl.load(wrow + N * K + (k_lo + rk)[None, :], mask=wm0, other=0.0)
    pdl_enter(PDL)
    rm = tl.arange(0, BM)
    mm = rm < M
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    acc_u = tl.zeros([BM, BN], dtype=tl.float32)
    k_start = k_lo
    if PRELOAD:
        kk = k_lo + rk
        km = kk < k_hi
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        acc = _dot_t(x, w0, acc, INTERP)
        if EPI == 2:
            acc_u = _dot_t(x, w0u, acc_u, INTERP)
        k_start = k_lo + BK
    acc, acc_u = k_loop(x_ptr, sxm, rm, mm, wrow, N * K, nm, rk, k_start, k_hi, acc, acc_u, BK, EPI, STAGES, False,
                        INTERP)  # fmt: skip
    om = mm[:, None] & nm[None, :]
    tiles = tl.num_programs(0)
    if SPLIT == 1:
        rstd = row_rstd(st_ptr, rm, mm, G, K, GP, eps) if RMS else tl.zeros([BM], dtype=tl.float32)
        tile_epilogue(acc, acc_u, o_ptr, ss_ptr, rstd, rm, rn, om, M, som, pid_n, tiles, EPI, SUMSQ, RMS)
    else:
        if split_arrive(acc, acc_u, ws_ptr, cnt_ptr + pid_n, pid_k, rm, rn, om, N, BM, SPLIT, EPI):
            acc, acc_u = split_sum(ws_ptr, rm, rn, om, N, BM, BN, SPLIT, EPI)
            rstd = row_rstd(st_ptr, rm, mm, G, K, GP, eps) if RMS else tl.zeros([BM], dtype=tl.float32)
            tile_epilogue(acc, acc_u, o_ptr, ss_ptr, rstd, rm, rn, om, M, som, pid_n, tiles, EPI, SUMSQ, RMS)
            tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed", scope="gpu")  # ready for the next call


_WORKSPACE: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def workspace(device: torch.device, floats: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 partials and zeroed tile counters, kept per device and size (floats = 0: counters only, for other
    last-arriver kernels, a key no GEMM uses). A launch's kernel leaves its counters at zero again; launches on one
    stream never overlap on them (under PDL a kernel touches them only after gdc_wait). The first call of each size
    should come before any CUDA-graph capture (decode warm-up does this)."""
    key = (str(device), floats, tiles)
    if key not in _WORKSPACE:
        _WORKSPACE[key] = (
            torch.empty(floats, dtype=torch.float32, device=device),
            torch.zeros(tiles, dtype=torch.int32, device=device),
        )
    return _WORKSPACE[key]


@dataclass(frozen=True)
class FoldedRMSNorm:
    """RMSNorm(x) W^T computed as rstd * (x W'^T) with W' = W diag(weight) (`fold_rms_weight`, a derived copy the
    caller keeps): the GEMM reads x as it is and scales each output row by its 1/sqrt(mean square + eps) in the
    epilogue, from `stats`, the (M, G) fp32 sums of squares over G equal column groups that x's producer wrote (an
    EPI_RESIDUAL GEMM with `sumsq`). Against `ttt.layer.RMSNorm` then the GEMM, this skips the two bf16 roundings of
    the normalised rows and rounds the weight product once instead: bf16-level noise either way."""

    stats: torch.Tensor
    eps: float

    def rstd(self, k: int) -> torch.Tensor:
        return torch.rsqrt(self.stats.sum(-1) / k + self.eps)


def rms_stats(rms: FoldedRMSNorm | None, M: int) -> torch.Tensor | None:
    """rms.stats (None without a norm), checked to be what the kernels index: contiguous fp32 (M, G)."""
    st = rms.stats if rms is not None else None
    if st is not None and (st.dtype != torch.float32 or not st.is_contiguous() or st.dim() != 2 or st.shape[0] != M):
        raise ValueError(f"FoldedRMSNorm needs contiguous fp32 (M, G) stats with M = {M}, got "
                         f"{(tuple(st.shape), st.dtype)}")  # fmt: skip
    return st


def fold_rms_weight(w: torch.Tensor, norm_weight: torch.Tensor) -> torch.Tensor:
    """W diag(norm_weight), rounded once to w's dtype: the GEMM weight a FoldedRMSNorm needs."""
    return (w.float() * norm_weight.float()[None, :]).to(w.dtype)


def row_partials(x: torch.Tensor, groups: int) -> torch.Tensor:
    """FoldedRMSNorm.stats for x (M, K) over `groups` equal column groups, fp32 (the reference for what an
    EPI_RESIDUAL GEMM writes with `sumsq`)."""
    M, K = x.shape
    xg = x.float().view(M, groups, K // groups)
    return (xg * xg).sum(-1)


def sumsq_groups(n: int, k: int) -> int:
    """G of the (M, G) sums of squares an EPI_RESIDUAL GEMM of w (n, k) writes with `sumsq` (one per output tile)."""
    return triton.cdiv(n, default_config(n, k, EPI_RESIDUAL).bn)


def skinny_gemm(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    *,
    epi: int = EPI_NONE,
    rms: FoldedRMSNorm | None = None,
    sumsq: torch.Tensor | None = None,
    static_weights: bool = False,
    cfg: SkinnyConfig | None = None,
    pdl: bool | None = None,
) -> torch.Tensor:
    """x (M, K) with M <= 16, w (N', K) contiguous, 16-bit. EPI_NONE: returns x w^T (M, N'). EPI_RESIDUAL: adds
    x w^T into `out` (M, N') in place and returns it; with `sumsq` (M, G) fp32, G = the output tiles
    (`sumsq_groups`), also writes each tile's share of each output row's sum of squares (the next RMSNorm's
    `FoldedRMSNorm.stats`). EPI_SILU: w is [W_gate; W_up] (2N, K); returns SiLU(x W_gate^T) * (x W_up^T) (M, N).
    `rms`: x W^T is of RMSNorm(x), w being the folded weight (FoldedRMSNorm). `static_weights`: the kernel launched
    just before does not write w, so under PDL the first weight tile may be loaded before the wait (true of every
    GEMM in a decode step; done only with TTT_SKINNY_PRELOAD=1, see `experimental`). pdl None: on where
    `ttt.ops.pdl.pdl_on` says."""
    M, K = x.shape
    if M > MAX_ROWS or x.stride(-1) != 1:
        raise ValueError(f"skinny_gemm takes at most {MAX_ROWS} unit-stride rows, got x of shape {tuple(x.shape)}")
    N = w.shape[0] // 2 if epi == EPI_SILU else w.shape[0]
    if epi == EPI_RESIDUAL:
        if out is None or out.shape != (M, N) or out.stride(-1) != 1:
            raise ValueError("skinny_gemm(epi=EPI_RESIDUAL) needs out of shape (M, N) with unit last stride")
    else:
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    cfg = cfg or default_config(N, K, epi)
    tiles = triton.cdiv(N, cfg.bn)
    if sumsq is not None and (epi != EPI_RESIDUAL or sumsq.shape != (M, tiles) or sumsq.dtype != torch.float32):
        raise ValueError(f"skinny_gemm sumsq must be fp32 (M, tiles) = {(M, tiles)} with EPI_RESIDUAL, got "
                         f"{tuple(sumsq.shape)} {sumsq.dtype} with epi {epi}")  # fmt: skip
    st = rms_stats(rms, M)
    pdl = pdl_on(x) if pdl is None else pdl
    preload = pdl and static_weights and experimental("PRELOAD")
    prefetch = cfg.prefetch and x.is_cuda
    ks = triton.cdiv(triton.cdiv(K, cfg.split), cfg.bk) * cfg.bk
    split = triton.cdiv(K, ks)
    ws, cnt = workspace(x.device, split * MAX_ROWS * N * (2 if epi == EPI_SILU else 1), tiles) if split > 1 else (x, x)
    G = st.shape[1] if st is not None else 1
    note_kernel(f"decode_gemm/skinny{'+pdl' if pdl else ''}")
    _skinny_kernel[(tiles, split)](
        x, w, out, ws, cnt, st if st is not None else x, sumsq if sumsq is not None else x, M, N, K, G,
        x.stride(0), out.stride(0), rms.eps if rms is not None else 0.0,
        BM=MAX_ROWS, BN=cfg.bn, BK=cfg.bk, KS=ks, SPLIT=split, EPI=epi, STAGES=cfg.stages, PREFETCH=prefetch,
        LINES=triton.next_power_of_2(triton.cdiv(ks, 64)), PDL=pdl, PRELOAD=preload, RMS=rms is not None,
        GP=triton.next_power_of_2(G), SUMSQ=sumsq is not None, INTERP=not x.is_cuda,
        num_warps=cfg.warps, **launch_opts(pdl),
    )  # fmt: skip
    return out


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    static_weights: bool = False,
    sumsq: torch.Tensor | None = None,
) -> torch.Tensor:
    """F.linear(x, w) for x (..., K), or with `out` (x's shape but N columns, contiguous) out + F.linear(x, w) added
    into out in place. The skinny kernel where `usable` (`static_weights` and `sumsq`, with `out` only, as in
    `skinny_gemm`), else the PyTorch/cuBLAS reference, which fills `sumsq` from out by `row_partials`."""
    K = x.shape[-1]
    if sumsq is not None and out is None:
        raise ValueError("linear(sumsq=...) needs out: the sums of squares are of the residual stream it adds into")
    if not usable(x, w):
        note_kernel("decode_gemm/cublas")
        if out is None:
            return F.linear(x, w)
        out.view(-1, w.shape[0]).addmm_(x.reshape(-1, K), w.t())
        if sumsq is not None:
            sumsq.copy_(row_partials(out.view(-1, w.shape[0]), sumsq.shape[1]))
        return out
    x2 = x.reshape(-1, K)
    if out is None:
        return skinny_gemm(x2, w, static_weights=static_weights).view(*x.shape[:-1], w.shape[0])
    skinny_gemm(x2, w, out.view(-1, w.shape[0]), epi=EPI_RESIDUAL, sumsq=sumsq, static_weights=static_weights)
    return out


def linear_silu(
    x: torch.Tensor, w_gu: torch.Tensor, rms: FoldedRMSNorm | None = None, static_weights: bool = False
) -> torch.Tensor:
    """SiLU(x W_gate^T) * (x W_up^T) for w_gu = [W_gate; W_up] (2I, K): x (..., K) -> (..., I); with `rms`, of
    RMSNorm(x), w_gu being the folded weight (FoldedRMSNorm); `static_weights` as in `linear`."""
    K = x.shape[-1]
    if not usable(x, w_gu):
        from ttt.fused.mlp import silu_mul

        note_kernel("decode_gemm/cublas")
        y = F.linear(x, w_gu)
        if rms is not None:
            y = (y.float() * rms.rstd(K).view(*y.shape[:-1], 1)).to(y.dtype)
        return silu_mul(y)
    a = skinny_gemm(x.reshape(-1, K), w_gu, epi=EPI_SILU, rms=rms, static_weights=static_weights)
    return a.view(*x.shape[:-1], w_gu.shape[0] // 2)
