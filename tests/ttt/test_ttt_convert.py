"""Official ttt-lm-pytorch checkpoints <-> ours. The official model does not construct under current transformers,
so its state_dict is synthesised from an independent list of its parameter names and shapes (read off ttt.py)."""

from __future__ import annotations

import json

import pytest
import torch
from ttt_helpers import MBS, ids, tiny_config, tiny_model

from ttt.convert import config_from_official, config_from_state_dict, from_official, load_converted, main, to_official
from ttt.errors import UserError
from ttt.model import TTTForCausalLM

KINDS = [(lt, bb) for lt in ("linear", "mlp") for bb in ("mamba", "transformer")]


def official_shapes(
    V: int, w: int, I: int, L: int, H: int, mlp: bool, pre_conv: bool, share_qk: bool, use_gate: bool, b: int, k: int
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official TTTForCausalLM's state_dict (persistent entries only)."""
    d = w // H
    out = {"model.embed_tokens.weight": (V, w), "model.norm.weight": (w,), "lm_head.weight": (V, w)}
    for i in range(L):
        p = f"model.layers.{i}."
        s = p + "seq_modeling_block."
        out |= {p + "seq_norm.weight": (w,), p + "ffn_norm.weight": (w,)}
        out |= {
            p + "mlp.gate_proj.weight": (I, w),
            p + "mlp.up_proj.weight": (I, w),
            p + "mlp.down_proj.weight": (w, I),
        }
        if pre_conv:
            out |= {p + "conv.norm.weight": (w,), p + "conv.conv.weight": (w, 1, k), p + "conv.conv.bias": (w,)}
        out |= {s + "q_proj.weight": (w, w), s + "v_proj.weight": (w, w), s + "o_proj.weight": (w, w)}
        if share_qk:
            out |= {s + "conv_q.weight": (w, 1, k), s + "conv_q.bias": (w,)}
            out |= {s + "conv_k.weight": (w, 1, k), s + "conv_k.bias": (w,)}
        else:
            out[s + "k_proj.weight"] = (w, w)
        if use_gate:
            out[s + "g_proj.weight"] = (w, w)
        out |= {
            s + "learnable_token_idx": (b,),
            s + "learnable_ttt_lr_weight": (H, 1, w),
            s + "learnable_ttt_lr_bias": (H, 1),
            s + "ttt_norm_weight": (H, d),
            s + "ttt_norm_bias": (H, d),
            s + "post_norm.weight": (w,),
            s + "post_norm.bias": (w,),
        }
        if mlp:
            out |= {s + "W1": (H, d, 4 * d), s + "b1": (H, 1, 4 * d), s + "W2": (H, 4 * d, d), s + "b2": (H, 1, d)}
        else:
            out |= {s + "W1": (H, d, d), s + "b1": (H, 1, d)}
    return out


def _official_sd(layer_type: str, backbone: str, seed: int = 0) -> dict[str, torch.Tensor]:
    m = backbone == "mamba"
    shapes = official_shapes(64, 32, 48, 2, 2, layer_type == "mlp", m, m, m, MBS, 4)
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=g, dtype=torch.float64) * 0.1 for k, s in shapes.items()}
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def _official_config(layer_type: str, backbone: str) -> dict:
    m = backbone == "mamba"
    return {
        "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 2, "ttt_layer_type": layer_type, "mini_batch_size": MBS, "ttt_base_lr": 1.0,
        "pre_conv": m, "share_qk": m, "use_gate": m, "conv_kernel": 4, "hidden_act": "silu",
        "tie_word_embeddings": True, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
    }  # fmt: skip


@pytest.mark.parametrize("layer_type,backbone", KINDS)
def test_load_official_state_dict(layer_type: str, backbone: str) -> None:
    cfg = config_from_official(_official_config(layer_type, backbone))
    assert cfg == tiny_config(layer_type, backbone)
    official = _official_sd(layer_type, backbone)
    model = TTTForCausalLM(cfg).double()
    model.load_state_dict(from_official(official, cfg))  # strict: every one of our keys is produced
    back = to_official(model.state_dict(), cfg)
    assert back.keys() == official.keys()
    for key, t in official.items():
        assert torch.equal(back[key], t), key
    # a spot check of one reshaped tensor: head 1's lr weight row
    s = "model.layers.1.seq_modeling_block."
    assert torch.equal(model.layers[1].ttt.lr_weight[1], official[s + "learnable_ttt_lr_weight"][1, 0])


@pytest.mark.parametrize("layer_type,backbone", KINDS)
def test_round_trip_identical_logits(layer_type: str, backbone: str) -> None:
    a = tiny_model(layer_type, backbone)
    cfg = a.config
    b = TTTForCausalLM(cfg).double().eval()
    b.load_state_dict(from_official(to_official(a.state_dict(), cfg), cfg))
    x = ids(2, 2 * MBS + 3)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_config_inferred_from_weights() -> None:
    for lt, bb in KINDS:
        assert config_from_state_dict(_official_sd(lt, bb)) == tiny_config(lt, bb)


def _one_line_error(fn) -> str:
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_wrong_shape_missing_and_unexpected_keys() -> None:
    cfg = tiny_config("linear", "mamba")
    bad_key = "model.layers.1.seq_modeling_block.b1"
    sd = _official_sd("linear", "mamba")
    sd[bad_key] = torch.zeros(2, 16)  # the official layout is (H, 1, d)
    msg = _one_line_error(lambda: from_official(sd, cfg))
    assert bad_key in msg and "[2, 16]" in msg and "[2, 1, 16]" in msg

    sd = _official_sd("linear", "mamba")
    del sd["model.layers.0.seq_modeling_block.conv_k.bias"]
    assert "conv_k.bias" in _one_line_error(lambda: from_official(sd, cfg))

    sd = _official_sd("linear", "mamba")  # a transformer-backbone checkpoint read with the mamba config
    sd["model.layers.0.seq_modeling_block.k_proj.weight"] = torch.zeros(32, 32)
    assert "k_proj" in _one_line_error(lambda: from_official(sd, cfg))

    sd = _official_sd("linear", "mamba")
    sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    assert "untied" in _one_line_error(lambda: from_official(sd, cfg))

    ours = tiny_model().state_dict()
    del ours["layers.0.ttt.W0"]
    assert "layers.0.ttt.W0" in _one_line_error(lambda: to_official(ours, cfg))


def test_lm_head_may_be_absent() -> None:
    cfg = tiny_config("mlp", "transformer")
    sd = _official_sd("mlp", "transformer")
    del sd["lm_head.weight"]
    ours = from_official(sd, cfg)
    assert ours["lm_head.weight"] is ours["embed.weight"]


def test_cli(tmp_path) -> None:
    from safetensors.torch import save_file

    sd = _official_sd("mlp", "mamba")
    del sd["lm_head.weight"]  # as HF writes tied weights to safetensors
    src, dst = tmp_path / "model.safetensors", tmp_path / "ours.safetensors"
    save_file(sd, str(src))
    (tmp_path / "config.json").write_text(json.dumps(_official_config("mlp", "mamba") | {"ttt_base_lr": 0.1}))
    main([str(src), str(dst)])
    model = load_converted(dst)
    assert model.config.ttt_base_lr == 0.1 and model.config.ttt_layer_type == "mlp"
    assert torch.equal(model.layers[0].ttt.W2, sd["model.layers.0.seq_modeling_block.W2"])
