"""SwiGLU's one-launch decode step (ttt/fused/ffn_step.py) against its two skinny launches and the float64 product.

The one grid runs the same tiles, split and K order as `skinny_gemm(EPI_SILU)` then `skinny_gemm(EPI_RESIDUAL)`,
so it must give their bits exactly; against the float64 SwiGLU of the same bf16 operands the tolerance is that of
test_ttt_skinny.py's SiLU * up (2e-2: the bf16 roundings of g, u, SiLU(g) and of the activation). A gate|up tile
feeding the wrong K group, a down tile that does not wait, or a counter left non-zero shows as O(1) or as a
second call that differs.
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

from ttt.fused import ffn_step, skinny  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"
BF = torch.bfloat16
Cfg = skinny.SkinnyConfig


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def operands(M: int, K: int, inter: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(DEV, BF)
    w_gu = (torch.randn(2 * inter, K, generator=g) / K**0.5).to(DEV, BF)
    w_down = (torch.randn(K, inter, generator=g) / inter**0.5).to(DEV, BF)
    out = torch.randn(M, K, generator=g).to(DEV, BF)
    return x, w_gu, w_down, out


def two_launches(x, w_gu, w_down, out, cfgs, rms=None) -> torch.Tensor:
    a = skinny.skinny_gemm(x, w_gu, epi=skinny.EPI_SILU, rms=rms, cfg=cfgs[0], pdl=False)
    return skinny.skinny_gemm(a, w_down, out.clone(), epi=skinny.EPI_RESIDUAL, cfg=cfgs[1], pdl=False)


def float64_ref(x, w_gu, w_down, out) -> torch.Tensor:
    g, u = (x.double() @ w_gu.double().t()).chunk(2, dim=-1)
    return out.double() + (F.silu(g) * u) @ w_down.double().t()


def counters_zero() -> bool:
    return all(int(cnt.abs().sum()) == 0 for _, cnt in skinny._WORKSPACE.values())


# (M, K, I) and (gate|up, down) tiles: down unsplit; split 2 with a ragged last K group (I = 200: 128 + 72, the
# last gate|up tile ragged too); split 3 at bn 16, three K groups of three gate|up tiles; K not a multiple of the
# tile.
CASES = [
    ((16, 64, 96), (Cfg(bn=32, bk=64), Cfg(bn=32, bk=128))),
    ((7, 96, 200), (Cfg(bn=32, bk=64), Cfg(bn=32, bk=64, split=3))),
    ((1, 80, 144), (Cfg(bn=16, bk=32), Cfg(bn=16, bk=16, split=3, stages=2))),
]


@pytest.mark.parametrize("shape,cfgs", CASES, ids=["split1", "split2-ragged", "split3-bn16"])
def test_one_grid_matches_two_launches(shape, cfgs) -> None:
    M, K, inter = shape
    x, w_gu, w_down, out = operands(M, K, inter)
    ref = two_launches(x, w_gu, w_down, out, cfgs)
    got = ffn_step.ffn_step(x, w_gu, w_down, out.clone(), cfgs=cfgs, pdl=False)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert rel(got, float64_ref(x, w_gu, w_down, out)) < 2e-2
    assert counters_zero()
    # a second call from the reset counters, and x being `out` itself (the residual stream updated in place)
    inplace = x.clone()
    ffn_step.ffn_step(inplace, w_gu, w_down, inplace, cfgs=cfgs, pdl=False)
    torch.testing.assert_close(inplace, two_launches(x, w_gu, w_down, x, cfgs), rtol=0, atol=0)
    assert counters_zero()


def test_folded_rmsnorm_and_errors() -> None:
    M, K, inter = 5, 96, 200
    x, w_gu, w_down, out = operands(M, K, inter, seed=2)
    x = (3 * x + 1).to(BF)
    cfgs = CASES[1][1]
    weight = (1 + 0.3 * torch.randn(K, generator=torch.Generator().manual_seed(9))).to(DEV, BF)
    rms = skinny.FoldedRMSNorm(skinny.row_partials(x, 3), 1e-6)
    wf = skinny.fold_rms_weight(w_gu, weight)
    got = ffn_step.ffn_step(x, wf, w_down, out.clone(), rms=rms, cfgs=cfgs, pdl=False)
    torch.testing.assert_close(got, two_launches(x, wf, w_down, out, cfgs, rms=rms), rtol=0, atol=0)
    from ttt.fused.norm import rmsnorm

    assert rel(got, float64_ref(rmsnorm(x, weight, 1e-6), w_gu, w_down, out)) < 2e-2
    with pytest.raises(ValueError, match="do not chain"):
        ffn_step.ffn_step(x, w_gu, w_down, out, cfgs=(Cfg(bn=16), Cfg(bn=32)))
    with pytest.raises(ValueError, match="do not chain"):
        ffn_step.ffn_step(x, w_gu, w_down, out, cfgs=(Cfg(split=2), Cfg()))
    with pytest.raises(ValueError, match="needs w_gu"):
        ffn_step.ffn_step(x, w_gu[:-1], w_down, out)
    with pytest.raises(ValueError, match="same"):
        ffn_step.ffn_step(x, w_gu, w_down, out[:, :-1])
    assert counters_zero()


def test_applies(monkeypatch) -> None:
    x, w_gu, w_down, _ = operands(4, 64, 96)
    assert not ffn_step.applies(x, w_gu, w_down)  # opt-in
    monkeypatch.setenv("TTT_FFN_STEP", "1")
    assert ffn_step.applies(x, w_gu, w_down)
    assert not ffn_step.applies(x.float(), w_gu.float(), w_down.float())  # 32-bit: cuBLAS
    monkeypatch.setenv("TTT_FFN_STEP", "0")
    assert not ffn_step.applies(x, w_gu, w_down)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("pdl", [False, True])
def test_gpu_1p3b_shapes_in_a_graph(pdl: bool) -> None:
    """The 1.3B block (hidden 2048, I 5504: 172 gate|up tiles, down split 4) with the default tiles, replayed in a
    CUDA graph after other work: every replay has the two launches' bits."""
    x, w_gu, w_down, out = operands(16, 2048, 5504)
    cfgs = ffn_step.configs(5504, 2048)
    assert cfgs[1].split > 1
    ref = two_launches(x, w_gu, w_down, out, cfgs)
    assert rel(ref, float64_ref(x, w_gu, w_down, out)) < 2e-2
    buf = out.clone()
    ffn_step.ffn_step(x, w_gu, w_down, buf, pdl=pdl)  # compile outside the capture
    torch.testing.assert_close(buf, ref, rtol=0, atol=0)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        buf.copy_(out)
        for _ in range(3):  # dependent launches back to back: each must see the previous one's reset counters
            ffn_step.ffn_step(x, w_gu, w_down, buf, pdl=pdl)
    ref3 = out.clone()
    for _ in range(3):
        ref3 = two_launches(x, w_gu, w_down, ref3, cfgs)
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(buf, ref3, rtol=0, atol=0)
    assert counters_zero()
