"""Result rows: the long-format schema (DESIGN.md "Rows"), provenance, atomic append, and resume keys.

One row per measured quantity. Measuring code yields partial rows (model, impl, mode, ctx, batch, metric, value,
unit, ...); `complete` adds the run's provenance and fills every schema column so every file has the same header.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

COLUMNS: list[str] = [
    "run_id", "time", "git_commit", "git_dirty", "model", "impl", "decode_impl", "size", "n_params", "mode",
    "ctx", "batch", "dtype", "metric", "value", "unit", "stat", "spread_lo", "spread_hi", "repeats",
    "peak_mem_bytes", "status", "error", "tokens_per_s", "bytes_moved", "frac_hbm", "check_rel_err",
    "decode_graph", "device", "gpu_name", "driver", "cuda", "torch", "triton", "jax", "hw_copy_gbps",
    "hw_matmul_tflops", "config_hash",
    # Perplexity and training rows: which weights (sha256 prefix), text and tokens; the evaluation protocol; the
    # position bucket of a loss-by-token row (its last token, 1-based); tokens the value averages over.
    "checkpoint", "corpus", "tokenizer", "protocol", "token_index", "n_tokens",
]  # fmt: skip

INT_COLUMNS = ["n_params", "ctx", "batch", "repeats", "peak_mem_bytes", "bytes_moved", "token_index", "n_tokens"]
FLOAT_COLUMNS = [
    "value", "spread_lo", "spread_hi", "tokens_per_s", "frac_hbm", "check_rel_err", "hw_copy_gbps", "hw_matmul_tflops",
]  # fmt: skip
BOOL_COLUMNS = ["git_dirty", "decode_graph"]

# A point already measured (or known not to fit) under these fields is not measured again unless forced.
# gpu_name joins DESIGN.md's key so an H100 row never stands in for an H200 point at the same commit.
RESUME_KEY: list[str] = ["model", "impl", "size", "mode", "ctx", "batch", "dtype", "device", "gpu_name", "git_commit"]
FINAL_STATUSES = ("ok", "oom")  # an error or skipped point is retried on the next run
STATUSES = ("ok", "oom", "error", "skipped")


def _cmd(*args: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, cwd=REPO_ROOT)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # an optional package that is absent or broken is simply not recorded
        return ""


def _driver() -> str:
    out = _cmd("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader").splitlines()
    return out[0].strip() if out else ""


def default_path(name: str, on_cpu: bool) -> Path:
    """results/<name>.csv, or results/<name>_cpu.csv on a machine without CUDA: CPU rows (tiny, labelled defaults)
    never mix with the committed GPU rows (`.gitignore` keeps the *_cpu.csv files out of git)."""
    return Path("results") / f"{name}{'_cpu' if on_cpu else ''}.csv"


@cache
def git_state() -> tuple[str, bool]:
    """(commit, dirty). TTT_BENCH_GIT_COMMIT and TTT_BENCH_GIT_DIRTY=0|1, when set, win over git: a copy of the
    tree on a lent GPU machine may carry no .git, or a stale one that names another commit than the files."""
    env_commit = os.environ.get("TTT_BENCH_GIT_COMMIT", "").strip()
    if env_commit:
        return env_commit, os.environ.get("TTT_BENCH_GIT_DIRTY", "0") == "1"
    commit = _cmd("git", "rev-parse", "HEAD")
    if commit:
        return commit, bool(_cmd("git", "status", "--porcelain", "--untracked-files=no"))
    return "unknown", False


def provenance(device: torch.device | str, hardware: dict[str, float] | None = None) -> dict[str, Any]:
    """Everything about this run that is the same for all its rows; gathered once per run."""
    device = torch.device(device)
    commit, dirty = git_state()
    on_gpu = device.type == "cuda"
    prov: dict[str, Any] = {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device.type,
        "gpu_name": torch.cuda.get_device_name(device) if on_gpu else "",
        "driver": _driver() if on_gpu else "",
        "cuda": (torch.version.cuda or "") if on_gpu else "",
        "torch": torch.__version__,
        "triton": _version("triton"),
        "jax": _version("jax"),
    }
    prov.update(hardware or {})
    return prov


def config_hash(cfg: Any) -> str:
    """Short stable hash of the settings that shape a measurement (not of paths or provenance)."""
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


def complete(partial: dict[str, Any], prov: dict[str, Any], cfg_hash: str) -> dict[str, Any]:
    """A full schema row: provenance, then the measurement's own fields, every schema column present."""
    row = {c: None for c in COLUMNS}
    row.update({k: v for k, v in prov.items() if k in row})
    row.update(partial)  # a measurement's own extra fields (e.g. an op row's shape_set) follow the schema columns
    row["time"] = row["time"] or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    row["config_hash"] = row["config_hash"] or cfg_hash
    row["status"] = row["status"] or "ok"
    row["stat"] = row["stat"] or ("median" if row["status"] == "ok" and row["value"] is not None else None)
    if row["error"]:
        row["error"] = " ".join(str(row["error"]).split())[:500]  # one line: a CSV cell, and a log line
    return row


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Schema dtypes (nullable ints and bools, floats, strings); missing schema columns added empty."""
    df = df.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
    for col in FLOAT_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in BOOL_COLUMNS:
        df[col] = df[col].map(_to_bool, na_action="ignore").astype("boolean")
    for col in df.columns:
        if col not in INT_COLUMNS + FLOAT_COLUMNS + BOOL_COLUMNS:
            df[col] = df[col].astype("string")
    return df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]


def _to_bool(v: Any) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes")


def read(path: Path | str) -> pd.DataFrame:
    """All rows of one results file with the schema's dtypes (an empty typed frame if it does not exist)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return typed(pd.DataFrame(columns=COLUMNS))
    return typed(pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""]))


@contextmanager
def _locked(path: Path):
    """An exclusive lock on the results directory, so parallel multirun jobs append one at a time
    (a lock on the directory leaves no lock file behind in results/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def append(path: Path | str, rows: Iterable[dict[str, Any]]) -> int:
    """Append complete rows atomically: old file + new rows go to a temp file that replaces the old one.

    A process killed at any moment leaves either the old file or the new one, never half a row.
    """
    path = Path(path)
    new = pd.DataFrame(list(rows))
    if new.empty:
        return 0
    with _locked(path) as dir_fd:
        old = read(path)
        df = typed(new) if old.empty else pd.concat([old, typed(new)], ignore_index=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", newline="") as f:
                df.to_csv(f, index=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.fsync(dir_fd)  # the rename itself survives a crash
    return len(new)


def key_of(row: dict[str, Any] | pd.Series) -> tuple[str, ...]:
    """A row's resume key as strings (ints without '.0', empty for missing), comparable across a CSV round trip."""
    out = []
    for col in RESUME_KEY:
        v = row.get(col)
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return tuple(out)


def done_keys(path: Path | str) -> set[tuple[str, ...]]:
    """Keys of points whose rows are final (ok or oom): a resumed sweep skips them."""
    df = read(path)
    df = df[df["status"].isin(FINAL_STATUSES)]
    return {key_of(r) for _, r in df.iterrows()}
