"""The Mamba baseline: decode equals the full forward, the scan matches a closed form, mamba-ssm naming, impls."""

from __future__ import annotations

import importlib.util
from collections import namedtuple
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import baselines.mamba as mamba_mod
from baselines.mamba import MambaCache, MambaConfig, MambaLM, selective_scan
from bench.registry import build, count_params
from ttt.errors import UserError


def tiny(dtype: torch.dtype = torch.float64) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(MambaConfig(vocab_size=97, d_model=32, n_layer=2, d_state=8)).to(dtype).eval()


@pytest.mark.parametrize("prompt_len", [1, 3, 9])
@torch.no_grad()
def test_decode_after_prefill_equals_forward(prompt_len: int) -> None:
    model = tiny()
    ids = torch.randint(0, 97, (2, prompt_len + 6))
    full = model(ids)
    cache = model.allocate_cache(2, ids.shape[1])
    ssm0 = cache.ssm[0]
    logits = [model.prefill(ids[:, :prompt_len], cache)]
    for t in range(prompt_len, ids.shape[1]):
        logits.append(model.decode_step(ids[:, t : t + 1], cache))
    torch.testing.assert_close(torch.stack(logits, 1), full[:, prompt_len - 1 :], rtol=1e-10, atol=1e-10)
    assert cache.ssm[0] is ssm0  # updated in place
    torch.testing.assert_close(model(ids, logits_to_keep=2), full[:, -2:])


@torch.no_grad()
def test_decode_float32_and_generate_is_greedy() -> None:
    model = tiny(torch.float32)
    ids = torch.randint(0, 97, (2, 4))
    out = model.generate(ids, max_new_tokens=5)
    assert out.shape == (2, 9)
    full = model(out)
    cache = model.allocate_cache(2, 9)
    steps = [model.prefill(out[:, :4], cache)] + [model.decode_step(out[:, t : t + 1], cache) for t in range(4, 8)]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 3:8], rtol=1e-4, atol=1e-5)
    for t in range(4, 9):
        assert torch.equal(full[:, t - 1].argmax(-1), out[:, t])


def closed_form_scan(u, delta, A, B, C, D, z, bias, h0):
    """y_t = C_t . (exp(L_t) h0 + sum_{s<=t} exp(L_t - L_s) dt_s B_s u_s) + D u_t, with L_t = sum_{r<=t} dt_r A."""
    dt = F.softplus(delta + bias[:, None])  # (b, d, T)
    L = torch.cumsum(dt[..., None] * A[:, None, :], dim=2)  # (b, d, T, n)
    T = u.shape[-1]
    decay = torch.exp(L[:, :, :, None, :] - L[:, :, None, :, :])  # (b, d, t, s, n)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None, :, :, None]
    inp = (dt * u)[:, :, None, :, None] * B.transpose(1, 2)[:, None, None, :, :]  # (b, d, 1, s, n)
    h = (decay * inp * mask).sum(3) + torch.exp(L) * h0[:, :, None, :]  # (b, d, t, n)
    y = (h * C.transpose(1, 2)[:, None]).sum(-1) + D[:, None] * u
    return y * F.silu(z), h[:, :, -1]


def test_scan_matches_closed_form_and_chains() -> None:
    torch.manual_seed(1)
    b, d, n, T = 2, 5, 4, 7
    f64 = torch.float64
    u, delta, z = (torch.randn(b, d, T, dtype=f64) for _ in range(3))
    B, C = torch.randn(b, n, T, dtype=f64), torch.randn(b, n, T, dtype=f64)
    A = -torch.rand(d, n, dtype=f64) - 0.1
    D, bias, h0 = torch.randn(d, dtype=f64), torch.randn(d, dtype=f64), torch.randn(b, d, n, dtype=f64)
    y, h = selective_scan(u, delta, A, B, C, D, z, bias, h0)
    y_ref, h_ref = closed_form_scan(u, delta, A, B, C, D, z, bias, h0)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)
    # [x1; x2] == x1, then x2 from the returned state
    y1, s = selective_scan(u[..., :3], delta[..., :3], A, B[..., :3], C[..., :3], D, z[..., :3], bias, h0)
    y2, s2 = selective_scan(u[..., 3:], delta[..., 3:], A, B[..., 3:], C[..., 3:], D, z[..., 3:], bias, s)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y)
    torch.testing.assert_close(s2, h)


