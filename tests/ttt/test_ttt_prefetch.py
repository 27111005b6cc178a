"""L2 warming of the next kernel's weight (ttt/ops/pdl.py: NextWeight, share_lines, prefetch_share).

The hints cannot change a result, so what can be wrong is which lines they name: `share_lines` is run as a kernel
and every program's pointers are compared with the set of 128-byte line starts of each row's K prefix (all of them
covered, none outside). On a GPU the 1.3B-shaped decode of a tiny model with both hints on gives the bits of the
same step with them off, and the hinting kernels say so in their launch names.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not importable")
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it)", allow_module_level=True)

from ttt.errors import UserError  # noqa: E402
from ttt.ops.common import KERNEL_LAUNCHES  # noqa: E402
from ttt.ops.pdl import NextWeight, share_lines  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"


@triton.jit
def _lines_kernel(out_ptr, rows, row_len, prefix_lines, LPP: tl.constexpr):
    pid = tl.program_id(0)
    tl.store(out_ptr + pid * LPP + tl.arange(0, LPP), share_lines(rows, row_len, prefix_lines, pid, LPP))


@pytest.mark.parametrize("rows,row_len,frac,programs", [(40, 320, 1.0, 16), (33, 256, 0.5, 7), (5, 64, 1.0, 3)])
def test_share_lines_cover_the_prefix(rows: int, row_len: int, frac: float, programs: int) -> None:
    w = torch.zeros(rows, row_len, dtype=torch.bfloat16, device=DEV)
    nw = NextWeight(w, frac) if ON_GPU else None
    lines = max(1, round(frac * -(-row_len // 64)))
    lpp = triton.next_power_of_2(-(-rows * lines // programs))
    if nw is not None:  # off the GPU NextWeight is always off; the arithmetic is checked either way
        (_, r, n, pl), got_lpp = nw.args(programs, w)
        assert (r, n, pl, got_lpp) == (rows, row_len, lines, lpp)
    out = torch.full((programs * lpp,), -1, dtype=torch.int64, device=DEV)
    _lines_kernel[(programs,)](out, rows, row_len, lines, LPP=lpp)
    want = {r * row_len + j * 64 for r in range(rows) for j in range(lines)}
    got = out.cpu().tolist()
    assert set(got) == want
    # each line once, in row-major order over the programs; padding lanes past the end re-name line 0
    assert got[: rows * lines] == sorted(want)
    assert got[rows * lines :] == [0] * (programs * lpp - rows * lines)


def test_next_weight_off_and_knob(monkeypatch) -> None:
    w = torch.zeros(8, 128, dtype=torch.bfloat16)
    dummy = torch.zeros(1)
    for nw in (NextWeight(w, 1.0), NextWeight(None, 1.0), NextWeight(w.float(), 1.0), NextWeight(w, 0.0)):
        if nw.w is None:
            assert nw.args(4, dummy) == ((dummy, 0, 0, 1), 0)
    assert NextWeight(w, 1.0).w is None  # a CPU tensor: no hints
    monkeypatch.setenv("TTT_PF_OPROJ", "0.5")
    assert NextWeight.knob("OPROJ") == 0.5
    monkeypatch.setenv("TTT_PF_OPROJ", "yes")
    with pytest.raises(UserError, match="TTT_PF_OPROJ='yes'"):
        NextWeight.knob("OPROJ")


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
def test_gpu_decode_with_hints_has_the_same_bits(monkeypatch) -> None:
    from ttt_helpers import ids, tiny_model

    from ttt.generation import restore_cache, snapshot_cache

    model = tiny_model("linear", "mamba").to(DEV, torch.bfloat16)
    model.impl = "triton"
    x = ids(2, 20).to(DEV)
    with torch.no_grad():
        cache = model.allocate_cache(2, 24)
        model.prefill(x[:, :19], cache)
        snap = snapshot_cache(cache)
        ref = model.decode_step(x[:, 19:], cache)
        restore_cache(cache, snap)
        monkeypatch.setenv("TTT_PF_OPROJ", "1")
        monkeypatch.setenv("TTT_PF_INPROJ", "0.5")
        KERNEL_LAUNCHES.clear()
        got = model.decode_step(x[:, 19:], cache)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert any(name.startswith("ttt_linear_decode/fused") and name.endswith("+pf") for name in KERNEL_LAUNCHES)
