"""The latency runner on a fake model: rows per point, resume after a kill, OOM and check failures as rows."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, load_cfg

from bench import latency, results
from bench.run import execute

SWEEP = ["+sweep=latency", "sweep.models=[ttt_linear,transformer]", "sweep.ctxs=[16,32,48]", "progress=false"]


def _run(tmp_path, extra=()):
    cfg, explicit = load_cfg(SWEEP + FAST + [f"results={tmp_path / 'r.csv'}", *extra])
    return execute(cfg, explicit)


def _points(tmp_path):
    df = results.read(tmp_path / "r.csv")
    return df, df.groupby(["model", "mode", "ctx"]).size()


def test_sweep_rows_and_models_built_once(tmp_path, fake_models):
    assert _run(tmp_path) == 2 * 3 * 2 * 2  # models x ctxs x modes x metrics
    df, per_point = _points(tmp_path)
    assert (per_point == 2).all() and len(per_point) == 12
    assert fake_models["built"] == ["ttt_linear", "transformer"]
    assert set(df["impl"]) == {"ttt_linear/dual", "transformer/sdpa_math"}
    assert (df["status"] == "ok").all() and (df["value"] > 0).all() and (df["size"] == "tiny").all()
    assert df.loc[df["impl"] == "ttt_linear/dual", "check_rel_err"].eq(0).all()  # checked against naive
    assert df.loc[df["model"] == "transformer", "check_rel_err"].isna().all()  # sdpa_math is the reference
    dec = df[df["mode"] == "decode"]
    assert set(dec["metric"]) == {"ms_per_step", "ms_per_token"} and not dec["decode_graph"].any()
    # A second run finds everything measured; force=true measures again.
    assert _run(tmp_path) == 0
    assert _run(tmp_path, ["force=true"]) == 24


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, fake_models, monkeypatch):
    calls = {"n": 0}
    real = latency.measure_decode

    def killed_after_three(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # a BaseException: the runner does not turn it into a row
        return real(*a, **kw)

    monkeypatch.setattr(latency, "measure_decode", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path)
    _, partial = _points(tmp_path)
    # ttt_linear's 3 ctxs x (prefill, decode), then transformer's first prefill; its first decode was killed.
    assert len(partial) == 7
    monkeypatch.setattr(latency, "measure_decode", real)
    assert _run(tmp_path) == (12 - 7) * 2
    df, per_point = _points(tmp_path)
    assert len(per_point) == 12 and (per_point == 2).all()
    assert df["run_id"].nunique() == 2


def test_oom_becomes_a_row_and_the_sweep_goes_on(tmp_path, fake_models, monkeypatch):
    real = latency.measure_prefill

    def oom_at_32(model, **kw):
        if kw["ctx"] == 32:
            torch.zeros(4)  # something allocated before the failure
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 GiB")
        return real(model, **kw)

    monkeypatch.setattr(latency, "measure_prefill", oom_at_32)
    _run(tmp_path)
    df, per_point = _points(tmp_path)
    assert len(per_point) == 12
    oom = df[df["status"] == "oom"]
    assert set(zip(oom["model"], oom["mode"], oom["ctx"])) == {
        ("ttt_linear", "prefill", 32),
        ("transformer", "prefill", 32),
    }
    assert oom["error"].str.contains("Tried to allocate").all() and oom["value"].isna().all()
    assert (df[df["status"] != "oom"]["status"] == "ok").all()
    # OOM rows are final: a resumed run does not retry them.
    assert _run(tmp_path) == 0


def test_other_errors_become_rows_and_are_retried(tmp_path, fake_models, monkeypatch):
    monkeypatch.setattr(latency, "measure_decode", lambda *a, **kw: 1 / 0)
    _run(tmp_path, ["sweep.models=[mamba]"])
    df = results.read(tmp_path / "r.csv")
    err = df[df["status"] == "error"]
    assert set(err["mode"]) == {"decode"} and err["error"].str.startswith("ZeroDivisionError").all()
    assert (df[df["mode"] == "prefill"]["status"] == "ok").all() and set(df["impl"]) == {"mamba/torch_ref"}


def test_check_mismatch_is_an_error_row_not_a_number(tmp_path, fake_models):
    fake_models["mismatch"] = 0.5
    _run(tmp_path, ["sweep.models=[ttt_linear]", "sweep.ctxs=[16]"])
    df = results.read(tmp_path / "r.csv")
    assert len(df) == 4 and (df["status"] == "error").all() and df["value"].isna().all()
    assert df["error"].str.contains("differs from ttt_linear/naive").all()
    assert (df["check_rel_err"] > 1e-4).all()


def test_single_point_cli_overrides_win_over_cpu_defaults(tmp_path, fake_models):
    cfg, explicit = load_cfg(
        FAST + ["model=mamba", "ctx=40", "batch=3", "mode=decode", f"results={tmp_path / 'r.csv'}"]
    )
    assert execute(cfg, explicit) == 2
    df = results.read(tmp_path / "r.csv")
    assert set(df["ctx"]) == {40} and set(df["batch"]) == {3} and set(df["mode"]) == {"decode"}
    assert set(df["size"]) == {"tiny"} and set(df["dtype"]) == {"float32"}  # the labelled CPU defaults
