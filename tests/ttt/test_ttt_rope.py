"""RoPE: the interleaved variant the official code gets from permute_qk + rotate_half + undo_permute_qk, with
positions taken modulo the mini-batch size."""

from __future__ import annotations

import torch
from ttt_helpers import MBS, tiny_model

from ttt.rope import apply_rope, rope_cos_sin


def official_style_rope(x: torch.Tensor, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Reference written from the official code's description: permute (d/2, 2) -> (2, d/2), rotate-half RoPE
    with cat(freqs, freqs), undo the permutation."""
    B, H, T, d = x.shape
    xp = x.reshape(B, H, T, d // 2, 2).transpose(3, 4).reshape(B, H, T, d)
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    freqs = pos.double()[:, None] * inv[None]
    emb = torch.cat((freqs, freqs), -1)
    rot = torch.cat((-xp[..., d // 2 :], xp[..., : d // 2]), -1)
    y = xp * emb.cos() + rot * emb.sin()
    return y.reshape(B, H, T, 2, d // 2).transpose(3, 4).reshape(B, H, T, d)


def test_interleaved_matches_official_permuted_rope() -> None:
    x = torch.randn(2, 3, 7, 16, dtype=torch.float64)
    pos = torch.arange(7)
    cos, sin = rope_cos_sin(pos, 16, 10000.0, torch.float64)
    torch.testing.assert_close(apply_rope(x, cos, sin), official_style_rope(x, pos), rtol=1e-12, atol=1e-12)


def test_layer_positions_are_modulo_mini_batch(monkeypatch) -> None:
    """Captures the q and k the layer hands to the op and recomputes them independently with positions t % b;
    with plain positions t the tokens past the first mini-batch would differ."""
    import ttt.ops.ttt_linear as ops

    model = tiny_model("linear", "transformer")
    layer = model.layers[0].ttt
    seen = {}
    real = ops.ttt_linear

    def spy(q, k, v, *args, **kw):
        seen.setdefault("qk", (q, k))
        return real(q, k, v, *args, **kw)

    monkeypatch.setattr(ops, "ttt_linear", spy)
    T = 3 * MBS + 1
    x = torch.randn(1, T, 32, dtype=torch.float64)
    with torch.no_grad():
        layer(x, impl="dual")
        heads = lambda y: y.reshape(1, T, 2, 16).transpose(1, 2)  # noqa: E731
        q_raw, k_raw = heads(layer.q_proj(x)), heads(layer.k_proj(x))
    q, k = seen["qk"]
    mod = torch.arange(T) % MBS
    torch.testing.assert_close(q, official_style_rope(q_raw, mod), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(k, official_style_rope(k_raw, mod), rtol=1e-12, atol=1e-12)
    plain = official_style_rope(q_raw, torch.arange(T))
    assert (q[:, :, MBS:] - plain[:, :, MBS:]).abs().max() > 1e-3  # the check above can tell the two apart
