"""The list of figures `python -m plots` draws, in the paper's order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from plots.ablation import draw_ablation
from plots.figure import FigureResult
from plots.latency import draw_decode, draw_prefill
from plots.minibatch import draw_minibatch
from plots.op import draw_op
from plots.ppl import draw_loss_by_token, draw_ppl_ctx
from plots.scaling import draw_scaling

DrawFn = Callable[[pd.DataFrame, Path, pd.DataFrame | None], FigureResult]

FIGURES: list[DrawFn] = [
    draw_prefill,
    draw_decode,
    draw_op,
    draw_scaling,
    draw_ppl_ctx,
    draw_loss_by_token,
    draw_ablation,
    draw_minibatch,
]


def draw_all(rows: pd.DataFrame, out_dir: Path, ref: pd.DataFrame | None) -> list[FigureResult]:
    """Draw every figure; one whose rows don't exist comes back as skipped, never as an exception."""
    return [fn(rows, out_dir, ref) for fn in FIGURES]
