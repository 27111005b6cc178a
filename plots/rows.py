"""Loading result rows: every `results/**/*.csv`, coerced to the schema's types, exact duplicates dropped.

The schema is the one `bench/results.py` writes (DESIGN.md "Rows"). Plotting also reads a few optional
columns that only some measurements carry; they are listed in `OPTIONAL_COLUMNS` and in plots/README.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

SCHEMA_COLUMNS: list[str] = [
    "run_id", "time", "git_commit", "model", "impl", "size", "n_params", "mode", "ctx", "batch", "dtype",
    "metric", "value", "unit", "stat", "spread_lo", "spread_hi", "repeats", "peak_mem_bytes", "status", "error",
    "device", "gpu_name", "driver", "cuda", "torch", "triton", "jax", "config_hash", "tokens_per_s",
    "bytes_moved", "frac_hbm", "check_rel_err", "decode_graph",
]  # fmt: skip

# Columns beyond the schema that individual figures read when rows carry them (absent -> that figure skips).
OPTIONAL_COLUMNS: list[str] = [
    "token_index", "mini_batch_size", "variant", "flops", "dataset", "checkpoint", "corpus", "protocol", "train_ctx",
    "n_tokens", "shape_set", "cuda_graph", "corpus_checksum", "tokenizer",
]  # fmt: skip

NUMERIC_COLUMNS: list[str] = [
    "n_params", "ctx", "batch", "value", "spread_lo", "spread_hi", "repeats", "peak_mem_bytes", "tokens_per_s",
    "bytes_moved", "frac_hbm", "check_rel_err", "token_index", "mini_batch_size", "flops", "train_ctx", "n_tokens",
]  # fmt: skip

TEXT_COLUMNS: list[str] = [
    "model", "impl", "size", "mode", "metric", "unit", "dtype", "status", "gpu_name", "run_id", "protocol",
    "corpus_checksum", "tokenizer",
]  # fmt: skip

# Key of one measured quantity: a row seen twice (e.g. a run copied into results/baselines/) counts once.
DEDUP_KEY: list[str] = [
    "run_id", "model", "impl", "size", "mode", "ctx", "batch", "dtype", "metric", "device", "git_commit",
    "token_index", "mini_batch_size", "variant", "flops", "dataset", "checkpoint", "protocol", "shape_set", "cuda_graph",
]  # fmt: skip


def result_files(results_dir: Path) -> list[Path]:
    """Every CSV under `results_dir` (top level and nested), in a stable order; `logs/` holds run logs (e.g. the
    per-step training logs), not result rows."""
    root = Path(results_dir)
    return sorted(p for p in root.rglob("*.csv") if p.is_file() and "logs" not in p.relative_to(root).parts[:-1])


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing schema/optional columns as empty, coerce numbers, and give every row a status."""
    df = df.copy()
    for col in SCHEMA_COLUMNS + OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    for col in TEXT_COLUMNS:
        df[col] = df[col].astype("string").str.strip()
    # bench/ppl.py and bench/train.py name their text `corpus`; figures split series and panels by `dataset`.
    df["dataset"] = df["dataset"].fillna(df["corpus"])
    # A row with no status but a value was written by an older writer: treat it as measured.
    df["status"] = df["status"].fillna("ok").str.lower()
    return df


def load_results(results_dir: Path | str) -> pd.DataFrame:
    """All rows from `results_dir/**/*.csv`, normalized; an empty frame (with the columns) when there are none."""
    frames = []
    for path in result_files(Path(results_dir)):
        try:
            frame = pd.read_csv(path, low_memory=False)
        except pd.errors.EmptyDataError:
            continue
        frame["source_file"] = str(path)
        frames.append(frame)
    if not frames:
        return normalize(pd.DataFrame(columns=SCHEMA_COLUMNS + ["source_file"]))
    df = normalize(pd.concat(frames, ignore_index=True))
    return newest_code(df.drop_duplicates(subset=DEDUP_KEY, keep="first")).reset_index(drop=True)


# One measured point across runs: what a re-measurement replaces (run and commit left out on purpose).
POINT_KEY: list[str] = [k for k in DEDUP_KEY if k not in ("run_id", "git_commit")] + ["gpu_name"]


def newest_code(df: pd.DataFrame) -> pd.DataFrame:
    """Per point, only the rows of the newest commit that measured it: an impl keeps its name while its code gets
    faster (e.g. ttt_linear/triton before and after the layer fusion), so a median over commits would blend two
    programs. Repeated runs of that newest commit still all count. Older rows stay in the CSVs as history."""
    if df.empty or df["time"].isna().all():
        return df
    key = df[POINT_KEY].astype("string").fillna("<NA>").agg("\x1f".join, axis=1)
    t = pd.to_datetime(df["time"], errors="coerce", utc=True)
    newest = df.assign(_k=key, _t=t).sort_values("_t").groupby("_k")["git_commit"].last()
    return df[df["git_commit"].astype("string").fillna("") == key.map(newest).astype("string").fillna("")]


def select(df: pd.DataFrame, mode: str, metrics: list[str] | None = None) -> pd.DataFrame:
    """Rows of one mode; with `metrics`, only those metrics plus every non-ok row (an OOM is a gap for any metric)."""
    rows = df[df["mode"] == mode]
    if metrics is None:
        return rows
    keep = rows["metric"].isin(metrics) | (rows["status"] != "ok")
    return rows[keep]


def pick_metric(rows: pd.DataFrame, preferred: list[str]) -> str | None:
    """The first preferred metric present among ok rows, else the most common ok metric (None: no ok rows)."""
    ok = rows[(rows["status"] == "ok") & rows["metric"].notna()]
    present = set(ok["metric"])
    for metric in preferred:
        if metric in present:
            return metric
    return None if ok.empty else str(ok["metric"].value_counts().index[0])
