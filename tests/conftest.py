"""Shared test set-up.

Without a GPU, Triton kernels run through the interpreter. Triton decides that when `@triton.jit` decorates and
caches part of the choice when it is imported (torch imports it early), so the variable is set here, before
anything imports torch. Tests marked `gpu` are skipped, with the reason, where there is no CUDA device (CI)."""

import os
import shutil

if not (os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
