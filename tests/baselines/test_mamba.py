"""The Mamba baseline: decode equals the full forward, the scan matches a closed form, mamba-ssm naming, impls."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from baselines.mamba import MambaConfig, MambaLM, selective_scan
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


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None, reason="needs mamba_ssm")
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-3), (torch.bfloat16, 3e-2)])
@torch.no_grad()
def test_mamba_ssm_matches_torch_ref(dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    model = build("mamba", "tiny", impl="torch_ref", device="cuda", dtype=dtype)
    ids = torch.randint(0, 1024, (2, 37), device="cuda")
    out = {}
    for impl in ("torch_ref", "mamba_ssm"):
        model.impl = impl
        cache = model.allocate_cache(2, 64)
        logits = [model(ids), model.prefill(ids[:, :29], cache)]
        logits += [model.decode_step(ids[:, t : t + 1], cache) for t in range(29, 37)]
        out[impl] = logits
    assert model.decode_impl == "selective_state_update+causal_conv1d_update"
    for got, ref in zip(out["mamba_ssm"], out["torch_ref"], strict=True):
        assert _rel(got, ref) < tol
