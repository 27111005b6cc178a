"""The Gluon TTT-MLP prefill kernel (GPU only: Gluon has no interpreter) against the definition in float64 and
against the Triton kernel with the same bf16 operands, plus the backend choice, which also runs on the CPU.

Tolerances: bf16 q/k/v and bf16 MMA operands with fp32 accumulation and an fp32 state: rel. L2 error < 2e-2 against
the float64 definition (the Triton kernel's bound in tests/ops/test_ttt_mlp_triton.py), < 1e-2 against the Triton
kernel (the same operand roundings, in another summation order).
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not importable")

from tests.ops.test_ttt_mlp_triton import _case, _ref, _state  # noqa: E402
from ttt.errors import UserError  # noqa: E402
from ttt.ops.ttt_mlp.prefill import resolve_backend, ttt_mlp_triton  # noqa: E402

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (Gluon has no interpreter)")
FIELDS = ("W1", "b1", "W2", "b2", "W1_acc", "b1_acc", "W2_acc", "b2_acc")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _fields(st) -> list[torch.Tensor]:
    return [getattr(st, n) for n in FIELDS]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "B,H,T,pre,last",
    [
        (1, 2, 48, 0, None),  # whole mini-batches; B*H far below the SM count
        (2, 3, 37, 0, None),  # ragged tail
        (1, 2, 21, 5, None),  # input offset: head chunk (Triton launch 1), then full, then tail
        (1, 2, 7, 5, None),  # input offset, stays inside the same mini-batch
        (1, 2, 11, 5, None),  # input offset, ends exactly at the boundary
        (2, 4, 600, 3, None),  # long, head and tail
        (1, 2, 45, 0, 0.0),  # token_eta[-1] = 0: no update (the unfolded loop)
    ],  # fmt: skip
)
@pytest.mark.parametrize("nbuf", [3, 2])
def test_gluon_matches_definition_and_triton(B, H, T, pre, last, nbuf):
    c, ins, st = _case(T, 16, 64, seed=T + pre, B=B, H=H, pre=pre, dtype=torch.bfloat16)
    if last is not None:
        c.token_eta[-1] = last
        ins[4][-1] = last
    q, k, v = ins[:3]
    st_g = _state(st)
    assert resolve_backend("auto", q, k, v, _fields(st_g), 16, "bf16", {}) == "gluon"
    st_in = _state(st_g)
    out, new = ttt_mlp_triton(*ins, st_g, mini_batch_size=16, backend="gluon", nbuf=nbuf)
    ref, st_ref = _ref(c, pre, T, st)
    tri, st_t = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, backend="triton")
    assert out.dtype == q.dtype and out.shape == q.shape
    assert _rel(out, ref) < 2e-2, _rel(out, ref)
    assert _rel(out, tri) < 1e-2, _rel(out, tri)
    for n in FIELDS:
        g, r, t = getattr(new, n), getattr(st_ref, n), getattr(st_t, n)
        if r.abs().max() == 0:  # no open mini-batch at the end: the accumulators must be exactly zero
            assert g.abs().max() == 0, n
        else:
            assert _rel(g, r) < 2e-2 and _rel(g, t) < 1e-2, (n, _rel(g, r), _rel(g, t))
    assert int(new.offset) == int(st_ref.offset)
    if last == 0:
        assert torch.equal(new.W1, st_g.W1) and torch.equal(new.W2, st_g.W2)
    for n in FIELDS:  # the input state is untouched
        assert torch.equal(getattr(st_in, n), getattr(st_g, n)), n


@pytest.mark.gpu
@gpu
def test_gluon_updates_matter_and_views():
    """Guards the tolerances: frozen inner weights (eta = 0) move the output far more than they allow. And q, k, v as
    views of one (B, T, 3, H, d) buffer give the same bits as contiguous copies."""
    c, ins, st = _case(96, 16, 64, seed=3, B=2, H=3, dtype=torch.bfloat16)
    out, _ = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, backend="gluon")
    frozen, _ = ttt_mlp_triton(*ins[:3], ins[3] * 0, *ins[4:], _state(st), mini_batch_size=16, backend="gluon")
    assert _rel(out, frozen) > 5e-2
    buf = torch.stack(ins[:3], 0).permute(1, 3, 0, 2, 4).contiguous()  # (B, T, 3, H, d)
    qv, kv, vv = (buf[:, :, i].transpose(1, 2) for i in range(3))
    assert not qv.is_contiguous()
    b, _ = ttt_mlp_triton(qv, kv, vv, *ins[3:], _state(st), mini_batch_size=16, backend="gluon")
    assert torch.equal(out, b)


@pytest.mark.gpu
@gpu
def test_auto_backend_falls_to_triton_only_where_gluon_does_not_apply():
    c, ins, st = _case(32, 16, 64, seed=2, dtype=torch.bfloat16)
    q, k, v = ins[:3]
    s = _fields(_state(st))
    assert resolve_backend("auto", q.float(), k.float(), v.float(), s, 16, "bf16", {}) == "triton"
    assert resolve_backend("auto", q, k, v, s, 16, "tf32", {}) == "triton"
    assert resolve_backend("auto", q, k, v, s, 16, "bf16", {"prefetch": True}) == "triton"
    with pytest.raises(UserError, match="bfloat16"):
        ttt_mlp_triton(*[x.float() for x in ins[:3]], *ins[3:], _state(st), mini_batch_size=16, backend="gluon")
    with pytest.raises(UserError, match="prefetch"):
        ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, backend="gluon", prefetch=True)


def test_backend_errors_name_the_bad_value():
    q = torch.zeros(1, 1, 16, 64)
    s = [torch.zeros(1, 1, 64, 256)] * 8
    assert resolve_backend("auto", q, q, q, s, 16, "bf16", {}) == "triton"  # CPU tensors: the interpreter's kernel
    with pytest.raises(UserError, match="backend='cuda'"):
        resolve_backend("cuda", q, q, q, s, 16, "bf16", {})
    with pytest.raises(UserError, match="needs CUDA tensors, got device 'cpu'"):
        resolve_backend("gluon", q, q, q, s, 16, "bf16", {})