def test_parameter_names_and_shapes_match_mamba_ssm() -> None:
    net = build("mamba", "tiny", device="meta")
    d, n_layer, V = 128, 4, 1024
    e, n, k, r = 2 * d, 16, 4, 8  # d_inner, d_state, d_conv, dt_rank = ceil(128 / 16)
    want = {"backbone.embedding.weight": (V, d), "backbone.norm_f.weight": (d,), "lm_head.weight": (V, d)}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        want[p + "norm.weight"] = (d,)
        want[p + "mixer.in_proj.weight"] = (2 * e, d)
        want[p + "mixer.conv1d.weight"] = (e, 1, k)
        want[p + "mixer.conv1d.bias"] = (e,)
        want[p + "mixer.x_proj.weight"] = (r + 2 * n, e)
        want[p + "mixer.dt_proj.weight"] = (e, r)
        want[p + "mixer.dt_proj.bias"] = (e,)
        want[p + "mixer.A_log"] = (e, n)
        want[p + "mixer.D"] = (e,)
        want[p + "mixer.out_proj.weight"] = (d, e)
    got = {name: tuple(t.shape) for name, t in net.state_dict().items()}
    assert got == want
    assert net.lm_head.weight is net.backbone.embedding.weight


def test_init_values() -> None:
    torch.manual_seed(0)
    m = build("mamba", "tiny").backbone.layers[0].mixer
    torch.testing.assert_close(m.A_log[3], torch.log(torch.arange(1.0, 17.0)))
    assert torch.all(m.D == 1)
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


@torch.no_grad()
def test_causal() -> None:
    model = tiny()
    ids = torch.randint(0, 97, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 97
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_1_3b_param_count_on_meta() -> None:
    n = count_params(build("mamba", "1.3b", device="meta"))
    assert 1.2e9 < n < 1.45e9


def test_mamba_ssm_on_cpu_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError) as e:
        build("mamba", "tiny", impl="mamba_ssm")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError):
        tiny().impl = "nope"
    if importlib.util.find_spec("mamba_ssm") is None:
        with pytest.raises(UserError, match="pip install"):
            tiny().impl = "mamba_ssm"


def test_vocab_padded_like_mamba_ssm_and_caches_interchange() -> None:
    model = tiny()  # vocab 97 -> 104 embedding rows (pad_vocab_size_multiple 8); logits keep 97
    assert model.backbone.embedding.weight.shape == (104, 32)
    ids = torch.randint(0, 97, (2, 5))
    assert model(ids).shape == (2, 5, 97)
    cache = model.allocate_cache(2, 8)
    assert cache.params is None  # mamba-ssm's InferenceParams appear only when its impl runs
    assert model.prefill(ids, cache).shape == (2, 97)
    assert model.decode_impl == "torch_ref"


@torch.no_grad()
def test_bf16_cast_keeps_A_log_and_D_in_fp32() -> None:
    torch.manual_seed(0)
    ref = build("mamba", "tiny")
    model = build("mamba", "tiny", dtype=torch.bfloat16)
    model.load_state_dict(ref.state_dict())  # same weights; load_state_dict casts into each parameter's dtype
    mixer = model.backbone.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    assert mixer.A_log.dtype == torch.float32 and mixer.D.dtype == torch.float32
    torch.testing.assert_close(mixer.A_log, ref.backbone.layers[0].mixer.A_log, rtol=0, atol=0)
    ids = torch.randint(0, 1024, (2, 12))
    full = model(ids).float()
    cache = model.allocate_cache(2, 12)
    steps = [model.prefill(ids[:, :8], cache)] + [model.decode_step(ids[:, t : t + 1], cache) for t in range(8, 12)]
    got = torch.stack(steps, 1).float()
    assert ((got - full[:, 7:]).norm() / full[:, 7:].norm()).item() < 2e-2
    want = ref(ids)
    assert ((full - want).norm() / want.norm()).item() < 3e-2


