"""`python -m bench.run` as a user runs it: bad overrides give one line and a non-zero exit; a real tiny run writes rows."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # the CPU path, on any machine
    return subprocess.run(
        [sys.executable, "-m", "bench.run", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["model=nope"], "unknown model 'nope'"),
        (["size=2b"], "unknown size '2b'"),
        (["ctx=1000"], "ctx=1000 is not a multiple of ttt_linear's TTT mini-batch size 16"),
        (["model=ttt_mlp", "ctx=24"], "mini-batch size 16"),
        (["batch=0"], "batch must be a positive integer, not '0'"),
        (["ctx=-16"], "ctx must be a positive integer"),
        (["dtype=fp8"], "unknown dtype 'fp8'"),
        (["model=transformer", "impl=flash_attn"], "flash_attn"),
        (["model=mamba", "impl=nope"], "unknown impl 'nope'"),
        (["bench=ppl"], "run `python -m bench.ppl"),
    ],
)
def test_bad_override_is_one_line(args, needle, tmp_path):
    proc = _run(*args, f"results={tmp_path / 'r.csv'}")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("CPU default")]
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.skipif(importlib.util.find_spec("ttt.model") is None, reason="ttt/model.py is not written yet")
def test_real_tiny_ttt_linear_on_cpu(tmp_path):
    out = tmp_path / "r.csv"
    proc = _run(
        "model=ttt_linear", "ctx=64", "size=tiny", "progress=false", "bench.check_tokens=32", f"results={out}", *FAST
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert set(df["impl"]) == {"ttt_linear/dual"} and set(df["mode"]) == {"prefill", "decode"}
    assert (df["status"] == "ok").all(), df[["mode", "status", "error"]]
    assert (df["check_rel_err"] < 1e-4).all() and (df["device"] == "cpu").all()
