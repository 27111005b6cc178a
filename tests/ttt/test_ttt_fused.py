"""The fused inference path of impl "triton" (ttt/fused/, TTTBase.fused_*, Block._*_fused) against the PyTorch code
it replaces, on fresh random inputs: each kernel alone, then whole models (logits, the decode cache a prefill
leaves, decode steps after it).

CPU: kernels run under TRITON_INTERPRET=1. The op's bf16 tl.dot is garbage in the interpreter, so the Triton op is
called with fp32 ("ieee") operands here (and the two-pass LN statistics, numerically the same and ~3x faster in the
interpreter). Tolerances: fp32 max abs err 1e-5 for single kernels (O(1) values; only summation order differs),
2e-4 on model logits (O(1), two layers of GEMMs in another order). bf16 kernels on a GPU: max abs err <= 2% of the
largest |reference| value (~2.5 bf16 ulps there: a result formed by cancellation, e.g. x + conv(x), can differ by a
few ulps of its operands) and rel. L2 err < 1e-2. In the interpreter twice that: it casts to bf16 by truncation
(PyTorch rounds to nearest), a bias of -0.5 ulp per rounding that adds up over the 3-4 roundings of a chain (seen:
1.1%). A wiring mistake is O(1). GPU tests: bf16 model logits rel. L2 err < 3e-2 (the op's own bf16 error is ~4e-3,
bench/notes/ttt_linear_triton.md).
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.nn.functional as F
from ttt_helpers import MBS, ids, tiny_config, tiny_model

pytest.importorskip("triton", reason="triton is not importable: the fused kernels cannot be tested")
ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it)", allow_module_level=True)

from ttt.fused import mlp, norm, ttt_io  # noqa: E402
from ttt.fused.cache import DerivedParams  # noqa: E402
from ttt.layer import LayerCache, PreConv, RMSNorm, TTTLinear  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"
DTYPES = [torch.float32, torch.bfloat16]
W, B = 48, 2  # a width that is not a power of two: the kernels pad and mask columns


@pytest.fixture(autouse=True)
def ieee_op(monkeypatch, request):
    """The Triton op with fp32 operands (see the module docstring) in every test but the GPU-marked ones: the
    others' fp32 tolerances are for fp32 arithmetic, on CPU or GPU (on a GPU the op's default is bf16 operands)."""
    if not ON_GPU or request.node.get_closest_marker("gpu") is None:
        from ttt.ops import ttt_linear as ops

        fn = functools.partial(ops.IMPLS["triton"], precision="ieee", one_pass_ln=False)
        monkeypatch.setitem(ops.IMPLS, "triton", fn)


def perturbed(module: torch.nn.Module, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """Random parameters away from the init (unit norms, zero biases would hide wiring mistakes)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return module.to(DEV, dtype).eval()


def rand(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEV, dtype)


def close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, msg: str = "") -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, msg
    if dtype == torch.float32:
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5, msg=msg)
        return
    g, r = got.double(), ref.double()
    err, scale = (g - r).abs().max().item(), r.abs().max().item()
    f = 1 if ON_GPU else 2
    assert err <= 0.02 * f * scale, f"{msg}: max abs err {err:.3g} vs max |ref| {scale:.3g}"
    assert (g - r).norm() <= 1e-2 * f * r.norm(), f"{msg}: rel L2 err {((g - r).norm() / r.norm()).item():.3g}"


# -- kernels against their references ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_and_add_rmsnorm(dtype: torch.dtype) -> None:
    ref = perturbed(RMSNorm(W), dtype)
    x, r = rand(B, 7, W, dtype=dtype), rand(B, 7, W, dtype=dtype, seed=2)
    with torch.no_grad():
        close(norm.rmsnorm(x, ref.weight, ref.eps), ref(x), dtype)
        s, h = norm.add_rmsnorm(x, r, ref.weight, ref.eps)
        close(s, x + r, dtype)
        close(h, ref(x + r), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [2, 21])  # shorter than the conv kernel (zero-padded window), and ragged
