"""The decode step's skinny GEMM kernel (ttt/fused/skinny.py) and the PDL chain (ttt/ops/pdl.py).

Reference: the float64 product of the same bf16 operands. Tolerance: rel. L2 err < 1e-2, ~4x a bf16 rounding of the
output (2^-9 relative), which is all the kernel adds (fp32 accumulation); the interpreter truncates instead of
rounding (see test_ttt_fused.py), which stays well inside. SiLU * up rounds g, u and SiLU(g) as mlp.silu_mul does:
three roundings, 2e-2. A wrong tile, split or pairing is O(1).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not importable: the skinny kernels cannot be tested")
ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it)", allow_module_level=True)

from ttt.fused import skinny  # noqa: E402
from ttt.ops.common import KERNEL_LAUNCHES  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"
BF = torch.bfloat16


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def skinny_launches() -> int:
    """Launches of the kernel, with or without PDL ('decode_gemm/skinny' or 'decode_gemm/skinny+pdl')."""
    return sum(n for name, n in KERNEL_LAUNCHES.items() if name.startswith("decode_gemm/skinny"))


def operands(M: int, N: int, K: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g).to(DEV, BF), (torch.randn(N, K, generator=g) / K**0.5).to(DEV, BF)


def silu_ref(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    gu = x.double() @ w.double().t()
    g, u = gu.chunk(2, dim=-1)
    return F.silu(g) * u


# (M, N, K): M from one sequence to the kernel's 16; N not a multiple of the tile; K ragged against split * bk.
SHAPES = [(16, 96, 256), (1, 40, 320), (7, 64, 1000)]
CFGS = [
    skinny.SkinnyConfig(bn=32, bk=64, split=1),
    skinny.SkinnyConfig(bn=16, bk=64, split=3),  # the last split is shorter than the others at K = 1000
    skinny.SkinnyConfig(bn=32, bk=128, split=2, stages=2),
]


@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("cfg", CFGS, ids=["split1", "split3", "split2"])
def test_skinny_matches_float64(M: int, N: int, K: int, cfg: skinny.SkinnyConfig) -> None:
    x, w = operands(M, N, K)
    ref = x.double() @ w.double().t()
    y = skinny.skinny_gemm(x, w, cfg=cfg)
    assert y.shape == (M, N) and y.dtype == BF
    assert rel(y, ref) < 1e-2, rel(y, ref)
    # The split-K counters are back at zero after each call: a second call gives the same bits.
    torch.testing.assert_close(skinny.skinny_gemm(x, w, cfg=cfg), y, rtol=0, atol=0)
    for _, cnt in skinny._WORKSPACE.values():
        assert int(cnt.abs().sum()) == 0

    out = torch.randn(M, N, generator=torch.Generator().manual_seed(5)).to(DEV, BF)
    ref_res = out.double() + ref
    got = skinny.skinny_gemm(x, w, out, epi=skinny.EPI_RESIDUAL, cfg=cfg)
    assert got.data_ptr() == out.data_ptr()
    assert rel(out, ref_res) < 1e-2, rel(out, ref_res)

    _, wgu = operands(M, 2 * N, K, seed=3)
    a = skinny.skinny_gemm(x, wgu, epi=skinny.EPI_SILU, cfg=cfg)
    assert a.shape == (M, N)
    assert rel(a, silu_ref(x, wgu)) < 2e-2, rel(a, silu_ref(x, wgu))


@pytest.mark.parametrize("cfg", CFGS, ids=["split1", "split3", "split2"])
def test_folded_rmsnorm(cfg: skinny.SkinnyConfig) -> None:
    """gate|up of RMSNorm(x) from the folded weight and the producer's row sums of squares (whatever the K split)
    equals the reference RMSNorm fed to the GEMM; so does `linear_silu`'s cuBLAS fallback."""
    M, N, K = 7, 48, 1000
    x, w = operands(M, 2 * N, K)
    x = (x * 3 + 1).to(BF)  # a scale for the norm to remove
    weight = (1 + 0.3 * torch.randn(K, generator=torch.Generator().manual_seed(9))).to(DEV, BF)
    from ttt.fused.norm import rmsnorm

    ref = silu_ref(rmsnorm(x, weight, 1e-6), w)
    rms = skinny.FoldedRMSNorm(skinny.row_partials(x, 10), 1e-6)
    wf = skinny.fold_rms_weight(w, weight)
    got = skinny.skinny_gemm(x, wf, epi=skinny.EPI_SILU, rms=rms, cfg=cfg)
    assert rel(got, ref) < 2e-2, rel(got, ref)
    fallback = skinny.linear_silu(x.float(), wf.float(), rms=rms)  # fp32: not the kernel's
    assert rel(fallback, ref) < 2e-2, rel(fallback, ref)
    # without the norm the result is far off: the test sees it
    assert rel(skinny.skinny_gemm(x, w, epi=skinny.EPI_SILU, cfg=cfg), ref) > 0.1
    assert rel(skinny.skinny_gemm(x, wf, epi=skinny.EPI_SILU, cfg=cfg), ref) > 0.1


