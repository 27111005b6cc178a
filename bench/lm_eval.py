"""`python -m bench.lm_eval ARGS`: lm-eval's own command line, with the `ttt-bench` model registered.

lm-eval (0.4.x) finds models only through its registry, filled by imports (it has no plugin entry points), so
`lm_eval --model ttt-bench` alone does not know the name; this wrapper imports bench.lm_eval_model and hands every
argument to lm-eval unchanged:

    python -m bench.lm_eval --model ttt-bench --model_args checkpoint=checkpoints/ttt_linear-small-32k \\
        --include_path "$(python -m bench.lm_eval_tasks.export)" --tasks ttt_bench --limit 100
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    import bench.lm_eval_model  # noqa: F401  - registers "ttt-bench"
    from ttt.errors import UserError

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    except UserError as e:  # a bad checkpoint, device or impl: one line, as from every ttt-bench command
        sys.exit("error: " + " ".join(str(e).split()))


if __name__ == "__main__":
    main()
