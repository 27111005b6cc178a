"""What every Hydra entry point of ttt-bench shares (bench.run, bench.train, bench.ppl): a bad request ends with one
line on stderr and a non-zero exit status, never a traceback or Hydra's multi-line report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ttt.errors import UserError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def one_line(e: BaseException) -> str:
    return "error: " + " ".join(str(e).split())


def explicit_keys() -> set[str]:
    """Keys given on the command line (model=..., +sweep=..., sweep.ctxs=...), without +/~/++ prefixes."""
    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        return set()
    return {o.split("=", 1)[0].lstrip("+~") for o in overrides}


def check_groups(argv: list[str], groups: Iterable[str]) -> None:
    """Unknown config-group options (model=foo, size=2b) fail here with one line, before Hydra's multi-line
    'Could not find' report; everything else is Hydra's to parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(groups)
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
    except Exception as e:  # a malformed override: Hydra's parser message is already one line
        raise UserError(str(e).splitlines()[0]) from None
    for o in overrides:
        group = o.key_or_group
        if group not in groups or o.is_delete():
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        known = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        for v in values:
            if v not in known:
                raise UserError(f"unknown {group} '{v}'; known: {', '.join(known)}")


def guarded(fn: Callable[[], object]) -> None:
    """Run `fn`; a UserError becomes one line and exit status 1."""
    try:
        fn()
    except UserError as e:
        sys.exit(one_line(e))


def main_with_groups(main: Callable[[], None], groups: Iterable[str]) -> None:
    """The console entry: check the config-group options of sys.argv, then hand over to the Hydra main."""
    guarded(lambda: check_groups(sys.argv[1:], groups))
    main()
