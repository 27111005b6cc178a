"""bench/ppl.py on tiny saved checkpoints: the rows, the protocols, the shift by one, bad input, failures, resume."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from bench import checkpoint, data, ppl, registry, results
from ttt.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
FAST = ["bench.n_sequences=2", "progress=false", "device=cpu"]  # the same rows on a GPU machine


def tiny_size() -> dict:
    size = OmegaConf.to_container(registry.size_config("tiny"), resolve=True)
    size["vocab_size"] = 257  # the byte tokenizer
    return size


def save_tiny(path: Path, model: str, train_ctx: int = 256) -> Path:
    torch.manual_seed(0)
    net = registry.build(model, tiny_size())
    meta = {"model": model, "size": tiny_size(), "tokenizer": "byte", "corpus": "python-stdlib", "train_ctx": train_ctx}
    checkpoint.save(path, net, meta)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    return {m: save_tiny(d / m, m) for m in ("ttt_linear", "transformer")}


def run(tmp_path: Path, overrides: list[str]) -> pd.DataFrame:
    """bench.ppl in-process with these command-line overrides; the rows of its results file."""
    overrides = [*FAST, f"results={tmp_path / 'ppl.csv'}", *overrides]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("ppl", overrides=overrides)
    ppl.execute(cfg, {o.split("=", 1)[0].lstrip("+~") for o in overrides})
    return results.read(tmp_path / "ppl.csv")


def test_rows_schema_same_tokens_and_resume(tmp_path, ckpts):
    df = run(tmp_path, [f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[64,128,256]"])
    assert list(df.columns[: len(results.COLUMNS)]) == results.COLUMNS
    assert (df["status"] == "ok").all() and (df["mode"] == "ppl").all()
    assert set(df["protocol"]) == {"single_model_eval_ctx"}
    assert set(df["checkpoint"]) == {checkpoint.weights_hash(ckpts["ttt_linear"])}
    assert set(df["impl"]) == {"ttt_linear/dual"} and set(df["dtype"]) == {"float32"}
    assert set(df["corpus"]) == {"python-stdlib"} and set(df["tokenizer"]) == {"byte"}
    assert set(df["train_ctx"]) == {"256"} and set(df["corpus_checksum"]) == {data.load_corpus().checksum[:12]}
    assert df["check_rel_err"].max() < 1e-3  # dual against naive, before evaluating

    main = df[df["metric"].isin(["ppl", "loss"])].pivot(index="ctx", columns="metric", values="value")
    assert list(main.index) == [64, 128, 256]
    assert ((main["ppl"] - main["loss"].map(math.exp)).abs() < 1e-9 * main["ppl"]).all()
    assert 200 < main["ppl"].min() and main["ppl"].max() < 320  # an untrained byte model: about uniform over 257
    n_tok = df[df["metric"].isin(["ppl", "loss"])].groupby("ctx")["n_tokens"].unique()
    assert all(list(v) == [2 * 256] for v in n_tok)  # the same 2 x 256 tokens at every ctx

    lbt = df[df["metric"] == "loss_by_token"].sort_values("token_index")
    assert set(lbt["ctx"]) == {256}  # at the largest ctx only
    starts, ends = lbt["token_index_start"].astype(int).tolist(), lbt["token_index"].astype(int).tolist()
    assert starts[0] == 1 and ends[-1] == 256 and starts[1:] == [e + 1 for e in ends[:-1]]  # each position once
    assert lbt["n_tokens"].sum() == 2 * 256
    mean = (lbt["value"] * lbt["n_tokens"]).sum() / lbt["n_tokens"].sum()
    assert mean == pytest.approx(main.loc[256, "loss"], rel=1e-9)

    # Resume: nothing again; force=true evaluates again; a new ctx adds only its own rows.
    n = len(df)
    assert len(run(tmp_path, [f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[64,128,256]"])) == n
    assert len(run(tmp_path, [f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[128,256]", "force=true"])) > n


def test_shift_by_one_perfect_and_uniform():
    vocab, length = 11, 48
    seqs = torch.stack([(torch.arange(length + 1) + 3 * i) % vocab for i in range(3)])  # next token = (t + 1) % V

    class Fake(torch.nn.Module):
        def __init__(self, shift: int | None) -> None:
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))
            self.shift = shift

        def forward(self, ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
            if self.shift is None:
                return torch.zeros(*ids.shape, vocab)
            return 100.0 * torch.nn.functional.one_hot((ids + self.shift) % vocab, vocab).float()

    for ctx in (8, 16, 48):
        perfect = ppl.window_losses(Fake(1), seqs, ctx, batch=4)
        assert perfect.n_tokens == 3 * length and math.exp(perfect.loss_sum / perfect.n_tokens) == pytest.approx(1.0)
        uniform = ppl.window_losses(Fake(None), seqs, ctx, batch=4)
        assert math.exp(uniform.loss_sum / uniform.n_tokens) == pytest.approx(vocab)
        off_by_one = ppl.window_losses(Fake(0), seqs, ctx, batch=4)  # predicts the input token itself
        assert off_by_one.loss_sum / off_by_one.n_tokens > 50


def test_buckets_cover_every_position_once():
    for kind, n, width, ctx in [
        ("log", 64, 512, 32768),
        ("log", 8, 1, 100),
        ("linear", 64, 512, 32768),
        ("linear", 0, 7, 50),
    ]:
        b = ppl.bucket_ranges(ctx, kind, n, width)
        covered = [p for first, last in b for p in range(first, last + 1)]
        assert covered == list(range(1, ctx + 1))
    assert ppl.bucket_ranges(2048, "linear", 0, 512) == [(1, 512), (513, 1024), (1025, 1536), (1537, 2048)]


def test_perfect_model_through_the_pipeline(tmp_path, ckpts, monkeypatch):
    """An oracle that finds each window in its document and puts all mass on the true next token: ppl ~ 1 at every
    ctx only if the pipeline's targets are the inputs shifted by one (the EOS before the document included)."""
    tok = data.get_tokenizer("byte")
    docs = [torch.cat([torch.tensor([tok.eos_id]), t]) for t in data.load_corpus().tokens("validation", tok)]
    real_load = checkpoint.load

    def oracle(ids: torch.Tensor, logits_to_keep: int = 0) -> torch.Tensor:
        out = torch.full((*ids.shape, 257), -100.0)
        for r, w in enumerate(ids):
            for doc in docs:
                hits = (doc.unfold(0, len(w), 1) == w).all(1).nonzero() if len(doc) > len(w) else []
                if len(hits):
                    start = int(hits[0])
                    out[r, torch.arange(len(w)), doc[start + 1 : start + 1 + len(w)]] = 100.0
                    break
            else:
                raise AssertionError("window not found in any validation document")
        return out

    def load(*args, **kwargs):
        net, meta = real_load(*args, **kwargs)
        net.forward = oracle
        return net, meta

    monkeypatch.setattr(checkpoint, "load", load)
    df = run(tmp_path, [f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[64,128]", "bench.check=false"])
    vals = df[df["metric"] == "ppl"].set_index("ctx")["value"]
    assert list(vals.index) == [64, 128] and (vals - 1).abs().max() < 1e-6


def test_transformer_limit_extrapolation_and_trained_per_ctx(tmp_path, ckpts):
    with pytest.raises(UserError, match="beyond it.*allow_extrapolation=true") as e:
        run(tmp_path, [f"checkpoints=[{ckpts['transformer']}]", "ctxs=[128,512]"])
    assert "\n" not in str(e.value)
    df = run(tmp_path, [f"checkpoints=[{ckpts['transformer']}]", "ctxs=[256,512]", "allow_extrapolation=true"])
    ok = df[df["metric"] == "ppl"]
    assert (
        set(ok["ctx"]) == {256, 512}
        and set(ok["train_ctx"]) == {"256"}
        and set(ok["impl"]) == {"transformer/sdpa_math"}
    )

    # The paper's protocol: several checkpoints of one model, each at its own train ctx, on the same tokens.
    short = save_tiny(tmp_path / "ttt64", "ttt_linear", train_ctx=64)
    out = tmp_path / "per_ctx"
    out.mkdir()
    df = run(
        out,
        [
            f"checkpoints=[{short},{ckpts['ttt_linear']}]",
            "ctxs=[64,128,256]",
            "protocol=trained_per_ctx",
            "models=ttt_linear",
            "bench.check=false",
        ],
    )
    ppl_rows = df[df["metric"] == "ppl"]
    assert set(ppl_rows["protocol"]) == {"trained_per_ctx"}
    assert sorted(zip(ppl_rows["ctx"], ppl_rows["train_ctx"])) == [(64, "64"), (256, "256")]
    assert ppl_rows["n_tokens"].nunique() == 1
    assert set(df[df["metric"] == "loss_by_token"]["ctx"]) == {256}  # only the checkpoint trained at the full length


def test_bad_input_is_one_line(tmp_path, ckpts):
    cases = [
        ([f"checkpoints=[{ckpts['ttt_linear']}]", "corpus=no-such-corpus"], "unknown corpus 'no-such-corpus'"),
        ([f"checkpoints=[{ckpts['ttt_linear']}]", "models=[mamba]"], "holds model 'ttt_linear', not 'mamba'"),
        ([f"checkpoints=[{tmp_path / 'missing'}]"], "no checkpoint at"),
        ([f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[96,128]"], "does not divide max"),
        ([f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[100000000]"], "no document of python-stdlib/validation"),
        ([f"checkpoints=[{ckpts['ttt_linear']}]", "protocol=nope"], "unknown protocol"),
        (["checkpoints=[]"], "no checkpoints given"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message) as e:
            run(tmp_path, overrides)
        assert "\n" not in str(e.value)
    assert not (tmp_path / "ppl.csv").exists()  # refused before anything was evaluated


def test_cli_error_is_one_line(tmp_path, ckpts):
    done = subprocess.run(
        [sys.executable, "-m", "bench.ppl", f"checkpoints=[{ckpts['transformer']}]", "ctxs=[512]", f"results={tmp_path}/r.csv"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and "allow_extrapolation" in lines[0]


def test_oom_halves_the_batch_then_is_a_row(tmp_path, ckpts, monkeypatch):
    real = ppl.window_losses

    def flaky(net, seqs, ctx, **kw):
        if ctx == 128 or kw["batch"] > 2:  # ctx 64 fits 2 windows per forward; ctx 128 not even one
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(net, seqs, ctx, **kw)

    monkeypatch.setattr(ppl, "window_losses", flaky)
    df = run(tmp_path, [f"checkpoints=[{ckpts['ttt_linear']}]", "ctxs=[32,64,128]", "bench.check=false"])
    assert set(df[df["ctx"] == 64]["status"]) == {"ok"} and set(df[df["ctx"] == 128]["status"]) == {"oom"}
    assert set(df[df["ctx"] == 64]["windows_per_forward"]) == {"2"}  # 4 windows: 4 -> OOM -> 2
    assert set(df[df["ctx"] == 32]["windows_per_forward"]) == {"2"}  # 8 windows: 8 -> 4 -> 2
    assert set(df[df["ctx"] == 128]["metric"]) == {"ppl", "loss", "loss_by_token"}
    assert df[df["ctx"] == 128]["error"].str.contains("out of memory").all()


def test_append_to_a_file_with_the_old_header(tmp_path):
    """A results file written before the ppl columns existed: appending rewrites it with the new header, and the old
    rows read back the same."""
    new_cols = ["checkpoint", "corpus", "tokenizer", "protocol", "token_index", "n_tokens"]
    path = tmp_path / "latency.csv"
    committed = pd.read_csv(ROOT / "results" / "latency.csv", dtype=str, keep_default_na=False)
    committed[[c for c in committed.columns if c not in new_cols]].to_csv(path, index=False)
    before = results.read(path)
    assert "checkpoint" not in pd.read_csv(path, nrows=0).columns
    row = results.complete(
        {"model": "ttt_linear", "mode": "ppl", "ctx": 64, "metric": "ppl", "value": 2.0, "checkpoint": "ab", "n_tokens": 9},
        results.provenance("cpu"),
        "h",
    )  # fmt: skip
    results.append(path, [row])
    assert list(pd.read_csv(path, nrows=0).columns[: len(results.COLUMNS)]) == results.COLUMNS
    after = results.read(path)
    assert len(after) == len(before) + 1
    pd.testing.assert_frame_equal(after.iloc[: len(before)][results.COLUMNS], before[results.COLUMNS])
    assert after.iloc[-1]["checkpoint"] == "ab" and after.iloc[-1]["n_tokens"] == 9
