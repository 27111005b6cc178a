"""plots.rows.newest_code: a re-measurement by newer code replaces the older rows of the same point."""

import pandas as pd

from plots.rows import load_results


def _row(run: str, commit: str, time: str, value: float, ctx: int = 1024) -> dict:
    return {
        "run_id": run, "time": time, "git_commit": commit, "model": "ttt_linear", "impl": "ttt_linear/triton",
        "size": "1.3b", "mode": "prefill", "ctx": ctx, "batch": 16, "dtype": "bfloat16", "metric": "ms_per_token",
        "value": value, "unit": "ms/token", "status": "ok", "device": "cuda", "gpu_name": "H100",
    }  # fmt: skip


def test_newest_commit_wins_and_its_repeats_stay(tmp_path) -> None:
    rows = [
        _row("r1", "old", "2026-11-23T04:00:00+0000", 12.8),
        _row("r2", "new", "2026-11-23T08:00:00+0000", 5.4),
        _row("r3", "new", "2026-11-23T09:00:00+0000", 5.6),
        _row("r1", "old", "2026-11-23T04:00:00+0000", 13.0, ctx=2048),  # only the old code measured 2k
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "latency.csv", index=False)
    df = load_results(tmp_path)
    at1k = df[df["ctx"] == 1024]
    assert sorted(at1k["value"]) == [5.4, 5.6]
    assert list(df.loc[df["ctx"] == 2048, "value"]) == [13.0]
