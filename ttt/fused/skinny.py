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
- the row norm before a GEMM is applied as it loads A (`RowNorm`), from row statistics the producer kernel wrote
  (a few floats a row), not recomputed: the residual GEMM writes its tiles' sums of squares for the next RMSNorm,
  the fused TTT-Linear step its heads' LayerNorm partials. Recomputing them in each consumer program (session 10)
  cost 0.56 ms a 1.3B step: every program re-read the whole rows from L2 before its first K step.
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
    if rows * k * 2 <= PREFETCH_MAX_BYTES:
        return SkinnyConfig(bn=32, bk=256 if k % 256 == 0 else 128, split=1, prefetch=True)
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
def _prefetch_slice(w_ptr, rows, rmask, k_lo, k_hi, K, LINES: tl.constexpr):
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
def _epilogue(acc, acc_u, o_ptr, ss_ptr, rm, rn, om, M, som, pid_n, tiles, EPI: tl.constexpr, SUMSQ: tl.constexpr):
    optr = o_ptr + rm[:, None] * som + rn[None, :]
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
def _row_stats(st_ptr, rm, mm, G, K, GP: tl.constexpr, NORM: tl.constexpr, eps):
    """(mean, 1/sqrt(var + eps)) of each of x's full rows from the partials its producer wrote over G equal column
    groups: for a LayerNorm (NORM 2) each group's (mean, sum of squared deviations), combined as Chan et al.'s
    parallel variance; for an RMSNorm (NORM 1, mean 0) each group's sum of squares."""
    rg = tl.arange(0, GP)
    m = mm[:, None] & (rg < G)[None, :]
    if NORM == 1:
        ss = tl.load(st_ptr + rm[:, None] * G + rg[None, :], mask=m, other=0.0)
        return tl.zeros([rm.shape[0]], dtype=tl.float32), 1.0 / tl.sqrt(tl.sum(ss, axis=1) / K + eps)
    else:
        part = st_ptr + (rm[:, None] * G + rg[None, :]) * 2
        mg = tl.load(part, mask=m, other=0.0)
        mu = tl.sum(mg, axis=1) / G
        dev = tl.where(m, mg - mu[:, None], 0.0)
        m2 = tl.sum(tl.load(part + 1, mask=m, other=0.0), axis=1) + (K // G) * tl.sum(dev * dev, axis=1)
        return mu, 1.0 / tl.sqrt(m2 / K + eps)


@triton.jit
def _normed(x, x_ptr, kk, km, rm, mm, mu, rstd, nw_ptr, nb_ptr, g_ptr, sgm, NORM: tl.constexpr,
            GATE: tl.constexpr):  # fmt: skip
    """The A operand a chunk of x becomes, rounded where the reference kernels round: RMSNorm as `norm.rmsnorm`
    (w * dtype(x * rstd)); LayerNorm, then times the scale (GELU_tanh(gate) as stored), as `ttt_io.epilogue`."""
    xf = x.to(tl.float32)
    w = tl.load(nw_ptr + kk, mask=km, other=0.0).to(tl.float32)[None, :]
    if NORM == 1:
        y = rnd(w * rnd(xf * rstd[:, None], x_ptr), x_ptr)
    else:
        b = tl.load(nb_ptr + kk, mask=km, other=0.0).to(tl.float32)[None, :]
        y = rnd((xf - mu[:, None]) * rstd[:, None] * w + b, x_ptr)
        if GATE:
            g = tl.load(g_ptr + rm[:, None] * sgm + kk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
            y = rnd(g.to(tl.float32) * y, x_ptr)
    return y.to(x.dtype)


@triton.jit
def _skinny_kernel(
    x_ptr, w_ptr, o_ptr, ws_ptr, cnt_ptr, nw_ptr, nb_ptr, g_ptr, st_ptr, ss_ptr, M, N, K, G, sxm, som, sgm, eps,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, KS: tl.constexpr, SPLIT: tl.constexpr,
    EPI: tl.constexpr, STAGES: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr, PDL: tl.constexpr,
    PRELOAD: tl.constexpr, NORM: tl.constexpr, GATE: tl.constexpr, GP: tl.constexpr, SUMSQ: tl.constexpr,
    INTERP: tl.constexpr,
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
        _prefetch_slice(w_ptr, rn, nm, k_lo, k_hi, K, LINES)
        if EPI == 2:
            _prefetch_slice(w_ptr, rn + N, nm, k_lo, k_hi, K, LINES)
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
    mu = tl.zeros([BM], dtype=tl.float32)
    rstd = tl.zeros([BM], dtype=tl.float32)
    if NORM != 0:
        mu, rstd = _row_stats(st_ptr, rm, mm, G, K, GP, NORM, eps)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    acc_u = tl.zeros([BM, BN], dtype=tl.float32)
    k_start = k_lo
    if PRELOAD:
        kk = k_lo + rk
        km = kk < k_hi
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        if NORM != 0:
            x = _normed(x, x_ptr, kk, km, rm, mm, mu, rstd, nw_ptr, nb_ptr, g_ptr, sgm, NORM, GATE)
        acc = _dot_t(x, w0, acc, INTERP)
        if EPI == 2:
            acc_u = _dot_t(x, w0u, acc_u, INTERP)
        k_start = k_lo + BK
    for k0 in tl.range(k_start, k_hi, BK, num_stages=STAGES):
        kk = k0 + rk
        km = kk < k_hi
        x = tl.load(x_ptr + rm[:, None] * sxm + kk[None, :], mask=mm[:, None] & km[None, :], other=0.0)
        if NORM != 0:
            x = _normed(x, x_ptr, kk, km, rm, mm, mu, rstd, nw_ptr, nb_ptr, g_ptr, sgm, NORM, GATE)
        wm = nm[:, None] & km[None, :]
        acc = _dot_t(x, tl.load(wrow + kk[None, :], mask=wm, other=0.0), acc, INTERP)
        if EPI == 2:
            acc_u = _dot_t(x, tl.load(wrow + N * K + kk[None, :], mask=wm, other=0.0), acc_u, INTERP)
    om = mm[:, None] & nm[None, :]
    if SPLIT == 1:
        _epilogue(acc, acc_u, o_ptr, ss_ptr, rm, rn, om, M, som, pid_n, tl.num_programs(0), EPI, SUMSQ)
    else:
        plane = SPLIT * BM * N
        part = ws_ptr + (pid_k * BM + rm)[:, None] * N + rn[None, :]
        tl.store(part, acc, mask=om)
        if EPI == 2:
            tl.store(part + plane, acc_u, mask=om)
        tl.debug_barrier()  # every thread's partial is written before the counter says so
        arrived = tl.atomic_add(cnt_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            acc = tl.zeros([BM, BN], dtype=tl.float32)
            acc_u = tl.zeros([BM, BN], dtype=tl.float32)
            first = ws_ptr + rm[:, None] * N + rn[None, :]
            for s in tl.static_range(SPLIT):
                # .cg: the partials were written by other SMs; never read them through this SM's L1.
                acc += tl.load(first + s * BM * N, mask=om, other=0.0, cache_modifier=".cg")
                if EPI == 2:
                    acc_u += tl.load(first + plane + s * BM * N, mask=om, other=0.0, cache_modifier=".cg")
            _epilogue(acc, acc_u, o_ptr, ss_ptr, rm, rn, om, M, som, pid_n, tl.num_programs(0), EPI, SUMSQ)
            tl.atomic_xchg(cnt_ptr + pid_n, 0, sem="relaxed", scope="gpu")  # ready for the next call


_WORKSPACE: dict[tuple[str, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _workspace(device: torch.device, floats: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 partials and zeroed tile counters, kept per device and size. A launch's kernel leaves its counters at zero
    again; launches on one stream never overlap on them (under PDL a kernel touches them only after gdc_wait). The
    first call of each size should come before any CUDA-graph capture (decode warm-up does this)."""
    key = (str(device), floats, tiles)
    if key not in _WORKSPACE:
        _WORKSPACE[key] = (
            torch.empty(floats, dtype=torch.float32, device=device),
            torch.zeros(tiles, dtype=torch.int32, device=device),
        )
    return _WORKSPACE[key]


@dataclass(frozen=True)
class RowNorm:
    """A normalisation of x's rows that the kernel applies as it loads its A operand, from row statistics its
    producer wrote (so neither the normalised rows nor a row-reduction pass go through memory): 'rms' is
    `ttt.layer.RMSNorm` (weight, eps); 'ln' is a LayerNorm (weight, bias, eps), then times `scale` (M, K) when given
    (the TTT layer's post-norm, times its GELU_tanh(gate) as stored). `stats` holds the row partials over G equal
    column groups, fp32: (M, G) sums of squares for 'rms' (what an EPI_RESIDUAL GEMM writes with `sumsq`), (M, G, 2)
    (group mean, sum of squared deviations from it) for 'ln' (what the fused TTT-Linear decode step writes, a group
    a head). `row_partials` computes either from x."""

    kind: str
    weight: torch.Tensor
    eps: float
    bias: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    stats: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The reference: what the PyTorch layers compute (and the fallback where the kernel does not apply)."""
        if self.kind == "rms":
            from ttt.fused.norm import rmsnorm

            return rmsnorm(x, self.weight, self.eps)
        y = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return y if self.scale is None else self.scale * y


_NORM_KINDS = {"rms": 1, "ln": 2}


def row_partials(kind: str, x: torch.Tensor, groups: int) -> torch.Tensor:
    """The `RowNorm.stats` layout for x (M, K) over `groups` equal column groups, in fp32 (the reference for what the
    producer kernels write)."""
    M, K = x.shape
    xg = x.float().view(M, groups, K // groups)
    if kind == "rms":
        return (xg * xg).sum(-1)
    mean = xg.mean(-1)
    return torch.stack([mean, ((xg - mean[..., None]) ** 2).sum(-1)], dim=-1)


def sumsq_groups(n: int, k: int) -> int:
    """G of the (M, G) sums of squares an EPI_RESIDUAL GEMM of w (n, k) writes with `sumsq` (one per output tile)."""
    return triton.cdiv(n, default_config(n, k, EPI_RESIDUAL).bn)


def skinny_gemm(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    *,
    epi: int = EPI_NONE,
    norm: RowNorm | None = None,
    sumsq: torch.Tensor | None = None,
    static_weights: bool = False,
    cfg: SkinnyConfig | None = None,
    pdl: bool | None = None,
) -> torch.Tensor:
    """x (M, K) with M <= 16, w (N', K) contiguous, 16-bit. EPI_NONE: returns x w^T (M, N'). EPI_RESIDUAL: adds
    x w^T into `out` (M, N') in place and returns it; with `sumsq` (M, G) fp32, G = the output tiles
    (`sumsq_groups`), also writes each tile's share of each output row's sum of squares (the next RMSNorm's
    `RowNorm.stats`). EPI_SILU: w is [W_gate; W_up] (2N, K); returns SiLU(x W_gate^T) * (x W_up^T) (M, N). `norm`:
    x's rows normalised first (RowNorm, with its stats). `static_weights`: the kernel launched just before does not
    write w, so under PDL the first weight tile may be loaded before the wait (true of every GEMM in a decode step;
    done only with TTT_SKINNY_PRELOAD=1, see `experimental`). pdl None: on where `ttt.ops.pdl.pdl_on` says."""
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
    G = 1
    if norm is not None:
        if norm.kind not in _NORM_KINDS:
            raise ValueError(f"RowNorm kind {norm.kind!r}: expected one of {sorted(_NORM_KINDS)}")
        st = norm.stats
        if st is None or st.dtype != torch.float32 or not st.is_contiguous() or st.shape[0] != M:
            raise ValueError(f"RowNorm needs contiguous fp32 stats of {M} rows, got "
                             f"{None if st is None else (tuple(st.shape), st.dtype)}")  # fmt: skip
        G = st.shape[1]
        if K % G or st.shape[2:] != ((2,) if norm.kind == "ln" else ()):
            raise ValueError(f"RowNorm {norm.kind!r} stats {tuple(st.shape)} do not split K = {K} into equal groups")
    scale = norm.scale if norm is not None else None
    if scale is not None and (scale.shape != (M, K) or scale.stride(-1) != 1):
        raise ValueError(f"RowNorm scale must be (M, K) = {(M, K)} with unit last stride, got {tuple(scale.shape)}")
    pdl = pdl_on(x) if pdl is None else pdl
    preload = pdl and static_weights and experimental("PRELOAD")
    prefetch = cfg.prefetch and x.is_cuda
    ks = triton.cdiv(triton.cdiv(K, cfg.split), cfg.bk) * cfg.bk
    split = triton.cdiv(K, ks)
    ws, cnt = _workspace(x.device, split * MAX_ROWS * N * (2 if epi == EPI_SILU else 1), tiles) if split > 1 else (x, x)
    nw = norm.weight if norm is not None else x
    nb = norm.bias if norm is not None and norm.bias is not None else nw
    note_kernel(f"decode_gemm/skinny{'+pdl' if pdl else ''}")
    _skinny_kernel[(tiles, split)](
        x, w, out, ws, cnt, nw, nb, scale if scale is not None else x, norm.stats if norm is not None else x,
        sumsq if sumsq is not None else x, M, N, K, G, x.stride(0), out.stride(0),
        scale.stride(0) if scale is not None else 0, norm.eps if norm is not None else 0.0,
        BM=MAX_ROWS, BN=cfg.bn, BK=cfg.bk, KS=ks, SPLIT=split, EPI=epi, STAGES=cfg.stages, PREFETCH=prefetch,
        LINES=triton.next_power_of_2(triton.cdiv(ks, 64)), PDL=pdl, PRELOAD=preload,
        NORM=_NORM_KINDS[norm.kind] if norm is not None else 0, GATE=scale is not None,
        GP=triton.next_power_of_2(G), SUMSQ=sumsq is not None, INTERP=not x.is_cuda,
        num_warps=cfg.warps, **launch_opts(pdl),
    )  # fmt: skip
    return out


def linear(
    x: torch.Tensor,
    w: torch.Tensor,
    out: torch.Tensor | None = None,
    norm: RowNorm | None = None,
    static_weights: bool = False,
    sumsq: torch.Tensor | None = None,
) -> torch.Tensor:
    """F.linear(x, w) for x (..., K), or with `out` (x's shape but N columns, contiguous) out + F.linear(x, w) added
    into out in place; with `norm`, of norm.apply(x) (its scale shaped like x). The skinny kernel where `usable`
    (`static_weights` and `sumsq`, with `out` only, as in `skinny_gemm`), else the PyTorch/cuBLAS reference, which
    fills `sumsq` from out by `row_partials`."""
    K = x.shape[-1]
    if sumsq is not None and out is None:
        raise ValueError("linear(sumsq=...) needs out: the sums of squares are of the residual stream it adds into")
    if not usable(x, w):
        note_kernel("decode_gemm/cublas")
        if norm is not None:
            x = norm.apply(x)
        if out is None:
            return F.linear(x, w)
        out.view(-1, w.shape[0]).addmm_(x.reshape(-1, K), w.t())
        if sumsq is not None:
            sumsq.copy_(row_partials("rms", out.view(-1, w.shape[0]), sumsq.shape[1]))
        return out
    x2 = x.reshape(-1, K)
    if norm is not None and norm.scale is not None:
        norm = RowNorm(norm.kind, norm.weight, norm.eps, norm.bias, norm.scale.reshape(-1, K), norm.stats)
    kw = dict(norm=norm, static_weights=static_weights)
    if out is None:
        return skinny_gemm(x2, w, **kw).view(*x.shape[:-1], w.shape[0])
    skinny_gemm(x2, w, out.view(-1, w.shape[0]), epi=EPI_RESIDUAL, sumsq=sumsq, **kw)
    return out


def linear_silu(
    x: torch.Tensor, w_gu: torch.Tensor, norm: RowNorm | None = None, static_weights: bool = False
) -> torch.Tensor:
    """SiLU(x W_gate^T) * (x W_up^T) for w_gu = [W_gate; W_up] (2I, K): x (..., K) -> (..., I); `norm` and
    `static_weights` as in `linear`."""
    K = x.shape[-1]
    if not usable(x, w_gu):
        from ttt.fused.mlp import silu_mul

        note_kernel("decode_gemm/cublas")
        return silu_mul(F.linear(norm.apply(x) if norm is not None else x, w_gu))
    a = skinny_gemm(x.reshape(-1, K), w_gu, epi=EPI_SILU, norm=norm, static_weights=static_weights)
    return a.view(*x.shape[:-1], w_gu.shape[0] // 2)
