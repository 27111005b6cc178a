"""bench.train and bench.optim on the CPU: tiny models learn, a resumed run equals an uninterrupted one, the
schedules have their values, TTT-MLP's inner lr warms up, and bad requests end with one line."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from bench import checkpoint, data, optim, registry, train
from ttt.errors import UserError

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"
CORPUS_ROOT: list[Path] = []  # set by the autouse fixture below


@pytest.fixture(autouse=True)
def _small_corpus(corpus_root: Path) -> None:
    CORPUS_ROOT[:] = [corpus_root]


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 15th document of the stdlib corpus (~170 files): real text, tokenized in a moment."""
    full = data.load_corpus()
    root = tmp_path_factory.mktemp("corpus")
    data.export(data.Corpus(full.name, full.documents[::15]), root)
    return root


def cfg_of(tmp_path: Path, *overrides: str, name: str = "ck"):
    base = [
        f"data.root={CORPUS_ROOT[0]}",
        "device=cpu",
        "size=tiny",
        "train.ctx=32",
        "train.batch=2",
        "train.tokens=768",  # 12 steps of 2 x 32 tokens
        "train.val_windows=1",
        "train.progress=false",
        f"out={tmp_path / name}",
        f"results={tmp_path / 'train.csv'}",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*base, *overrides])


def log_of(out: Path) -> list[dict[str, str]]:
    with open(out / train.LOG_FILE, newline="") as f:
        return list(csv.DictReader(f))


# ---- schedules and parameter groups -------------------------------------------------------------------------------


def test_lr_schedule_values():
    peak, floor, total = 3e-3, 1e-5, 100
    warm = optim.warmup_steps(total, 0.1)
    assert warm == 10 and optim.warmup_steps(5, 0.1) == 1 and optim.warmup_steps(5, 0.0) == 0
    lr = lambda s: optim.lr_at(s, total, peak, floor, warm)  # noqa: E731
    assert lr(0) == pytest.approx(peak / 10) and lr(4) == pytest.approx(peak / 2) and lr(9) == pytest.approx(peak)
    assert lr(10) == pytest.approx(peak)  # the cosine starts at the peak
    assert lr(55) == pytest.approx(floor + 0.5 * (peak - floor))  # halfway through the decay
    assert lr(99) == pytest.approx(floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * 89 / 90)))
    assert lr(100) == floor and lr(1000) == floor
    assert all(lr(s) >= lr(s + 1) for s in range(10, 120))


def test_ttt_base_lr_ramp():
    assert optim.ramp(0, 10, 0.01, 0.1) == pytest.approx(0.01)
    assert optim.ramp(5, 10, 0.01, 0.1) == pytest.approx(0.055)
    assert optim.ramp(10, 10, 0.01, 0.1) == optim.ramp(50, 10, 0.01, 0.1) == 0.1
    assert optim.ramp(0, 0, 0.01, 0.1) == 0.1


def test_weight_decay_groups():
    for model in ("ttt_linear", "ttt_mlp", "transformer", "mamba"):
        net = registry.build(model, "tiny", device="meta")
        decay, no_decay = optim.param_groups(net, 0.1)
        named = dict(net.named_parameters())
        ids = {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]}
        assert len(ids) == len(decay["params"]) + len(no_decay["params"]) == len(named)
        decayed = {n for n, p in named.items() if any(p is q for q in decay["params"])}
        assert all(named[n].ndim >= 2 for n in decayed)
        assert not any("norm" in n or n.endswith(("bias", "A_log", ".D", "ln_weight", "ln_bias")) for n in decayed)
        assert any("embed" in n for n in decayed)  # the tied embedding decays (the GPT-2 / HF Trainer convention)
        if model.startswith("ttt"):
            assert any(n.endswith(("W0", "W1")) for n in decayed)
            assert not any(n.endswith(("b0", "b1", "b2")) for n in decayed)


# ---- training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "steps"), [("ttt_linear", 12), ("transformer", 12), ("mamba", 6), ("ttt_mlp", 6)])
def test_tiny_model_learns(tmp_path, model, steps):
    cfg = cfg_of(tmp_path, f"model={model}", f"train.tokens={steps * 64}", "train.lr=1e-2")
    summary = train.execute(cfg)
    assert summary["step"] == steps and summary["stop_reason"] == "tokens"
    losses = [float(r["loss"]) for r in log_of(tmp_path / "ck")]
    assert len(losses) == steps
    assert losses[0] == pytest.approx(math.log(257), abs=0.3)  # an untrained model: about uniform over the bytes
    assert sum(losses[-3:]) / 3 < losses[0] - 1.0
    meta = checkpoint.load_meta(tmp_path / "ck")
    assert meta["model"] == model and meta["size"]["vocab_size"] == 257 and meta["complete"]
    assert (
        meta["tokens_seen"] == steps * 64
        and meta["impl"] == registry.FAMILIES[meta["model_overrides"]["family"]].default_cpu
    )
    rows = pd.read_csv(tmp_path / "train.csv", dtype=str)
    assert set(rows["metric"]) == {"train_loss", "val_loss", "tokens", "wall_s", "tokens_per_s"}
    assert (rows["mode"] == "train").all() and (rows["impl"] == f"{model}/{meta['impl']}").all()
    assert (rows["checkpoint"] == checkpoint.weights_hash(tmp_path / "ck")).all()
    net, _ = checkpoint.load(tmp_path / "ck", expect_model=model)  # loadable for evaluation as it stands
    assert net(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 257)


