"""Checkpoints of the official ttt-lm-pytorch `TTTForCausalLM` <-> ours.

The official names and shapes (ttt.py of test-time-training/ttt-lm-pytorch), per layer i, with
s = model.layers.{i}.seq_modeling_block:
    s.q_proj / k_proj (absent with share_qk) / v_proj / o_proj / g_proj (use_gate) .weight   (w, w)
    s.conv_q / conv_k .weight (w, 1, k), .bias (w)          (share_qk)
    s.learnable_token_idx (b,)   s.learnable_ttt_lr_weight (H, 1, w)   s.learnable_ttt_lr_bias (H, 1)
    s.ttt_norm_weight / ttt_norm_bias (H, d)   s.post_norm.weight / .bias (w)
    linear: s.W1 (H, d, d), s.b1 (H, 1, d);  mlp: s.W1 (H, d, 4d), s.b1 (H, 1, 4d), s.W2 (H, 4d, d), s.b2 (H, 1, d)
    model.layers.{i}.conv.norm.weight (w), .conv.conv.weight (w, 1, k), .conv.conv.bias (w)   (pre_conv)
    model.layers.{i}.seq_norm / ffn_norm .weight (w), .mlp.{gate,up}_proj.weight (I, w), .mlp.down_proj.weight (w, I)
    model.embed_tokens.weight (V, w), model.norm.weight (w), lm_head.weight (V, w) (tied; may be absent on disk)
Ours differ in names and drop the official singleton dims (biases (H, d), lr weight (H, w), conv weight (w, k)).

CLI: python -m ttt.convert official.safetensors|official.bin out.safetensors [--config config.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ttt.config import TTTConfig
from ttt.errors import UserError

Shape = tuple[int, ...]
# Non-persistent buffers of the official model that older checkpoints may still carry: not weights, skipped.
_OFFICIAL_BUFFERS = ("rotary_emb.inv_freq", "seq_modeling_block.token_idx")


def key_map(cfg: TTTConfig) -> list[tuple[str, Shape, str, Shape]]:
    """(our key, our shape, official key, official shape) for every weight of a model with config `cfg`."""
    w, H, d, b, k = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.mini_batch_size, cfg.conv_kernel
    V, I = cfg.vocab_size, cfg.intermediate_size
    rows: list[tuple[str, Shape, str, Shape]] = [
        ("embed.weight", (V, w), "model.embed_tokens.weight", (V, w)),
        ("norm.weight", (w,), "model.norm.weight", (w,)),
        ("lm_head.weight", (V, w), "lm_head.weight", (V, w)),
    ]
    for i in range(cfg.num_layers):
        o, s = f"layers.{i}.", f"model.layers.{i}."
        t, st = o + "ttt.", s + "seq_modeling_block."
        same = lambda ours, off, shape: rows.append((ours, shape, off, shape))  # noqa: E731
        same(o + "seq_norm.weight", s + "seq_norm.weight", (w,))
        same(o + "ffn_norm.weight", s + "ffn_norm.weight", (w,))
        same(o + "mlp.gate_proj.weight", s + "mlp.gate_proj.weight", (I, w))
        same(o + "mlp.up_proj.weight", s + "mlp.up_proj.weight", (I, w))
        same(o + "mlp.down_proj.weight", s + "mlp.down_proj.weight", (w, I))
        if cfg.pre_conv:
            same(o + "pre_conv.norm.weight", s + "conv.norm.weight", (w,))
            rows.append((o + "pre_conv.conv.weight", (w, k), s + "conv.conv.weight", (w, 1, k)))
            same(o + "pre_conv.conv.bias", s + "conv.conv.bias", (w,))
        if cfg.share_qk:
            same(t + "qk_proj.weight", st + "q_proj.weight", (w, w))
            for c in ("conv_q", "conv_k"):
                rows.append((f"{t}{c}.weight", (w, k), f"{st}{c}.weight", (w, 1, k)))
                same(f"{t}{c}.bias", f"{st}{c}.bias", (w,))
        else:
            same(t + "q_proj.weight", st + "q_proj.weight", (w, w))
            same(t + "k_proj.weight", st + "k_proj.weight", (w, w))
        same(t + "v_proj.weight", st + "v_proj.weight", (w, w))
        same(t + "o_proj.weight", st + "o_proj.weight", (w, w))
        if cfg.use_gate:
            same(t + "g_proj.weight", st + "g_proj.weight", (w, w))
        same(t + "token_idx_bias", st + "learnable_token_idx", (b,))
        rows.append((t + "lr_weight", (H, w), st + "learnable_ttt_lr_weight", (H, 1, w)))
        rows.append((t + "lr_bias", (H,), st + "learnable_ttt_lr_bias", (H, 1)))
        same(t + "ln_weight", st + "ttt_norm_weight", (H, d))
        same(t + "ln_bias", st + "ttt_norm_bias", (H, d))
        same(t + "post_norm.weight", st + "post_norm.weight", (w,))
        same(t + "post_norm.bias", st + "post_norm.bias", (w,))
        if cfg.ttt_layer_type == "linear":
            same(t + "W0", st + "W1", (H, d, d))
            rows.append((t + "b0", (H, d), st + "b1", (H, 1, d)))
        else:
            same(t + "W1", st + "W1", (H, d, 4 * d))
            rows.append((t + "b1", (H, 4 * d), st + "b1", (H, 1, 4 * d)))
            same(t + "W2", st + "W2", (H, 4 * d, d))
            rows.append((t + "b2", (H, d), st + "b2", (H, 1, d)))
    return rows


def _translate(
    sd: Mapping[str, torch.Tensor],
    pairs: list[tuple[str, Shape, str, Shape]],
    source: str,
    optional: set[str],
    ignore: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """pairs: (source key, source shape, target key, target shape). One-line UserError on the first bad key."""
    out: dict[str, torch.Tensor] = {}
    known = {p[0] for p in pairs}
    for key in sd:
        if key not in known and not key.endswith(ignore):
            raise UserError(f"unexpected key in the {source} state_dict: {key!r} (wrong config or not a TTT model?)")
    for src, src_shape, dst, dst_shape in pairs:
        if src not in sd:
            if src in optional:
                continue
            raise UserError(f"missing key in the {source} state_dict: {src!r} (expected shape {list(src_shape)})")
        t = sd[src]
        if tuple(t.shape) != src_shape:
            raise UserError(
                f"wrong shape for {src!r} in the {source} state_dict: {list(t.shape)}, expected {list(src_shape)}"
            )
        out[dst] = t.reshape(dst_shape)
    return out


def from_official(state_dict: Mapping[str, torch.Tensor], cfg: TTTConfig) -> dict[str, torch.Tensor]:
    """Official state_dict -> ours (load with `model.load_state_dict(sd)`). lm_head.weight may be absent (tied,
    as safetensors stores it); when present it must equal the embedding, since our head is always tied."""
    pairs = [(off, off_s, ours, ours_s) for ours, ours_s, off, off_s in key_map(cfg)]
    out = _translate(state_dict, pairs, "official", optional={"lm_head.weight"}, ignore=_OFFICIAL_BUFFERS)
    if "lm_head.weight" in out and not torch.equal(out["lm_head.weight"], out["embed.weight"]):
        raise UserError("lm_head.weight differs from model.embed_tokens.weight: untied checkpoints are not supported")
    out["lm_head.weight"] = out["embed.weight"]
    return out


def to_official(state_dict: Mapping[str, torch.Tensor], cfg: TTTConfig) -> dict[str, torch.Tensor]:
    """Our state_dict -> the official names and shapes (lm_head.weight included, tied to the embedding)."""
    pairs = key_map(cfg)
    out = _translate(state_dict, pairs, "ttt-bench", optional={"lm_head.weight"})
    out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def config_from_official(official: Mapping[str, Any]) -> TTTConfig:
    """The official TTTConfig fields (config.json or its to_dict()) -> our TTTConfig."""
    g = official.get
    if g("hidden_act", "silu") != "silu":
        raise UserError(f"hidden_act {g('hidden_act')!r} is not supported (only silu, the official default)")
    if not g("tie_word_embeddings", True):
        raise UserError("tie_word_embeddings=False is not supported: every official TTT config ties the LM head")
    ltype = str(g("ttt_layer_type", "linear"))
    ltype = "mlp" if "mlp" in ltype else "linear" if "linear" in ltype else ltype
    pre_conv, share_qk, use_gate = bool(g("pre_conv", False)), bool(g("share_qk", False)), bool(g("use_gate", False))
    return TTTConfig(
        vocab_size=int(g("vocab_size", 32000)),
        hidden_size=int(g("hidden_size", 2048)),
        intermediate_size=int(g("intermediate_size", 5504)),
        num_layers=int(g("num_hidden_layers", 24)),
        num_heads=int(g("num_attention_heads", 32)),
        ttt_layer_type=ltype,
        backbone="mamba" if (pre_conv and share_qk and use_gate) else "transformer",
        mini_batch_size=int(g("mini_batch_size", 16)),
        ttt_base_lr=float(g("ttt_base_lr", 1.0)),
        rope_theta=float(g("rope_theta", 10000.0)),
        conv_kernel=int(g("conv_kernel", 4)),
        pre_conv=pre_conv,
        share_qk=share_qk,
        use_gate=use_gate,
        rms_norm_eps=float(g("rms_norm_eps", 1e-6)),
        initializer_range=float(g("initializer_range", 0.02)),
    )


def config_from_state_dict(sd: Mapping[str, torch.Tensor], ttt_base_lr: float = 1.0) -> TTTConfig:
    """Infer the shape fields of an official checkpoint from its tensors (for a .bin/.safetensors without its
    config.json). ttt_base_lr and rope_theta are not in the weights: pass them or keep the defaults."""
    s0 = "model.layers.0.seq_modeling_block."
    if "model.embed_tokens.weight" not in sd or s0 + "W1" not in sd:
        raise UserError("not an official TTT checkpoint: model.embed_tokens.weight or layer 0's W1 is missing")
    V, w = sd["model.embed_tokens.weight"].shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("model.layers."))
    share_qk = s0 + "k_proj.weight" not in sd
    kernel_src = s0 + "conv_q.weight" if share_qk else "model.layers.0.conv.conv.weight"
    return config_from_official(
        {
            "vocab_size": V,
            "hidden_size": w,
            "intermediate_size": sd["model.layers.0.mlp.gate_proj.weight"].shape[0],
            "num_hidden_layers": layers,
            "num_attention_heads": sd[s0 + "learnable_ttt_lr_weight"].shape[0],
            "ttt_layer_type": "mlp" if s0 + "W2" in sd else "linear",
            "mini_batch_size": sd[s0 + "learnable_token_idx"].shape[0],
            "pre_conv": "model.layers.0.conv.conv.weight" in sd,
            "share_qk": share_qk,
            "use_gate": s0 + "g_proj.weight" in sd,
            "conv_kernel": sd[kernel_src].shape[-1] if kernel_src in sd else 4,
            "ttt_base_lr": ttt_base_lr,
        }
    )


def _load(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def load_converted(path: str | Path) -> Any:
    """A TTTForCausalLM from a file written by this module's CLI (config from its metadata, dtype from its weights)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ttt.model import TTTForCausalLM

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "ttt_config" not in meta:
        raise UserError(f"{path} has no 'ttt_config' metadata: was it written by `python -m ttt.convert`?")
    sd = load_file(str(path))
    model = TTTForCausalLM(TTTConfig(**json.loads(meta["ttt_config"]))).to(sd["embed.weight"].dtype)
    sd["lm_head.weight"] = sd["embed.weight"]
    model.load_state_dict(sd)
    return model


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Convert an official ttt-lm-pytorch checkpoint to ttt-bench's layout.")
    ap.add_argument("src", type=Path, help="official checkpoint (.safetensors or .bin/.pt)")
    ap.add_argument("dst", type=Path, help="output .safetensors (our names; the config goes into its metadata)")
    ap.add_argument("--config", type=Path, help="official config.json (default: next to src if present, else inferred)")
    args = ap.parse_args(argv)
    sd = _load(args.src)
    cfg_path = args.config or args.src.with_name("config.json")
    cfg = config_from_official(json.loads(cfg_path.read_text())) if cfg_path.is_file() else config_from_state_dict(sd)
    ours = from_official(sd, cfg)
    ours.pop("lm_head.weight")  # tied: safetensors refuses shared storage; load with strict=False or re-tie
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in ours.items()}, str(args.dst), metadata={"ttt_config": json.dumps(asdict(cfg))}
    )
    print(f"wrote {args.dst}: {len(ours)} tensors, {cfg.num_layers} layers, ttt_layer_type={cfg.ttt_layer_type}")


if __name__ == "__main__":
    main()