def test_state_dict_round_trip() -> None:
    a, b = tiny(), tiny()
    torch.manual_seed(5)
    b2 = MambaLM(MambaConfig(vocab_size=97, d_model=32, n_layer=2, d_state=8)).double()
    b2.load_state_dict(a.state_dict())
    ids = torch.randint(0, 97, (1, 6))
    torch.testing.assert_close(b2(ids), a(ids), rtol=0, atol=0)
    assert b2.lm_head.weight is b2.backbone.embedding.weight
    del b


class _FakeSSMModel(torch.nn.Module):
    """Stands in for mamba-ssm's MambaLMHeadModel on CPU (same names, same forward signature, same seqlen_offset
    switch), to test the wrapper's plumbing: weight sharing through `.to()`, InferenceParams, step mode."""

    def __init__(self, config: SimpleNamespace, device: str | None = None) -> None:
        super().__init__()
        c = config.ssm_cfg
        with torch.device(device or "cpu"):
            inner = MambaLM(MambaConfig(config.vocab_size, config.d_model, config.n_layer, c["d_state"], c["d_conv"]))
        self.backbone, self.lm_head = inner.backbone, inner.lm_head  # the same modules: re-pointing reaches both
        object.__setattr__(self, "inner", inner)
        self.offsets: list[int] = []

    def allocate_inference_cache(self, batch_size: int, max_seqlen: int) -> dict:
        w = self.lm_head.weight
        m = self.backbone.layers[0].mixer
        return {
            i: (w.new_zeros(batch_size, m.d_inner, m.d_conv), w.new_zeros(batch_size, m.d_inner, m.d_state))
            for i in range(len(self.backbone.layers))
        }

    def forward(self, input_ids, position_ids=None, inference_params=None, num_last_tokens=0):
        out = namedtuple("CausalLMOutput", ["logits"])
        if inference_params is None:
            return out(self.inner(input_ids, logits_to_keep=num_last_tokens))
        self.offsets.append(inference_params.seqlen_offset)
        states = inference_params.key_value_memory_dict
        cache = MambaCache([states[i][0] for i in states], [states[i][1] for i in states])
        if inference_params.seqlen_offset > 0:
            return out(self.inner.decode_step(input_ids, cache)[:, None])
        return out(self.inner.prefill(input_ids, cache)[:, None])


@dataclass
class _FakeInferenceParams:
    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    key_value_memory_dict: dict = field(default_factory=dict)


@torch.no_grad()
def test_mamba_ssm_wrapper_plumbing_with_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(
        MambaLMHeadModel=_FakeSSMModel,
        MambaConfig=lambda **kw: SimpleNamespace(**kw),
        InferenceParams=_FakeInferenceParams,
    )
    monkeypatch.setattr(mamba_mod, "_mamba_ssm", lambda: fake)
    model = tiny(torch.float32)
    ids = torch.randint(0, 97, (2, 9))
    ref = model(ids)
    model.impl = "mamba_ssm"
    ssm = model.ssm_model
    assert all(p.is_meta is False for p in ssm.parameters())
    model.to(torch.float64)  # a dtype cast after the tie keeps one set of weights
    ours = {id(p) for p in model.parameters()}
    assert all(id(p) in ours and p.dtype == torch.float64 for p in ssm.parameters())
    torch.testing.assert_close(model(ids), ref.double(), rtol=1e-5, atol=1e-5)
    cache = model.allocate_cache(2, 9)
    assert cache.params is not None and cache.ssm[0].dtype == torch.float64
    steps = [model.prefill(ids[:, :5], cache)] + [model.decode_step(ids[:, t : t + 1], cache) for t in range(5, 9)]
    torch.testing.assert_close(torch.stack(steps, 1), model(ids)[:, 4:])
    assert ssm.offsets == [0, 5, 6, 7, 8]  # prefill at offset 0, then step mode
    assert model.decode_impl == "mamba_ssm_step"
    # a fresh cache stepped without a prefill still runs in step mode (zero states == empty history)
    cache = model.allocate_cache(2, 2)
    model.decode_step(ids[:, :1], cache)
    assert ssm.offsets[-1] == 1
    # a cache allocated under torch_ref continues under mamba_ssm (InferenceParams made over its tensors)
    model.impl = "torch_ref"
    cache = model.allocate_cache(2, 9)
    model.prefill(ids[:, :5], cache)
    model.impl = "mamba_ssm"
    torch.testing.assert_close(model.decode_step(ids[:, 5:6], cache), steps[1])
    assert "ssm_model" not in dict(model.named_modules()) and len(model.state_dict()) == len(tiny().state_dict())


