"""What the rows say about themselves: the caption lines and the provenance string of a claim."""

from __future__ import annotations

import pandas as pd


def _values(rows: pd.DataFrame, col: str, limit: int = 4) -> str:
    vals = [str(v) for v in pd.unique(rows[col].dropna()) if str(v) != ""]
    if not vals:
        return "?"
    if col == "batch":
        vals = [str(int(float(v))) for v in vals]
    shown = ", ".join(sorted(vals)[:limit])
    return shown + (f" (+{len(vals) - limit} more)" if len(vals) > limit else "")


def _short_commits(rows: pd.DataFrame) -> str:
    commits = sorted({str(c)[:8] for c in rows["git_commit"].dropna()})
    return ", ".join(commits[:3]) + (f" (+{len(commits) - 3})" if len(commits) > 3 else "") if commits else "?"


def runs(rows: pd.DataFrame) -> int:
    """Number of distinct runs behind `rows`."""
    return int(rows["run_id"].nunique(dropna=True))


def caption_lines(rows: pd.DataFrame, extra: list[str] | None = None) -> list[str]:
    """Device, dtype, batch, sizes, implementations and run count, all read from `rows`."""
    # The harness writes impl as `<model>/<impl>`; older or hand-made rows may carry the bare name.
    impls = sorted(
        {
            i if i.startswith(f"{m}/") else f"{m}/{i}"
            for m, i in rows[["model", "impl"]].astype(str).itertuples(index=False)
        }
    )
    gpu = _values(rows, "gpu_name")
    device = _values(rows, "device")
    lines = [
        f"device: {gpu} ({device}) · dtype {_values(rows, 'dtype')} · batch {_values(rows, 'batch')} · "
        f"size {_values(rows, 'size')}",
        f"impls: {', '.join(impls)}",
        f"runs: {runs(rows)} · torch {_values(rows, 'torch')} · commit {_short_commits(rows)}",
    ]
    return lines + list(extra or [])


def claim_provenance(rows: pd.DataFrame) -> str:
    """One line naming where a claim's numbers come from."""
    run_ids = sorted({str(r) for r in rows["run_id"].dropna()})
    shown = ", ".join(run_ids[:4]) + (f" (+{len(run_ids) - 4})" if len(run_ids) > 4 else "")
    return (
        f"device {_values(rows, 'device')}, gpu {_values(rows, 'gpu_name')}, torch {_values(rows, 'torch')}, "
        f"commit {_short_commits(rows)}, run_id {shown or '?'}, {runs(rows)} run(s)"
    )
