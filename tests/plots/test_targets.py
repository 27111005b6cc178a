"""plots.targets: the kernel-target verdicts follow the op rows."""

import pandas as pd

from plots.rows import normalize
from plots.targets import decode_step_vs_mamba, linear_vs_fla, mlp_vs_linear


def _op(impl: str, shape: str, T: int, B: int, ms: float) -> dict:
    return {
        "run_id": "r", "git_commit": "c", "model": impl.split("/")[0], "impl": impl, "mode": "op", "ctx": T,
        "batch": B, "metric": "time", "value": ms, "unit": "ms", "status": "ok", "gpu_name": "H100",
        "shape_set": shape,
    }  # fmt: skip


def _rows(fla_ms: float) -> pd.DataFrame:
    rows = [
        _op("ttt_linear/triton", "a", 1024, 64, 1.0),
        _op("fla/chunk_ttt_linear", "a", 1024, 64, 2.2),
        _op("ttt_linear/triton", "b", 4096, 16, 1.0),  # the same (T, B) in both shape sets stays two points
        _op("fla/chunk_ttt_linear", "b", 4096, 16, fla_ms),
        _op("ttt_mlp/triton", "a", 1024, 64, 2.4),
    ]
    return normalize(pd.DataFrame(rows))


def test_fla_ratio_verdict_is_the_worst_shape() -> None:
    assert linear_vs_fla(_rows(3.0))[0].verdict == "yes"
    bad = linear_vs_fla(_rows(1.5))[0]
    assert bad.verdict == "no" and "worst 1.50 at (b) T=4096 B=16" in bad.detail


def test_mlp_ratio_and_missing_rows() -> None:
    assert mlp_vs_linear(_rows(3.0))[0].verdict == "yes"
    assert decode_step_vs_mamba(_rows(3.0))[0].verdict == "not measured"
