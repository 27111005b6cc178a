"""The regression gate flags an injected slowdown and passes an unchanged run."""

from __future__ import annotations

import pandas as pd

from bench import regress, results


def _write(path, scale_mamba: float = 1.0, mamba_status: str = "ok") -> None:
    prov = results.provenance("cpu")
    rows = []
    for model, base in (("ttt_linear", 1.0), ("mamba", 2.0)):
        for ctx in (1024, 2048):
            value = base * ctx / 1024 * (scale_mamba if model == "mamba" else 1.0)
            status = mamba_status if model == "mamba" and ctx == 2048 else "ok"
            rows.append(results.complete({"model": model, "impl": f"{model}/x", "size": "tiny", "mode": "prefill", "ctx": ctx,
                                          "batch": 2, "dtype": "float32", "metric": "total_ms", "unit": "ms",
                                          "value": value if status == "ok" else None, "status": status}, prov, "h"))  # fmt: skip
    results.append(path, rows)


def test_unchanged_run_passes(tmp_path, capsys):
    _write(tmp_path / "base.csv")
    _write(tmp_path / "new.csv")
    assert regress.main([str(tmp_path / "new.csv"), "--baseline", str(tmp_path / "base.csv")]) == 0
    assert "0 of 4 point(s) regressed" in capsys.readouterr().out


def test_slowdown_is_flagged(tmp_path, capsys):
    _write(tmp_path / "base.csv")
    _write(tmp_path / "new.csv", scale_mamba=1.3)
    assert regress.main([str(tmp_path / "new.csv"), "--baseline", str(tmp_path / "base.csv")]) == 1
    out = capsys.readouterr().out
    assert "2 of 4 point(s) regressed" in out and out.count("SLOWER") == 2
    # Within a looser tolerance it passes.
    assert (
        regress.main([str(tmp_path / "new.csv"), "--baseline", str(tmp_path / "base.csv"), "--tolerance", "0.5"]) == 0
    )


def test_new_oom_is_a_regression_and_disjoint_files_fail(tmp_path, capsys):
    _write(tmp_path / "base.csv")
    _write(tmp_path / "new.csv", mamba_status="oom")
    table = regress.compare(results.read(tmp_path / "new.csv"), results.read(tmp_path / "base.csv"))
    assert table["regressed"].sum() == 1 and "OOM" in set(table["verdict"])
    other = results.read(tmp_path / "new.csv").assign(size="125m")
    other.to_csv(tmp_path / "other.csv", index=False)
    assert regress.main([str(tmp_path / "other.csv"), "--baseline", str(tmp_path / "base.csv")]) == 2
    assert isinstance(pd.read_csv(tmp_path / "other.csv"), pd.DataFrame)