def test_preconv_rmsnorm(dtype: torch.dtype, T: int) -> None:
    cfg = tiny_config(hidden_size=W, num_heads=3)
    pc, seq = perturbed(PreConv(cfg), dtype), perturbed(RMSNorm(W), dtype, seed=1)
    K = cfg.conv_kernel
    x = rand(B, T, W, dtype=dtype)
    st_ref, st = rand(B, W, K, dtype=dtype, seed=3), rand(B, W, K, dtype=dtype, seed=4)  # stale: overwritten
    with torch.no_grad():
        x1_ref = x + pc(x, st_ref)
        x1, h = norm.preconv_rmsnorm(x, pc.norm.weight, pc.norm.eps, pc.conv.weight, pc.conv.bias, seq.weight,
                                     seq.eps, state=st)  # fmt: skip
        close(x1, x1_ref, dtype, "x1")
        close(h, seq(x1_ref), dtype, "h")
        close(st, st_ref, dtype, "conv window")
        # the decode step continues from the window: both paths, one token each
        xt = rand(B, 1, W, dtype=dtype, seed=5)
        y_ref = xt + pc.step(xt, st_ref)
        y, hy = norm.preconv_rmsnorm_step(xt, st, pc.norm.weight, pc.norm.eps, pc.conv.weight, pc.conv.bias,
                                          seq.weight, seq.eps)  # fmt: skip
        close(y, y_ref, dtype, "step x1")
        close(hy, seq(y_ref), dtype, "step h")
        close(st, st_ref, dtype, "window after the step")


