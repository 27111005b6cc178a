"""The TTT language model on CPU: implementations agree, decode after prefill equals the full forward, causality."""

from __future__ import annotations

import pytest
import torch
from ttt_helpers import MBS, ids, tiny_model

from ttt.errors import UserError

KINDS = [(lt, bb) for lt in ("linear", "mlp") for bb in ("mamba", "transformer")]


@pytest.mark.parametrize("layer_type,backbone", KINDS)
def test_dual_equals_naive(layer_type: str, backbone: str) -> None:
    model = tiny_model(layer_type, backbone)
    x = ids(2, 3 * MBS + 3)  # whole mini-batches and a ragged tail
    with torch.no_grad():
        model.impl = "dual"
        dual = model(x)
        model.impl = "naive"
        naive = model(x)
    assert dual.shape == (2, x.shape[1], 64)
    torch.testing.assert_close(dual, naive, rtol=1e-9, atol=1e-9)


def _decode_logits(model, x: torch.Tensor, prompt_len: int) -> torch.Tensor:
    cache = model.allocate_cache(x.shape[0], x.shape[1])
    out = [model.prefill(x[:, :prompt_len], cache)]
    for t in range(prompt_len, x.shape[1] - 1):
        out.append(model.decode_step(x[:, t : t + 1], cache))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("layer_type,backbone", KINDS)
@pytest.mark.parametrize("prompt_len", [1, 2 * MBS, 2 * MBS + 3])
def test_decode_after_prefill_equals_forward(layer_type: str, backbone: str, prompt_len: int) -> None:
    """Prompt lengths: a multiple of the mini-batch, a ragged one, and a single token; decode then runs across
    at least two mini-batch boundaries."""
    model = tiny_model(layer_type, backbone)
    x = ids(2, prompt_len + 2 * MBS + 2)
    with torch.no_grad():
        full = model(x)
    got = _decode_logits(model, x, prompt_len)
    torch.testing.assert_close(got, full[:, prompt_len - 1 : -1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["naive", "dual"])
def test_prefill_with_each_impl_and_cache_reuse(impl: str) -> None:
    model = tiny_model("linear", "mamba")
    model.impl = impl
    x = ids(1, 11)
    with torch.no_grad():
        full = model(x)
    cache = model.allocate_cache(1, 16)
    model.prefill(ids(1, 7, seed=5), cache)  # a stale cache must be fully overwritten by the next prefill
    for _ in range(3):
        model.decode_step(ids(1, 1, seed=6), cache)
    torch.testing.assert_close(model.prefill(x[:, :9], cache), full[:, 8], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.decode_step(x[:, 9:10], cache), full[:, 9], rtol=1e-9, atol=1e-9)
    assert int(cache.seqlen) == 10


@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
def test_causal(layer_type: str) -> None:
    model = tiny_model(layer_type, "mamba")
    x = ids(1, 2 * MBS + 2)
    y = x.clone()
    t = MBS + 1  # inside a mini-batch: the dual form's masking must hide later tokens of the same mini-batch
    y[0, t] = (x[0, t] + 1) % 64
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
    assert (a[:, t] - b[:, t]).abs().max() > 1e-6


def test_logits_to_keep_and_generate() -> None:
    model = tiny_model("mlp", "mamba")
    x = ids(2, 6)
    with torch.no_grad():
        full = model(x)
        torch.testing.assert_close(model(x, logits_to_keep=2), full[:, -2:])
        out = model.generate(x, max_new_tokens=7)
        # greedy: every generated token is the argmax of a full forward over its prefix
        ref = model(out[:, :-1]).argmax(-1)[:, x.shape[1] - 1 :]
    assert out.shape == (2, 13)
    assert torch.equal(out[:, x.shape[1] :], ref)


def test_gradients_reach_inner_init_and_lr() -> None:
    model = tiny_model("linear", "transformer")
    model.train()
    model(ids(1, 2 * MBS + 1)).logsumexp(-1).mean().backward()
    blk = model.layers[0].ttt
    for p in (blk.W0, blk.b0, blk.lr_weight, blk.lr_bias, blk.token_idx_bias, blk.ln_weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_impl_and_cache_errors_are_one_line() -> None:
    model = tiny_model()
    with pytest.raises(UserError, match="unknown TTT impl"):
        model.impl = "flash"
    cache = model.allocate_cache(2, 8)
    with pytest.raises(UserError) as e:
        model.prefill(ids(3, 4), cache)
    assert "\n" not in str(e.value)


def test_tied_embeddings_and_meta_build() -> None:
    model = tiny_model()
    assert model.lm_head.weight is model.embed.weight
    from bench.registry import build, count_params

    net = build("ttt_mlp", "tiny", device="meta")
    assert net.lm_head.weight is net.embed.weight and net.embed.weight.is_meta
    assert count_params(net) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layer_type", ["linear", "mlp"])
def test_graphed_decode_matches_eager(layer_type: str) -> None:
    from ttt.generation import GraphedDecode, restore_cache, snapshot_cache

    model = tiny_model(layer_type, "mamba").float().cuda()
    x = ids(2, 3 * MBS + 1).cuda()
    with torch.no_grad():
        full = model(x)
        cache = model.allocate_cache(2, 64)
        model.prefill(x[:, :5], cache)
        snap = snapshot_cache(cache)
        step = GraphedDecode(model, cache, 2)
        restore_cache(cache, snap)
        outs = [step(x[:, t : t + 1]).clone() for t in range(5, x.shape[1] - 1)]
    torch.testing.assert_close(torch.stack(outs, 1), full[:, 5:-1], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dual_compiled_matches_naive() -> None:
    model = tiny_model("linear", "mamba").float().cuda()
    x = ids(2, 3 * MBS + 3).cuda()
    with torch.no_grad():
        model.impl = "naive"
        ref = model(x)
        model.impl = "dual_compiled"
        got = model(x)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
