"""The Transformer baseline: decode over the static KV cache equals the full forward, causality, backends."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from baselines.transformer import TransformerConfig, TransformerLM, apply_rope, rope_cos_sin
from bench.registry import build, count_params
from ttt.errors import UserError


def tiny(impl: str = "sdpa_math", dtype: torch.dtype = torch.float64) -> TransformerLM:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4)
    return TransformerLM(cfg, impl=impl).to(dtype).eval()


@pytest.mark.parametrize("prompt_len", [1, 5, 12])
def test_decode_after_prefill_equals_forward(prompt_len: int) -> None:
    model = tiny()
    ids = torch.randint(0, 97, (2, prompt_len + 6))
    full = model(ids)
    cache = model.allocate_cache(2, ids.shape[1] + 3)
    logits = [model.prefill(ids[:, :prompt_len], cache)]
    for t in range(prompt_len, ids.shape[1]):
        logits.append(model.decode_step(ids[:, t : t + 1], cache))
    got = torch.stack(logits, dim=1)
    torch.testing.assert_close(got, full[:, prompt_len - 1 :], rtol=1e-10, atol=1e-10)
    assert int(cache.seqlen) == ids.shape[1]


def test_causal_and_position_dependent() -> None:
    model = tiny()
    ids = torch.randint(0, 97, (1, 10))
    changed = ids.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 97
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    # RoPE makes attention depend on order: a permuted prefix changes the last logits.
    perm = ids.clone()
    perm[0, :3] = ids[0, [2, 0, 1]]
    assert not torch.allclose(model(perm)[:, -1], a[:, -1])


@torch.no_grad()
def test_generate_is_greedy() -> None:
    model = tiny()
    ids = torch.randint(0, 97, (2, 4))
    out = model.generate(ids, max_new_tokens=5)
    assert out.shape == (2, 9)
    for t in range(4, 9):
        assert torch.equal(model(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_tied_embeddings_and_logits_to_keep() -> None:
    model = tiny()
    assert model.lm_head.weight is model.embed_tokens.weight
    ids = torch.randint(0, 97, (2, 8))
    torch.testing.assert_close(model(ids, logits_to_keep=3), model(ids)[:, -3:])


def test_unknown_impl_and_overlong_prompt() -> None:
    model = tiny()
    with pytest.raises(UserError, match="unknown transformer impl 'nope'"):
        model.impl = "nope"
    cache = model.allocate_cache(1, 4)
    with pytest.raises(UserError, match="does not fit"):
        model.prefill(torch.zeros(1, 5, dtype=torch.long), cache)


def test_gpu_only_backend_on_cpu_is_one_line() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for impl in ("sdpa_flash", "sdpa_cudnn", "flash_attn"):
        with pytest.raises(UserError) as e:
            build("transformer", "tiny", impl=impl)
        assert "\n" not in str(e.value) and impl in str(e.value)


def test_paper_size_param_count() -> None:
    # Llama at the 1.3b shape with tied 32k embeddings: 24 * (4 h^2 + 3 h i) + V h + norms.
    h, i, L, V = 2048, 5504, 24, 32000
    expected = L * (4 * h * h + 3 * h * i + 2 * h) + V * h + h
    assert count_params(build("transformer", "1.3b", device="meta")) == expected
    assert abs(expected / 1.3e9 - 1) < 0.10


def test_rope_is_a_rotation_by_relative_position() -> None:
    torch.manual_seed(0)
    d = 16
    q, k = torch.randn(1, 1, 1, d, dtype=torch.float64), torch.randn(1, 1, 1, d, dtype=torch.float64)

    def rot(x: torch.Tensor, p: int) -> torch.Tensor:
        cos, sin = rope_cos_sin(torch.tensor([p]), d, 10000.0)
        return apply_rope(x, cos.double(), sin.double())

    torch.testing.assert_close(rot(q, 0), q)  # position 0 is the identity
    torch.testing.assert_close(rot(q, 7).norm(), q.norm())  # a rotation
    # <R_m q, R_n k> depends on m - n only
    torch.testing.assert_close((rot(q, 9) * rot(k, 4)).sum(), (rot(q, 105) * rot(k, 100)).sum())


def test_parameter_names_and_cache_layout() -> None:
    net = build("transformer", "tiny", device="meta")
    names = {n for n, _ in net.named_parameters()}
    assert names >= {
        "embed_tokens.weight",
        "norm.weight",
        "layers.1.self_attn.o_proj.weight",
        "layers.0.mlp.up_proj.weight",
    }
    assert not any(n.endswith("bias") for n in names)
    model = tiny(dtype=torch.float32)
    cache = model.allocate_cache(3, 20)
    assert cache.k[0].shape == (3, 32, 4, 8) and cache.max_seqlen == 20  # slots padded to 16 for the mask
    assert cache.seqlen.shape == () and cache.seqlen.dtype == torch.long
    assert model.decode_impl == "sdpa_math_static_cache"
    model.impl = "sdpa_flash"  # switching keeps the weights; decode is named, never a silent fallback
    assert model.decode_impl == "sdpa_efficient_attention_static_cache"


def _gpu_model(impl: str) -> TransformerLM:
    size = OmegaConf.create(
        {"vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_layers": 2, "num_heads": 4}
    )
    from baselines.transformer import build as build_tf

    torch.manual_seed(0)
    with torch.device("cuda"):
        return build_tf(size, OmegaConf.create({}), impl=impl).to(torch.bfloat16).eval()


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["sdpa_flash", "sdpa_cudnn", "flash_attn"])
def test_gpu_backends_match_math(impl: str) -> None:
    if impl == "flash_attn":
        pytest.importorskip("flash_attn")
    model = _gpu_model("sdpa_math")
    ids = torch.randint(0, 512, (2, 300), device="cuda")
    with torch.inference_mode():
        ref = model(ids).float()
        cache_ref = model.allocate_cache(2, 310)
        pre_ref = model.prefill(ids[:, :290], cache_ref)
        step_ref = torch.stack([model.decode_step(ids[:, t : t + 1], cache_ref) for t in range(290, 300)], 1)
        model.impl = impl
        got = model(ids).float()
        cache = model.allocate_cache(2, 310)
        pre = model.prefill(ids[:, :290], cache)
        step = torch.stack([model.decode_step(ids[:, t : t + 1], cache) for t in range(290, 300)], 1)
    assert ((got - ref).norm() / ref.norm()).item() < 2e-2
    assert ((pre.float() - pre_ref.float()).norm() / pre_ref.float().norm()).item() < 2e-2
    assert ((step.float() - step_ref.float()).norm() / step_ref.float().norm()).item() < 2e-2
    # the decode over the cache equals the full forward of the same backend
    assert ((step.float() - got[:, 290:300]).norm() / got[:, 290:300].norm()).item() < 2e-2


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["sdpa_math", "sdpa_flash", "flash_attn"])
def test_gpu_graphed_generate_equals_eager(impl: str) -> None:
    if impl == "flash_attn":
        pytest.importorskip("flash_attn")
    model = _gpu_model(impl)
    ids = torch.randint(0, 512, (2, 37), device="cuda")
    eager = model.generate(ids, max_new_tokens=12, cg=False)
    graphed = model.generate(ids, max_new_tokens=12, cg=True)
    assert torch.equal(eager, graphed)
