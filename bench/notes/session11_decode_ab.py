"""Session 11 A/B: the decode step's row norms from producer statistics (TTT_ROW_STATS, default on) against their
own launches (TTT_ROW_STATS=0, session 10's path), 1.3B TTT-Linear and TTT-MLP (Mamba backbone), B = 16, bf16, CUDA
graph, through the shared A/B runner (decode_ab.py), with PDL and without (per-kernel profiles). Session 11 ran an
earlier form of this script: a column per knob instead of `env`, PDL-off profiles of the default only.

    python3 bench/notes/session11_decode_ab.py OUTDIR
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_ab import run  # noqa: E402

if __name__ == "__main__":
    run(
        Path(sys.argv[1]),
        ["ttt_linear", "ttt_mlp"],
        [{"TTT_ROW_STATS": r, "TTT_PDL": pdl} for pdl in "10" for r in "01"],
    )
