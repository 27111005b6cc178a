"""bench.train_graph: the pre-capture warm-up leaves a run as it was; on a GPU a graphed training run equals an
eager one step for step; train.cuda_graph's choices and errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import _small_corpus, cfg_of, corpus_root  # noqa: F401 (fixtures: the small corpus cfg_of reads)

from bench import checkpoint, optim, registry, train, train_graph
from ttt.errors import UserError


def _tiny_run(model: str, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[torch.Tensor]]:
    torch.manual_seed(seed)
    net = registry.build(model, "tiny")
    opt = optim.make_optimizer(net, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    micro = [torch.randint(0, 257, (2, 33))]
    return net, opt, micro


def _step_fn(net: torch.nn.Module, opt: torch.optim.Optimizer):
    params = [p for g in opt.param_groups for p in g["params"]]

    def step(micro: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum = torch.zeros(())
        for w in micro:
            logits = net(w[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
            (loss / len(micro)).backward()
            loss_sum = loss_sum + loss.detach()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss_sum / len(micro), gn

    return step


def _state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("model", ["ttt_linear", "transformer"])
def test_warm_up_leaves_the_run_as_it_was(model):
    """Fresh (no optimizer state yet) and mid-run (state from two real steps): after the warm-up the parameters,
    the moments and step counts, and the lr are the same, no gradient is left, and the next step gives the same
    loss and weights as a twin run that never warmed up."""
    for real_steps in (0, 2):
        net, opt, micro = _tiny_run(model)
        twin, twin_opt, _ = _tiny_run(model)
        step, twin_step = _step_fn(net, opt), _step_fn(twin, twin_opt)
        for _ in range(real_steps):
            for s, o in ((step, opt), (twin_step, twin_opt)):
                s(micro)
                o.zero_grad(set_to_none=True)
        before = [p.detach().clone() for p in net.parameters()]
        state_before = [v.clone() for v in _state_tensors(opt)]
        train_graph.warm_up(step, [torch.randint(0, 257, (2, 17))], net, opt)
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
        assert opt.param_groups[0]["lr"] == 1e-2
        assert all(p.grad is None for p in net.parameters())
        after = _state_tensors(opt)
        if real_steps:
            assert len(after) == len(state_before)
            assert all(torch.equal(a, b) for a, b in zip(state_before, after))
        else:  # the state the warm-up created is a fresh one: zero moments, step 0
            assert after and all(not v.any() for v in after)
        loss, _ = step(micro)
        twin_loss, _ = twin_step(micro)
        assert float(loss) == float(twin_loss)
        for a, b in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_warm_up_restores_tensor_lr():
    net, opt, micro = _tiny_run("ttt_linear")
    for g in opt.param_groups:  # what tensor_lr does, on the CPU
        g["lr"] = torch.tensor(3e-3)
    lr_obj = opt.param_groups[0]["lr"]
    train_graph.warm_up(_step_fn(net, opt), micro, net, opt)
    assert opt.param_groups[0]["lr"] is lr_obj and float(lr_obj) == pytest.approx(3e-3)
    train_graph.set_lr(opt, 1e-4)
    assert opt.param_groups[0]["lr"] is lr_obj and float(lr_obj) == pytest.approx(1e-4)  # in place


def test_set_ttt_base_lr_writes_into_a_tensor():
    net = registry.build("ttt_mlp", "tiny")
    layers = train.ttt_layers(net)
    t = torch.tensor(0.05)
    train.set_ttt_base_lr(net, t)
    assert all(layer.cfg.ttt_base_lr is t for layer in layers)
    x = torch.randn(1, 5, 128)
    at_005 = layers[0].eta(x)
    train.set_ttt_base_lr(net, 0.1)  # while a tensor: written in place (a captured step reads its memory)
    assert layers[0].cfg.ttt_base_lr is t and float(t) == pytest.approx(0.1)
    torch.testing.assert_close(layers[0].eta(x), at_005 * 2)
    train.set_ttt_base_lr(net, 0.1 + 0 * t)  # a tensor value replaces it
    assert layers[0].cfg.ttt_base_lr is not t


def test_cuda_graph_choice_and_errors(tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert train.use_cuda_graph("auto", "ttt", cuda) and not train.use_cuda_graph("auto", "ttt", cpu)
    assert not train.use_cuda_graph("auto", "mamba", cuda) and train.use_cuda_graph(True, "mamba", cuda)
    assert not train.use_cuda_graph(False, "ttt", cuda)
    with pytest.raises(UserError) as e:
        train.resolve(cfg_of(tmp_path, "train.cuda_graph=true"))
    assert "device 'cpu' has none" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="must be auto, true or false, not 'sometimes'"):
        train.resolve(cfg_of(tmp_path, "train.cuda_graph=sometimes"))
    assert train.resolve(cfg_of(tmp_path)).graph is False  # auto on a CPU


def _log(out: Path) -> list[dict[str, str]]:
    with open(out / train.LOG_FILE, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["ttt_linear", "ttt_mlp"])
def test_graphed_training_equals_eager(tmp_path, model):
    """Six steps (the lr warm-up and TTT-MLP's inner-lr warm-up inside them), eager vs one captured step replayed:
    the same losses and weights to float32 round-off (the kernels are the same; only launch order can differ)."""
    common = (
        "device=cuda", f"model={model}", "train.tokens=768", "train.ctx=64", "train.warmup_frac=0.5",
        "train.val_windows=1", "train.graph_warmup_tokens=32", "train.dtype=float32",
    )  # fmt: skip
    eager = train.execute(cfg_of(tmp_path, *common, "train.cuda_graph=false", name="eager"))
    graphed = train.execute(cfg_of(tmp_path, *common, "train.cuda_graph=true", name="graphed"))
    assert eager["step"] == graphed["step"] == 6
    le, lg = _log(tmp_path / "eager"), _log(tmp_path / "graphed")
    for a, b in zip(le, lg):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
        assert a["lr"] == b["lr"] and a["ttt_base_lr"] == b["ttt_base_lr"]
    assert float(le[-1]["loss"]) < float(le[0]["loss"])
    wa = load_file(tmp_path / "eager" / checkpoint.WEIGHTS)
    wb = load_file(tmp_path / "graphed" / checkpoint.WEIGHTS)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-4)
    meta = checkpoint.load_meta(tmp_path / "graphed")
    assert meta["cuda_graph"] is True and meta["graph_capture_s"] > 0
    # Stopped after 2 steps and resumed (a new capture from the saved optimizer state): the same run again.
    first = train.execute(cfg_of(tmp_path, *common, "train.cuda_graph=true", "train.stop_after_steps=2", name="parts"))
    assert first["step"] == 2
    assert train.execute(cfg_of(tmp_path, *common, "train.cuda_graph=true", name="parts"))["step"] == 6
    for a, b in zip(lg, _log(tmp_path / "parts")):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4, abs=1e-5)
    wp = load_file(tmp_path / "parts" / checkpoint.WEIGHTS)
    for k in wb:
        torch.testing.assert_close(wb[k], wp[k], rtol=1e-3, atol=1e-4)
    assert isinstance(train.ttt_layers(checkpoint.load(tmp_path / "graphed")[0])[0].cfg.ttt_base_lr, float)


def test_out_of_memory_is_one_line(tmp_path, monkeypatch):
    """A step that does not fit ends the run with one line naming the batch and the settings that make it fit."""

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.00 GiB")

    monkeypatch.setattr(train, "lm_loss", oom)
    with pytest.raises(UserError) as e:
        train.execute(cfg_of(tmp_path, "train.batch=2"))
    msg = str(e.value)
    assert "\n" not in msg and "out of GPU memory at train.batch=2, train.ctx=32" in msg
    assert "Tried to allocate 24.00 GiB" in msg and "train.accum" in msg and "grad_checkpoint" in msg


def test_saved_optimizer_state_is_portable():
    """A graphed run's tensor lr and capturable flag are saved as an eager run expects; the live optimizer keeps
    its tensor (the captured step reads that memory)."""
    net, opt, _ = _tiny_run("ttt_linear")
    lr = torch.tensor(2e-3)
    for g in opt.param_groups:
        g["lr"], g["capturable"] = lr, True
    saved = train._portable(opt.state_dict())
    assert all(g["lr"] == pytest.approx(2e-3) and isinstance(g["lr"], float) for g in saved["param_groups"])
    assert not any(g["capturable"] for g in saved["param_groups"])
    assert opt.param_groups[0]["lr"] is lr and opt.param_groups[0]["capturable"]


def test_ttt_base_lr_to_tensor_and_back():
    """Before capture the inner lr becomes a tensor of its current value; after the run a float of its last value
    (what the fused inference path and the config take), however it was written in between."""
    net = registry.build("ttt_mlp", "tiny")
    train.set_ttt_base_lr(net, 0.03)
    train.tensor_ttt_base_lr(net, torch.device("cpu"))
    t = train.ttt_layers(net)[0].cfg.ttt_base_lr
    assert isinstance(t, torch.Tensor) and float(t) == pytest.approx(0.03)
    train.set_ttt_base_lr(net, 0.07)
    train.plain_ttt_base_lr(net)
    assert all(type(layer.cfg.ttt_base_lr) is float for layer in train.ttt_layers(net))
    assert train.ttt_layers(net)[0].cfg.ttt_base_lr == pytest.approx(0.07)
