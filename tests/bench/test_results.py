"""The row schema survives a CSV round trip, and a failed append leaves the old file whole."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench import results


def _rows(n: int, prov: dict) -> list[dict]:
    rows = []
    for i in range(n):
        partial = {"model": "ttt_linear", "impl": "ttt_linear/dual", "size": "tiny", "mode": "prefill", "ctx": 64 * (i + 1),
                   "batch": 2, "dtype": "float32", "metric": "ms_per_token", "value": 0.5 + i, "unit": "ms/token",
                   "spread_lo": 0.4, "spread_hi": 0.6, "repeats": 3, "n_params": 1000, "check_rel_err": 1e-6,
                   "decode_graph": False, "peak_mem_bytes": 2**33}  # fmt: skip
        rows.append(results.complete(partial, prov, "abc"))
    rows.append(results.complete({"model": "mamba", "mode": "decode", "ctx": 32768, "batch": 2, "metric": "ms_per_step",
                                  "status": "oom", "error": "CUDA out of memory.\nTried to allocate"}, prov, "abc"))  # fmt: skip
    return rows


def test_schema_round_trip(tmp_path):
    prov = results.provenance("cpu", {"hw_copy_gbps": 10.0, "hw_matmul_tflops": 0.1})
    path = tmp_path / "r.csv"
    assert results.append(path, _rows(3, prov)) == 4
    assert results.append(path, _rows(1, prov)) == 2
    raw = pd.read_csv(path)
    assert list(raw.columns) == results.COLUMNS
    assert len(raw) == 6
    df = results.read(path)
    assert list(df.columns) == results.COLUMNS
    assert str(df["ctx"].dtype) == "Int64" and str(df["peak_mem_bytes"].dtype) == "Int64"
    assert df["value"].dtype == "float64" and str(df["decode_graph"].dtype) == "boolean"
    assert df.loc[0, "peak_mem_bytes"] == 2**33 and df.loc[2, "value"] == 2.5
    oom = df[df["status"] == "oom"].iloc[0]
    assert oom["error"] == "CUDA out of memory. Tried to allocate" and pd.isna(oom["value"])
    assert set(df["status"]) == {"ok", "oom"} and (df["device"] == "cpu").all()
    assert df["run_id"].nunique() == 1 and df["torch"].iloc[0] == torch.__version__
    # Resume keys survive the round trip (ints stay ints, empty gpu_name stays empty).
    assert results.key_of(_rows(1, prov)[0]) in results.done_keys(path)


def test_failed_append_keeps_old_file(tmp_path, monkeypatch):
    prov = results.provenance("cpu")
    path = tmp_path / "r.csv"
    results.append(path, _rows(2, prov))
    before = path.read_bytes()

    def broken(self, f, **kw):
        f.write("run_id,half a row")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(KeyboardInterrupt):
        results.append(path, _rows(1, prov))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_git_state_from_environment_without_a_repository(monkeypatch) -> None:
    """A tree copied to a GPU machine has no .git: the commit comes from the caller, never a guess like 'HEAD'."""
    from bench import results

    monkeypatch.setattr(results, "_cmd", lambda *args: "")
    results.git_state.cache_clear()
    monkeypatch.setenv("TTT_BENCH_GIT_COMMIT", "abc123")
    monkeypatch.setenv("TTT_BENCH_GIT_DIRTY", "1")
    assert results.git_state() == ("abc123", True)
    results.git_state.cache_clear()
    monkeypatch.delenv("TTT_BENCH_GIT_COMMIT")
    assert results.git_state() == ("unknown", False)
    results.git_state.cache_clear()


def test_git_state_environment_wins_over_a_stale_repository(monkeypatch) -> None:
    """A device copy may carry a .git of another commit than its files: the caller's commit is the one recorded."""
    from bench import results

    monkeypatch.setattr(results, "_cmd", lambda *args: "f7af3964" if "rev-parse" in args else "")
    results.git_state.cache_clear()
    monkeypatch.setenv("TTT_BENCH_GIT_COMMIT", "abc123")
    monkeypatch.setenv("TTT_BENCH_GIT_DIRTY", "0")
    assert results.git_state() == ("abc123", False)
    monkeypatch.delenv("TTT_BENCH_GIT_COMMIT")
    results.git_state.cache_clear()
    assert results.git_state() == ("f7af3964", False)
    results.git_state.cache_clear()