def test_resume_equals_uninterrupted_ttt_mlp(tmp_path):
    """TTT-MLP: also checks that the inner-lr warm-up picks up at the right step after a resume."""
    common = ("model=ttt_mlp", "train.tokens=512", "train.val_windows=0")  # 8 steps of 64 tokens
    train.execute(cfg_of(tmp_path, *common, "train.warmup_frac=0.5", name="whole"))
    first = train.execute(cfg_of(tmp_path, *common, "train.warmup_frac=0.5", "train.stop_after_steps=3", name="parts"))
    assert first["step"] == 3 and first["stop_reason"] == "stop_after_steps"
    assert not checkpoint.load_meta(tmp_path / "parts")["complete"]
    second = train.execute(cfg_of(tmp_path, *common, "train.warmup_frac=0.5", name="parts"))
    assert second["step"] == 8
    a, b = load_file(tmp_path / "whole" / checkpoint.WEIGHTS), load_file(tmp_path / "parts" / checkpoint.WEIGHTS)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    la, lb = log_of(tmp_path / "whole"), log_of(tmp_path / "parts")
    assert [r["step"] for r in lb] == [str(i) for i in range(1, 9)]
    for ra, rb in zip(la, lb):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), abs=1e-6)
        assert ra["lr"] == rb["lr"] and ra["ttt_base_lr"] == rb["ttt_base_lr"]
    # Warm-up: 4 steps, 0.01 -> 0.1 linearly, then the model config's 0.1.
    assert [float(r["ttt_base_lr"]) for r in lb[:6]] == pytest.approx([0.01, 0.0325, 0.055, 0.0775, 0.1, 0.1])
    # A finished run is not trained again.
    assert train.execute(cfg_of(tmp_path, *common, "train.warmup_frac=0.5", name="parts"))["stop_reason"] == "done"


def test_ttt_base_lr_reaches_the_layers():
    net = registry.build("ttt_mlp", "tiny")
    layers = train.ttt_layers(net)
    assert len(layers) == 2
    x = torch.randn(1, 5, 128)
    before = layers[1].eta(x)
    train.set_ttt_base_lr(net, 0.01)
    assert all(layer.cfg.ttt_base_lr == 0.01 for layer in layers)
    torch.testing.assert_close(layers[1].eta(x), before * 0.1)


def test_resume_refuses_another_config_and_model(tmp_path):
    train.execute(cfg_of(tmp_path, "train.tokens=256", "train.stop_after_steps=1"))
    with pytest.raises(UserError) as e:
        train.execute(cfg_of(tmp_path, "train.tokens=256", "train.lr=1e-3"))
    msg = str(e.value)
    assert "\n" not in msg and "train.lr" in msg and "train.resume=false" in msg
    with pytest.raises(UserError, match="holds a checkpoint of model 'ttt_linear', not 'transformer'"):
        train.execute(cfg_of(tmp_path, "model=transformer", "train.tokens=256"))
    # The micro-batching may change (e.g. to fit memory) while the windows per step stay.
    again = train.execute(
        cfg_of(tmp_path, "train.tokens=256", "train.batch=1", "train.accum=2", "train.stop_after_steps=1")
    )
    assert again["step"] == 2
    # resume=false starts over in place
    assert train.execute(cfg_of(tmp_path, "train.tokens=256", "train.lr=1e-3", "train.resume=false"))["step"] == 4
    # A directory that holds something else is never replaced.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds no checkpoint"):
        train.execute(cfg_of(tmp_path, name="mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.corpus=pg-99"], "unknown corpus 'pg-99'"),
        (["data.tokenizer=wordpiece"], "unknown tokenizer 'wordpiece'"),
        (["train.ctx=40"], "train.ctx=40 is not a multiple of ttt_linear's TTT mini-batch size 16"),
        (["data.val_percent=100"], "python-stdlib/train has 0"),
        (["model=mamba", "train.impl=mamba_ssm"], "mamba_ssm"),
        (["model=transformer", "train.impl=flash_attn"], "cannot train"),
        (["train.batch=0"], "train.batch must be a positive integer"),
    ],
)
def test_bad_request_is_one_line(tmp_path, overrides, needle):
    with pytest.raises(UserError) as e:
        train.resolve(cfg_of(tmp_path, *overrides))
    assert needle in str(e.value) and "\n" not in str(e.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "bench.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model=nope"], "unknown model 'nope'"),
        (["model=ttt_linear", "train.impl=triton"], "impl 'triton' of model 'ttt_linear' cannot train"),
    ],
)
def test_cli_bad_request_one_line(tmp_path, args, needle):
    proc = _cli(*args, f"out={tmp_path / 'ck'}", f"results={tmp_path / 'r.csv'}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "ck").exists()


def test_run_gives_the_process_its_tf32_setting_back(monkeypatch):
    """A training run turns TF32 on for CUDA; afterwards (also after a failure) the caller's setting is back."""
    import bench.train as tr

    def fake_run(setup):
        torch.backends.cuda.matmul.allow_tf32 = True
        if setup == "fail":
            raise RuntimeError("boom")
        return {"rows": 0}

    monkeypatch.setattr(tr, "_run", fake_run)
    prev = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert tr.run("ok") == {"rows": 0}
        assert torch.backends.cuda.matmul.allow_tf32 is False
        with pytest.raises(RuntimeError, match="boom"):
            tr.run("fail")
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