@pytest.mark.parametrize("cfg", CFGS, ids=["split1", "split3", "split2"])
def test_residual_writes_row_sums_of_squares(cfg: skinny.SkinnyConfig) -> None:
    """EPI_RESIDUAL with `sumsq`: each output tile's share of each row's sum of squares of the stored result, the
    next RMSNorm's stats (any split-K: the fixup program writes them); a bad buffer is a one-line error."""
    M, N, K = 7, 80, 320
    x, w = operands(M, N, K)
    out = torch.randn(M, N, generator=torch.Generator().manual_seed(4)).to(DEV, BF)
    tiles = -(-N // cfg.bn)
    ss = torch.full((M, tiles), float("nan"), device=DEV)
    skinny.skinny_gemm(x, w, out, epi=skinny.EPI_RESIDUAL, sumsq=ss, cfg=cfg)
    pad = torch.zeros(M, tiles * cfg.bn, device=DEV)
    pad[:, :N] = out.float()
    torch.testing.assert_close(ss, skinny.row_partials(pad, tiles), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sumsq must be fp32"):
        skinny.skinny_gemm(x, w, out, epi=skinny.EPI_RESIDUAL, sumsq=ss[:, :1].contiguous(), cfg=cfg)
    with pytest.raises(ValueError, match="FoldedRMSNorm needs contiguous fp32"):
        skinny.skinny_gemm(x, w, rms=skinny.FoldedRMSNorm(ss[:3].contiguous(), 1e-6), cfg=cfg)


def test_linear_dispatch_and_fallbacks(monkeypatch) -> None:
    """`linear` takes the kernel at <= 16 rows of bf16 and says so; cuBLAS (F.linear, addmm_) otherwise, bit-equal
    to those. Bad calls of the kernel itself are one-line errors."""
    x, w = operands(3, 40, 64)
    KERNEL_LAUNCHES.clear()
    y = skinny.linear(x.view(3, 1, 64), w)
    assert y.shape == (3, 1, 40) and skinny_launches() == 1
    assert rel(y.view(3, 40), x.double() @ w.double().t()) < 1e-2

    big, _ = operands(17, 40, 64)
    torch.testing.assert_close(skinny.linear(big, w), F.linear(big, w), rtol=0, atol=0)
    xf, wf = x.float(), w.float()
    out, out_ref = torch.ones(3, 40, device=DEV), torch.ones(3, 40, device=DEV)
    skinny.linear(xf, wf, out)
    torch.testing.assert_close(out, out_ref.addmm_(xf, wf.t()), rtol=0, atol=0)
    assert KERNEL_LAUNCHES["decode_gemm/cublas"] == 2

    monkeypatch.setenv("TTT_SKINNY", "0")
    KERNEL_LAUNCHES.clear()
    torch.testing.assert_close(skinny.linear(x, w), F.linear(x, w), rtol=0, atol=0)
    assert skinny_launches() == 0

    with pytest.raises(ValueError, match="at most 16"):
        skinny.skinny_gemm(big, w)
    with pytest.raises(ValueError, match="needs out"):
        skinny.skinny_gemm(x, w, epi=skinny.EPI_RESIDUAL)


def decode_twice(monkeypatch, env_b: dict[str, str]) -> tuple[int, torch.Tensor, dict, torch.Tensor, dict]:
    """A tiny bf16 TTT-Linear model's fused decode step from a prefilled cache under the current environment, then
    again from the same cache with `env_b` set -> (layers, logits a, launches a, logits b, launches b)."""
    import functools

    from ttt_helpers import ids, tiny_model

    from ttt.generation import restore_cache, snapshot_cache
    from ttt.ops import ttt_linear as ops

    if not ON_GPU:  # the op's bf16 tl.dot is garbage in the interpreter (test_ttt_fused.py): fp32 operands there
        fn = functools.partial(ops.IMPLS["triton"], precision="ieee", one_pass_ln=False)
        monkeypatch.setitem(ops.IMPLS, "triton", fn)
    model = tiny_model("linear", "mamba").to(DEV, BF)
    model.impl = "triton"
    x = ids(2, 20).to(DEV)
    with torch.no_grad():
        cache = model.allocate_cache(2, 24)
        model.prefill(x[:, :19], cache)
        snap = snapshot_cache(cache)
        KERNEL_LAUNCHES.clear()
        got = model.decode_step(x[:, 19:], cache)
        launches = dict(KERNEL_LAUNCHES)
        restore_cache(cache, snap)
        for k, v in env_b.items():
            monkeypatch.setenv(k, v)
        KERNEL_LAUNCHES.clear()
        ref = model.decode_step(x[:, 19:], cache)
    return len(model.layers), got, launches, ref, dict(KERNEL_LAUNCHES)


@pytest.mark.parametrize("row_stats,ffn", [("1", "1"), ("0", "1"), ("1", "0")])
def test_fused_decode_takes_the_skinny_kernels(monkeypatch, row_stats: str, ffn: str) -> None:
    """A bf16 model's fused decode step runs every GEMM of its blocks through the kernel, and its logits match the
    same step with cuBLAS GEMMs (TTT_SKINNY=0) from the same cache. By default (row statistics from the producers)
    the post-norm + gate and the ffn RMSNorm are applied by the GEMMs after them, so neither launches; with
    TTT_ROW_STATS=0 both do, once a block. SwiGLU's two GEMMs are two launches, or one with TTT_FFN_STEP=1
    (`ttt.fused.ffn_step`)."""
    monkeypatch.setenv("TTT_ROW_STATS", row_stats)
    monkeypatch.setenv("TTT_FFN_STEP", ffn)
    layers, got, la, ref, lb = decode_twice(monkeypatch, {"TTT_SKINNY": "0"})
    # in-proj, o_proj, then gate|up + SiLU and down: in one launch, or two
    skinny = sum(n for name, n in la.items() if name.startswith("decode_gemm/skinny"))
    one_grid = sum(n for name, n in la.items() if name.startswith("decode_ffn/one_grid"))
    assert skinny == (2 if ffn == "1" else 4) * layers, la
    assert one_grid == (layers if ffn == "1" else 0), la
    norms = la.get("fused/epilogue", 0) + la.get("fused/rmsnorm", 0)
    assert norms == (0 if row_stats == "1" else 2 * layers) + 1, la  # + the final norm before the lm_head
    assert not any(name.startswith(("decode_ffn/", "decode_gemm/skinny")) for name in lb), lb
    assert rel(got, ref) < 2e-2, rel(got, ref)


def test_fused_decode_head_matches_the_modules(monkeypatch) -> None:
    """On the fused path decode_step gathers the embedding rows and runs the final RMSNorm as one kernel; the
    logits match the nn.Embedding + RMSNorm-module step (TTT_DECODE_HEAD=0) from the same cache to bf16 noise (the
    only difference: the norm's roundings), and the kernel is what ran."""
    _, got, la, ref, lb = decode_twice(monkeypatch, {"TTT_DECODE_HEAD": "0"})
    assert la.get("fused/rmsnorm", 0) == lb.get("fused/rmsnorm", 0) + 1
    assert rel(got, ref) < 1e-2, rel(got, ref)


# -- GPU: the 1.3B layer's shapes, PDL on and off, and a captured PDL chain --------------------------------------
LAYER_SHAPES = {"in_proj": (6176, 2048), "o_proj": (2048, 2048), "gate_up": (5504, 2048), "down": (2048, 5504)}


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(LAYER_SHAPES))
@pytest.mark.parametrize("pdl,static", [(False, False), (True, False), (True, True)])
def test_gpu_layer_shapes(monkeypatch, name: str, pdl: bool, static: bool) -> None:
    """static: the first weight tile loaded before the PDL wait (TTT_SKINNY_PRELOAD=1)."""
    monkeypatch.setenv("TTT_SKINNY_PRELOAD", "1")
    N, K = LAYER_SHAPES[name]
    x, w = operands(16, 2 * N if name == "gate_up" else N, K)
    kw = dict(pdl=pdl, static_weights=static)
    if name == "gate_up":
        got, ref = skinny.skinny_gemm(x, w, epi=skinny.EPI_SILU, **kw), silu_ref(x, w)
        assert rel(got, ref) < 2e-2, rel(got, ref)
    else:
        got, ref = skinny.skinny_gemm(x, w, **kw), x.double() @ w.double().t()
        assert rel(got, ref) < 1e-2, rel(got, ref)
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
def test_gpu_pdl_chain_in_a_graph(monkeypatch) -> None:
    """A captured chain of dependent PDL launches (each GEMM reads the previous one's output, and the residual
    form writes in place) replays to the bits of the same chain run eagerly without PDL."""
    monkeypatch.setenv("TTT_SKINNY_PRELOAD", "1")
    xs, ws = operands(16, 512, 512)
    _, w2 = operands(16, 512, 512, seed=7)

    def chain(pdl: bool) -> torch.Tensor:
        h = xs.clone()
        for i in range(6):
            y = skinny.skinny_gemm(h, ws if i % 2 else w2, pdl=pdl, static_weights=pdl)
            h = skinny.skinny_gemm(y, ws, h, epi=skinny.EPI_RESIDUAL, pdl=pdl, static_weights=pdl)
        return h

    ref = chain(False)
    chain(True)  # compile outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = chain(True)
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
