"""User-facing errors: each one is a single line that names the bad value and what to do."""

from __future__ import annotations

import importlib
from types import ModuleType


class UserError(ValueError):
    """A bad request from the user (unknown name, invalid size, wrong machine). Printed as one line."""


class MissingPackageError(UserError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """Import an optional package or raise one line naming the `ttt-bench[extra]` that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        need = what or module
        raise MissingPackageError(
            f"{need} needs the package '{module}', which is not importable ({e.__class__.__name__}: {e}); "
            f"install it with: pip install 'ttt-bench[{extra}]'"
        ) from None


def require_cuda(what: str) -> None:
    """Raise one line when a GPU-only implementation is asked for on a machine without CUDA."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"{what} runs only on a CUDA GPU, and this machine has none (torch.cuda.is_available() is False)"
        )
