"""The paper's own numbers (plots/paper_reference.csv): loaded separately, drawn as a dashed overlay.

These rows are never concatenated with measured rows: they have their own columns and their own loader, and
figures receive them as a separate argument.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from plots.style import REFERENCE_STYLE

REFERENCE_PATH = Path(__file__).with_name("paper_reference.csv")
REFERENCE_COLUMNS: list[str] = [
    "figure", "overlay", "metric", "model", "variant", "x", "x_unit", "value", "unit", "hardware", "setting", "source", "cite",
]  # fmt: skip


def load_reference(path: Path | str = REFERENCE_PATH) -> pd.DataFrame:
    """The paper's values; an empty frame when the file is absent."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    ref = pd.read_csv(path, comment="#")
    missing = set(REFERENCE_COLUMNS) - set(ref.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    for col in ("x", "value"):
        ref[col] = pd.to_numeric(ref[col], errors="coerce")
    return ref


def for_figure(ref: pd.DataFrame | None, overlay: str, metric: str | None = None) -> pd.DataFrame:
    """Reference rows to overlay on one of our figures (the `overlay` column names it, e.g. "ablation")."""
    if ref is None or ref.empty:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    sel = ref[ref["overlay"].astype(str) == overlay]
    if metric is not None:
        sel = sel[sel["metric"] == metric]
    return sel


def overlay_lines(ax: plt.Axes, ref: pd.DataFrame, colors: dict[str, str] | None = None) -> int:
    """Dashed lines, one per paper model, labelled "paper: <model> (<source>, <hardware>)"; returns lines drawn."""
    drawn = 0
    for model, grp in ref.dropna(subset=["x", "value"]).groupby("model", sort=True):
        grp = grp.sort_values("x")
        src = "/".join(sorted(set(grp["source"].astype(str))))
        hw = "/".join(sorted(set(grp["hardware"].astype(str))))
        color = (colors or {}).get(str(model), "#555555")
        ax.plot(grp["x"], grp["value"], color=color, label=f"paper: {model} ({src}, {hw})", **REFERENCE_STYLE)
        drawn += 1
    return drawn
