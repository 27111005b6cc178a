"""Run the Triton kernels through the interpreter on machines without a GPU.

Triton picks the interpreter when `@triton.jit` decorates and caches parts of the choice when it is imported
(torch imports it early), so the variable must be set before anything imports torch: hence here, not in a test."""

import os
import shutil

if not (os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi")):
    os.environ.setdefault("TRITON_INTERPRET", "1")
