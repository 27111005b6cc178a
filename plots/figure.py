"""What a figure function returns: the files it wrote, its report table and notes, or why it was skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class FigureResult:
    name: str
    title: str
    paths: list[Path] = field(default_factory=list)
    table: pd.DataFrame | None = None  # pivoted for REPORT.md: rows = x, columns = model/impl
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # one-line reason; set when no file was written

    @property
    def drawn(self) -> bool:
        return self.skipped is None


def skipped(name: str, title: str, reason: str) -> FigureResult:
    """A figure whose rows don't exist: no file, one line saying why."""
    return FigureResult(name=name, title=title, skipped=reason)
