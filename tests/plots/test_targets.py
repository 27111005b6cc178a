"""plots.targets: the kernel-target verdicts follow the op rows."""

import pandas as pd

from plots.rows import normalize
from plots.targets import (
    decode_step_vs_mamba,
    decode_vs_weight_floor,
    linear_vs_best_fla,
    linear_vs_fla,
    mlp_vs_linear,
)


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


def test_best_fla_takes_the_faster_peer_per_point() -> None:
    """fused_chunk faster at one point: that point is judged against it; points without it use chunk."""
    rows = pd.concat([_rows(3.0), normalize(pd.DataFrame([_op("fla/fused_chunk_ttt_linear", "a", 1024, 64, 1.6)]))])
    c = linear_vs_best_fla(rows)[0]
    assert c.verdict == "no" and "worst 1.60 at (a) T=1024 B=64" in c.detail and "(b) 4096x16: 3.00" in c.detail
    assert linear_vs_fla(rows)[0].verdict == "yes"  # the chunk-only target is unchanged by the extra peer


def test_decode_weight_floor_from_params_and_bandwidth() -> None:
    """1e9 bf16 params at 2,000 GB/s: floor 1 ms; 1.4 ms passes 1.5x, 1.6 ms does not; no rows: not measured."""

    def dec(ms: float) -> pd.DataFrame:
        r = {"run_id": "r", "git_commit": "c", "model": "ttt_linear", "impl": "ttt_linear/triton", "mode": "decode",
             "ctx": 1024, "batch": 16, "metric": "ms_per_step", "value": ms, "unit": "ms/step", "status": "ok",
             "gpu_name": "H100", "size": "1.3b", "dtype": "bfloat16", "n_params": 1e9, "hw_copy_gbps": 2000.0}  # fmt: skip
        return normalize(pd.DataFrame([r]))

    assert decode_vs_weight_floor(dec(1.4))[0].verdict == "yes"
    c = decode_vs_weight_floor(dec(1.6))[0]
    assert c.verdict == "no" and "step/floor 1.60-1.60 (floor 1.000 ms" in c.detail
    assert decode_vs_weight_floor(_rows(3.0))[0].verdict == "not measured"


def test_ours_is_the_gluon_kernel_where_it_ran() -> None:
    """Where ttt_linear/gluon rows exist they are judged (what backend='auto' runs); elsewhere the Triton kernel's."""
    rows = pd.concat([_rows(3.0), normalize(pd.DataFrame([_op("ttt_linear/gluon", "a", 1024, 64, 2.0)]))])
    c = linear_vs_fla(rows)[0]
    assert c.verdict == "no" and "worst 1.10 at (a) T=1024 B=64" in c.detail and "(b) 4096x16: 3.00" in c.detail