def layer_and_input(
    share_qk: bool, dtype: torch.dtype, T: int, use_gate: bool = True
) -> tuple[TTTLinear, torch.Tensor]:
    cfg = tiny_config(hidden_size=W, num_heads=3, share_qk=share_qk, use_gate=use_gate)  # d = 16
    return perturbed(TTTLinear(cfg), dtype), rand(B, T, W, dtype=dtype, seed=6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("share_qk", [True, False])
@pytest.mark.parametrize("T", [3, 2 * MBS + 3])
def test_prologue(dtype: torch.dtype, share_qk: bool, T: int) -> None:
    layer, x = layer_and_input(share_qk, dtype, T)
    K = layer.cfg.conv_kernel
    st_ref, st = rand(B, W, K, dtype=dtype, seed=7), rand(B, W, K, dtype=dtype, seed=8)
    with torch.no_grad():
        cache_ref = LayerCache(state=None, qk_conv=st_ref if share_qk else None)
        q_ref, k_ref, v_ref = layer._qkv(x, cache_ref, step=False)
        q_ref, k_ref = layer._rope(q_ref, k_ref, torch.arange(T, device=DEV) % MBS)
        P = F.linear(x, layer._in_weight())
        lay = layer._fused_layout()
        qkv, eta = ttt_io.prologue(P, lay, layer._prologue_args(), st if share_qk else None)
        for name, got, ref in zip("qkv", qkv, (q_ref, k_ref, v_ref)):
            close(layer._heads(got), ref, dtype, name)
        close(eta.transpose(1, 2), layer.eta(x), torch.float32 if dtype == torch.float32 else dtype, "eta")
        if share_qk:
            close(st, st_ref, dtype, "qk conv window")
            # one decode token from that window
            xt = rand(B, 1, W, dtype=dtype, seed=9)
            pos = torch.tensor([T % MBS], device=DEV)
            q1, k1, v1 = layer._qkv(xt, cache_ref, step=True)
            q1, k1 = layer._rope(q1, k1, pos)
            qkv1, eta1 = ttt_io.prologue_step(F.linear(xt, layer._in_weight()), lay, layer._prologue_args(), st, pos)
            for name, got, ref in zip("qkv", qkv1, (q1, k1, v1)):
                close(layer._heads(got), ref, dtype, "step " + name)
            close(eta1.transpose(1, 2), layer.eta(xt), torch.float32 if dtype == torch.float32 else dtype, "eta")
            close(st, st_ref, dtype, "window after the step")


@pytest.mark.parametrize("dtype", DTYPES)
def test_prologue_step_without_conv(dtype: torch.dtype) -> None:
    """Transformer backbone: separate q/k projections, no conv window."""
    layer, xt = layer_and_input(False, dtype, 1)
    pos = torch.tensor([MBS - 1], device=DEV)
    with torch.no_grad():
        q1, k1, v1 = layer._qkv(xt, LayerCache(state=None), step=True)
        q1, k1 = layer._rope(q1, k1, pos)
        P = F.linear(xt, layer._in_weight())
        qkv1, eta1 = ttt_io.prologue_step(P, layer._fused_layout(), layer._prologue_args(), None, pos)
    for name, got, ref in zip("qkv", qkv1, (q1, k1, v1)):
        close(layer._heads(got), ref, dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("share_qk", [True, False])
@pytest.mark.parametrize("p", [0, MBS - 1])  # inside a mini-batch, and the step that closes it
def test_fused_linear_decode_step(dtype: torch.dtype, share_qk: bool, p: int) -> None:
    """Prologue + TTT-Linear step in one kernel (ttt.fused.linear_step) against the two launches it replaces, from
    one random state: z, every state tensor (W folded when the mini-batch closes), the offset, the conv window; and
    with the epilogue in the same kernel (the last head program of each sequence), o_proj's input against the
    epilogue kernel run on that z (both call `ttt_io.norm_gate_rows`, so this checks which program runs it, on which
    row, and when). Twice: the per-sequence counters must be back at zero after a call."""
    from ttt.fused.linear_step import linear_decode_step
    from ttt.ops.ttt_linear.decode import ttt_linear_step_triton

    layer, xt = layer_and_input(share_qk, dtype, 1)
    lay, args, te = layer._fused_layout(), layer._prologue_args(), layer._token_eta_cached()
    with torch.no_grad():
        P = F.linear(xt, layer._in_weight())
        st = layer.init_state(B)
        g = torch.Generator().manual_seed(11)
        for t in (st.W, st.b, st.W_acc, st.b_acc):
            t.copy_(torch.randn(t.shape, generator=g).to(t) * 0.3)
        st.offset.fill_(p)
        st_ref = type(st)(**{n: t.clone() for n, t in vars(st).items()})
        win = rand(B, W, layer.cfg.conv_kernel, dtype=dtype, seed=12) if share_qk else None
        win_ref = win.clone() if share_qk else None
        pos = torch.tensor([p], device=DEV)
        qkv, eta = ttt_io.prologue_step(P, lay, args, win_ref, pos)
        q, k, v = (layer._heads(t) for t in qkv)
        z_ref, _ = ttt_linear_step_triton(q, k, v, eta.transpose(1, 2), te, layer.ln_weight, layer.ln_bias, st_ref,
                                          mini_batch_size=MBS)  # fmt: skip
        pn = layer.post_norm
        z, a = linear_decode_step(P, lay, args, win, pos, te, layer.ln_weight, layer.ln_bias, st, MBS,
                                  post_norm=(pn.weight, pn.bias, pn.eps))  # fmt: skip
        a_ref = ttt_io.epilogue(z, P, lay, pn.weight, pn.bias, pn.eps)
    close(z, z_ref, dtype, "z")
    torch.testing.assert_close(a, a_ref, rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2)
    with torch.no_grad():
        st2 = type(st)(**{n: t.clone() for n, t in vars(st).items()})
        st2.offset.fill_(p)
        w2 = win_ref.clone() if share_qk else None
        z2, a2 = linear_decode_step(P, lay, args, w2, pos, te, layer.ln_weight, layer.ln_bias, st2, MBS,
                                    post_norm=(pn.weight, pn.bias, pn.eps))  # fmt: skip
        torch.testing.assert_close(a2, ttt_io.epilogue(z2, P, lay, pn.weight, pn.bias, pn.eps), rtol=0,
                                   atol=1e-5 if dtype == torch.float32 else 2e-2)  # fmt: skip
    for name in ("W", "b", "W_acc", "b_acc"):
        torch.testing.assert_close(getattr(st, name), getattr(st_ref, name), rtol=0, atol=1e-5, msg=name)
    assert int(st.offset) == int(st_ref.offset) == (p + 1) % MBS
    if share_qk:
        torch.testing.assert_close(win, win_ref, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_gate", [True, False])
def test_epilogue(dtype: torch.dtype, use_gate: bool) -> None:
    T = 2 * MBS + 1
    layer, x = layer_and_input(True, dtype, T, use_gate=use_gate)
    H, d = layer.num_heads, layer.head_dim
    z = rand(B, T, H, d, dtype=dtype, seed=10).transpose(1, 2)  # the op's output layout: (B, H, T, d) strided
    with torch.no_grad():
        ref = layer._output(x, z)
        a = ttt_io.epilogue(z, F.linear(x, layer._in_weight()), layer._fused_layout(), layer.post_norm.weight,
                            layer.post_norm.bias, layer.post_norm.eps)  # fmt: skip
        close(layer.o_proj(a), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(dtype: torch.dtype) -> None:
    gu = rand(3, 5, 2 * 40, dtype=dtype)
    close(mlp.silu_mul(gu), F.silu(gu[..., :40]) * gu[..., 40:], dtype)


# -- whole models ----------------------------------------------------------------------------------------------
MODEL_TOL = dict(rtol=0, atol=2e-4)


def fp32_model(layer_type: str = "linear", backbone: str = "mamba") -> torch.nn.Module:
    return tiny_model(layer_type, backbone).float().to(DEV)


def cache_tensors(cache) -> dict[str, torch.Tensor]:
    out = {}
    for i, lc in enumerate(cache.layers):
        out.update({f"{i}.state.{n}": t for n, t in vars(lc.state).items()})
        out.update({f"{i}.{n}": getattr(lc, n) for n in ("pre_conv", "qk_conv") if getattr(lc, n) is not None})
    return out


@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
def test_model_triton_matches_dual_tiny_size(backbone: str) -> None:
    """conf/size/tiny.yaml (d = 64, mini-batch 16) through bench.registry, both backbones, T not a multiple of 16."""
    from bench.registry import build

    overrides = {"backbone": backbone} if backbone != "mamba" else None
    model = build("ttt_linear", "tiny", impl="dual", overrides=overrides).to(DEV)
    x = ids(1, 21, vocab=1024).to(DEV)
    with torch.no_grad():
        ref = model(x)
        model.impl = "triton"
        got = model(x)
    torch.testing.assert_close(got, ref, **MODEL_TOL)


@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
def test_prefill_cache_and_decode_match_reference(backbone: str) -> None:
    """A ragged prompt: the cache a fused prefill leaves equals the dual path's (conv windows, TTT state, offset),
    and fused decode steps across a mini-batch boundary give the logits of one dual forward."""
    model = fp32_model("linear", backbone)
    P, steps = 2 * MBS + 3, MBS
    x = ids(B, P + steps).to(DEV)
    with torch.no_grad():
        full = model(x)  # dual
        ref_cache = model.allocate_cache(B, P + steps)
        ref_last = model.prefill(x[:, :P], ref_cache)
        model.impl = "triton"
        cache = model.allocate_cache(B, P + steps)
        for t in cache_tensors(cache).values():  # stale contents must be overwritten by the prefill
            t.copy_(torch.randn_like(t.float()).to(t.dtype)) if t.is_floating_point() else t.fill_(3)
        last = model.prefill(x[:, :P], cache)
        torch.testing.assert_close(last, ref_last, **MODEL_TOL)
        ref_t = cache_tensors(ref_cache)
        for name, t in cache_tensors(cache).items():
            torch.testing.assert_close(t, ref_t[name], rtol=0, atol=1e-5, msg=name)
        outs = [last] + [model.decode_step(x[:, t : t + 1], cache) for t in range(P, P + steps - 1)]
    torch.testing.assert_close(torch.stack(outs, 1), full[:, P - 1 : -1], **MODEL_TOL)
    assert int(cache.seqlen) == P + steps - 1


def test_ttt_mlp_layers_take_the_fused_path(monkeypatch) -> None:
    """The prologue/epilogue are the same for TTT-MLP: with stand-ins for its 'triton' op (the dual form, the
    PyTorch step), the fused model equals the dual one, forward and prefill + decode."""
    from ttt.ops import ttt_mlp

    monkeypatch.setitem(ttt_mlp.IMPLS, "triton", ttt_mlp.IMPLS["dual"])
    if hasattr(ttt_mlp, "STEP_IMPLS"):  # the MLP op's own Triton step (tested with the op) would be slow here
        monkeypatch.setitem(ttt_mlp.STEP_IMPLS, "triton", ttt_mlp.ttt_mlp_step)
    model = fp32_model("mlp", "mamba")
    x = ids(B, MBS + 3).to(DEV)
    with torch.no_grad():
        full = model(x)
        model.impl = "triton"
        assert model.layers[0].ttt.fusable(model.embed(x), "triton")
        torch.testing.assert_close(model(x), full, **MODEL_TOL)
        cache = model.allocate_cache(B, x.shape[1])
        outs = [model.prefill(x[:, :MBS], cache)]
        outs += [model.decode_step(x[:, t : t + 1], cache) for t in range(MBS, x.shape[1] - 1)]
    torch.testing.assert_close(torch.stack(outs, 1), full[:, MBS - 1 : -1], **MODEL_TOL)


def test_weight_updates_reach_the_fused_path() -> None:
    """The concatenated weights are a cached copy: an in-place update of any source (optimizer step,
    load_state_dict) must rebuild it. state_dict keys are those of the unfused model."""
    model = fp32_model()
    keys = list(model.state_dict())
    x = ids(1, MBS + 1).to(DEV)
    with torch.no_grad():
        model.impl = "triton"
        before = model(x)
        blk = model.layers[0]
        for p in (blk.ttt.v_proj.weight, blk.ttt.lr_weight, blk.ttt.token_idx_bias, blk.mlp.up_proj.weight):
            p.mul_(1.5)
        after = model(x)
        model.impl = "dual"
        ref = model(x)
    assert (after - before).abs().max() > 1e-3
    torch.testing.assert_close(after, ref, **MODEL_TOL)
    assert list(model.state_dict()) == keys


def test_fused_path_only_at_inference_and_when_asked() -> None:
    model = fp32_model()
    layer = model.layers[0].ttt
    x = torch.zeros(1, 2, layer.cfg.hidden_size, device=DEV)
    with torch.no_grad():
        assert layer.fusable(x, "triton")
        assert not layer.fusable(x, "dual")
        assert not layer.fusable(x.double(), "triton")  # dtype differs from the weights
        layer.fused = False
        assert not layer.fusable(x, "triton")
    layer.fused = True
    assert not layer.fusable(x, "triton")  # gradients on: the unfused path (the kernels have no backward)


def test_derived_params_cache() -> None:
    cache, calls = DerivedParams(), []
    p = torch.nn.Parameter(torch.ones(3))

    def build() -> torch.Tensor:
        calls.append(1)
        return p * 2

    assert cache.get("x", [p], build) is cache.get("x", [p], build)
    assert len(calls) == 1
    with torch.no_grad():
        p.add_(1)  # in place: the version counter moves
    torch.testing.assert_close(cache.get("x", [p], build), torch.full((3,), 4.0))
    p.data = torch.zeros(3)  # new storage (what module.to does)
    torch.testing.assert_close(cache.get("x", [p], build), torch.zeros(3))
    assert len(calls) == 3


# -- GPU: bf16, CUDA graphs ------------------------------------------------------------------------------------
def gpu_model(backbone: str) -> torch.nn.Module:
    from ttt.model import TTTForCausalLM

    cfg = tiny_config(hidden_size=256, num_heads=4, intermediate_size=512, num_layers=2, mini_batch_size=16,
                      backbone=backbone, pre_conv=backbone == "mamba", share_qk=backbone == "mamba",
                      use_gate=backbone == "mamba")  # fmt: skip
    torch.manual_seed(0)
    return TTTForCausalLM(cfg).cuda().eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
def test_gpu_bf16_fused_matches_dual(backbone: str) -> None:
    model = gpu_model(backbone)
    x = ids(4, 300).cuda()
    with torch.no_grad():
        ref = model(x)  # fp32 dual
        model.to(torch.bfloat16)
        model.impl = "triton"
        got = model(x)
        for blk in model.layers:
            blk.ttt.fused = False
        unfused = model(x)
    assert rel(got, ref) < 3e-2, rel(got, ref)
    assert rel(got, unfused) < 3e-2, rel(got, unfused)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("step_launch", [{}, {"TTT_STEP_PDL": "1", "TTT_STEP_MAXNREG": "0"}], ids=["default", "s11"])
def test_gpu_graphed_fused_decode(monkeypatch, step_launch: dict) -> None:
    """The fused decode step replays in a CUDA graph: as eager fused steps, and close to the dual forward; with the
    default launch of the fused TTT-Linear step (plain, capped) and session 11's (PDL, L2 prefetch, uncapped)."""
    from ttt.generation import GraphedDecode, restore_cache, snapshot_cache

    for k, v in step_launch.items():
        monkeypatch.setenv(k, v)
    model = gpu_model("mamba").to(torch.bfloat16)
    x = ids(16, 40).cuda()
    P = 21
    with torch.no_grad():
        model.impl = "dual"
        full = model(x)
        model.impl = "triton"
        cache, eager_cache = model.allocate_cache(16, 64), model.allocate_cache(16, 64)
        model.prefill(x[:, :P], cache)
        model.prefill(x[:, :P], eager_cache)
        snap = snapshot_cache(cache)
        step = GraphedDecode(model, cache, 16)
        restore_cache(cache, snap)
        for t in range(P, x.shape[1] - 1):
            g = step(x[:, t : t + 1]).clone()
            e = model.decode_step(x[:, t : t + 1], eager_cache)
            assert rel(g, e) < 1e-3, (t, rel(g, e))  # same kernels; cuBLAS may pick another algorithm under capture
            assert rel(g, full[:, t]) < 3e-2, (t, rel(g, full[:, t]))


def test_fused_step_launch_rejects_an_unknown_pdl_mode(monkeypatch) -> None:
    from ttt.errors import UserError
    from ttt.ops.ttt_linear.decode import fused_step_launch

    monkeypatch.setenv("TTT_STEP_PDL", "sometimes")
    with pytest.raises(UserError, match="TTT_STEP_PDL='sometimes'"):
        fused_step_launch()
    monkeypatch.setenv("TTT_STEP_PDL", "1")
    monkeypatch.setenv("TTT_STEP_MAXNREG", "0")
    assert fused_step_launch() == (True, {"num_warps": 4})
    monkeypatch.delenv("TTT_STEP_PDL")
    monkeypatch.delenv("TTT_STEP_MAXNREG")
    assert fused_step_launch() == (False, {"num_warps": 4, "maxnreg": 128})