# ---- GPU: mamba-ssm's MambaLMHeadModel on the same weights ---------------------------------------------------


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _outputs(model: MambaLM, ids: torch.Tensor, split: int) -> list[torch.Tensor]:
    cache = model.allocate_cache(ids.shape[0], ids.shape[1])
    out = [model(ids), model(ids, logits_to_keep=3), model.prefill(ids[:, :split], cache)]
    return out + [model.decode_step(ids[:, t : t + 1], cache) for t in range(split, ids.shape[1])]


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-3), (torch.bfloat16, 5e-2)])
@torch.inference_mode()
def test_mamba_ssm_matches_torch_ref(dtype: torch.dtype, tol: float) -> None:
    pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    model = build("mamba", "tiny", impl="mamba_ssm", device="cuda", dtype=dtype)
    ssm = model.ssm_model
    assert type(ssm).__name__ == "MambaLMHeadModel"
    # one set of weights: every parameter of mamba-ssm's model is one of ours, after the registry's dtype cast
    ours = {id(p) for p in model.parameters()}
    assert all(id(p) in ours for p in ssm.parameters())
    for name, p in ssm.named_parameters():  # A_log, D in fp32 as mamba-ssm keeps them; the rest in the model dtype
        assert p.is_cuda and p.dtype == (torch.float32 if name.endswith(("A_log", "D")) else dtype), name
    assert model.decode_impl == "mamba_ssm_step"
    ids = torch.randint(0, 1024, (2, 37), device="cuda")
    fast = _outputs(model, ids, 29)
    model.impl = "torch_ref"
    ref = _outputs(model, ids, 29)
    for i, (got, want) in enumerate(zip(fast, ref, strict=True)):
        assert _rel(got, want) < tol, i
    # torch_ref's forward equals its own prefill + steps (as on CPU)
    assert _rel(torch.stack(ref[2:], 1), ref[0][:, 28:]) < tol
    # each impl continues a cache the other allocated (cache prefilled by torch_ref, stepped by mamba_ssm)
    cache = model.allocate_cache(2, 37)
    model.prefill(ids[:, :29], cache)
    model.impl = "mamba_ssm"
    assert _rel(model.decode_step(ids[:, 29:30], cache), ref[3]) < tol


@pytest.mark.gpu
@torch.inference_mode()
def test_state_dict_loads_into_a_standalone_mamba_lm_head_model() -> None:
    pytest.importorskip("mamba_ssm")
    from mamba_ssm.models.config_mamba import MambaConfig as SSMConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    torch.manual_seed(0)
    model = build("mamba", "tiny", impl="mamba_ssm", device="cuda")
    cfg = SSMConfig(d_model=128, n_layer=4, vocab_size=1024, ssm_cfg={"layer": "Mamba1"}, rms_norm=True,
                    residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8)  # fmt: skip
    other = MambaLMHeadModel(cfg, device="cuda").eval()
    assert {k: v.shape for k, v in other.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    other.load_state_dict(model.state_dict())
    ids = torch.randint(0, 1024, (2, 40), device="cuda")
    torch.testing.assert_close(other(ids).logits, model(ids), rtol=0, atol=0)
    # and back: a mamba-ssm state_dict into our reference
    back = build("mamba", "tiny", device="cuda")
    back.load_state_dict(other.state_dict())
    assert _rel(back(ids), model(ids)) < 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["mamba_ssm", "torch_ref"])
def test_graphed_generate_equals_eager(impl: str) -> None:
    if impl == "mamba_ssm":
        pytest.importorskip("mamba_ssm")
    torch.manual_seed(0)
    model = build("mamba", "tiny", impl=impl, device="cuda", dtype=torch.bfloat16)
    ids = torch.randint(0, 1024, (2, 21), device="cuda")
    eager = model.generate(ids, max_new_tokens=10, cg=False)
    graphed = model.generate(ids, max_new_tokens=10, cg=True)
    assert torch.equal(eager, graphed)
