"""The Gluon TTT-Linear prefill kernel (GPU only: Gluon has no interpreter) against the definition in float64 and
against the Triton kernel with the same bf16 operands, plus the backend choice, which also runs on the CPU.

Tolerances: bf16 q/k/v and bf16 MMA operands with fp32 accumulation and an fp32 state: rel. L2 error < 2e-2 against
the float64 definition (measured ~4e-3 for the Triton kernel, bench/notes), < 1e-2 against the Triton kernel (the
two differ only in summation order; measured 1e-3 to 3e-3 at the op shapes, bench/notes/session7.md).
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton", reason="triton is not importable")

from tests.ops.test_ttt_linear_triton import advance, make_inputs, naive64  # noqa: E402
from ttt.errors import UserError  # noqa: E402
from ttt.ops.ttt_linear.prefill import resolve_backend, ttt_linear_triton  # noqa: E402

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
gpu = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device (Gluon has no interpreter)")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


_REFS: dict = {}  # (shape, seed, last) -> (definition, Triton kernel) results, shared by the knob variants


def _run(B, H, T, pre, seed, last=None):
    args = make_inputs(B, H, T + pre, 64, 16, dtype=torch.bfloat16, seed=seed)
    q, k, v, eta, te, lw, lb, st = args
    if last is not None:
        te[-1] = last
    if pre:
        st = advance((q.float(), k.float(), v.float(), eta.float(), te, lw, lb, st), pre, 16)
    sl = slice(pre, pre + T)
    return (q[:, :, sl], k[:, :, sl], v[:, :, sl], eta[:, :, sl], te, lw, lb, st)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "B,H,T,pre,last",
    [
        (1, 2, 48, 0, None),  # whole mini-batches; B*H far below the SM count
        (2, 3, 37, 0, None),  # ragged tail
        (1, 2, 21, 5, None),  # input offset: head chunk through the accumulators, then full, then tail
        (1, 2, 7, 5, None),  # input offset, stays inside the same mini-batch
        (1, 2, 11, 5, None),  # input offset, ends exactly at the boundary
        (2, 4, 1000, 3, None),  # long, head and tail
        (1, 2, 45, 0, 0.0),  # token_eta[-1] = 0: no update (the unfolded loop)
    ],  # fmt: skip
)
@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"bar1": False},
        {"nbuf": 3},
        {"bar1": False, "nbuf": 3},
        {"early": True},
        {"defer_out": True},
        {"defer_out": True, "early": True, "nbuf": 3},
    ],
    ids=["default", "bar2", "nb3", "bar2-nb3", "early", "defer", "defer-early-nb3"],
)
def test_gluon_matches_definition_and_triton(B, H, T, pre, last, knobs):
    q, k, v, eta, te, lw, lb, st = _run(B, H, T, pre, seed=T + pre, last=last)
    assert resolve_backend("auto", q, k, v, (st.W, st.b, st.W_acc, st.b_acc), 16, "bf16") == "gluon"
    st_in = st.clone()
    out, st_g = ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="gluon", **knobs)
    key = (B, H, T, pre, last)
    if key not in _REFS:
        _REFS[key] = (
            naive64(q, k, v, eta, te, lw, lb, st, 16),
            ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="triton"),
        )
    (ref, st_ref), (tri, st_t) = _REFS[key]
    assert out.dtype == q.dtype and out.shape == q.shape
    assert _rel(out, ref) < 2e-2 and _rel(out, tri) < 1e-2
    for n in ("W", "b", "W_acc", "b_acc"):
        g, r, t = getattr(st_g, n), getattr(st_ref, n), getattr(st_t, n)
        if r.abs().max() == 0:  # no open mini-batch at the end: the accumulators must be exactly zero
            assert g.abs().max() == 0, n
        else:
            assert _rel(g, r) < 2e-2 and _rel(g, t) < 1e-2, n
    assert int(st_g.offset) == int(st_ref.offset)
    if last == 0:
        assert torch.equal(st_g.W, st.W)
    for n, t in vars(st_in).items():  # the input state is untouched
        assert torch.equal(t, getattr(st, n)), n


@pytest.mark.gpu
@gpu
def test_gluon_takes_strided_views_and_fla_residual():
    """q, k, v as (B, H, T, d) views of one (B, T, 3, H, d) buffer (the fused layer path) give the same bits as
    contiguous copies; fla's residual convention matches the Triton kernel's."""
    B, H, T = 2, 4, 77
    q, k, v, eta, te, lw, lb, st = _run(B, H, T, 0, seed=1)
    buf = torch.stack([q, k, v], 0).permute(1, 3, 0, 2, 4).contiguous()  # (B, T, 3, H, d)
    qv, kv, vv = (buf[:, :, i].transpose(1, 2) for i in range(3))
    assert qv.stride(2) == 3 * H * 64 and not qv.is_contiguous()
    a, sa = ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="gluon")
    b, sb = ttt_linear_triton(qv, kv, vv, eta, te, lw, lb, st, mini_batch_size=16, backend="gluon")
    assert torch.equal(a, b) and torch.equal(sa.W, sb.W)
    f, _ = ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="gluon", fla_residual=True)
    t, _ = ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="triton", fla_residual=True)
    assert _rel(f, t) < 1e-2 and _rel(f, a) > 1e-2  # the convention changes the output


@pytest.mark.gpu
@gpu
def test_auto_backend_falls_to_triton_only_where_gluon_does_not_apply():
    q, k, v, eta, te, lw, lb, st = _run(1, 2, 32, 0, seed=2)
    s = (st.W, st.b, st.W_acc, st.b_acc)
    assert resolve_backend("auto", q.float(), k.float(), v.float(), s, 16, "bf16") == "triton"
    assert resolve_backend("auto", q, k, v, s, 16, "tf32") == "triton"
    assert resolve_backend("auto", q, k, v, s, 16, "bf16", {"skew": True}) == "triton"
    with pytest.raises(UserError, match="bfloat16"):
        ttt_linear_triton(q.float(), k.float(), v.float(), eta, te, lw, lb, st, mini_batch_size=16, backend="gluon")
    with pytest.raises(UserError, match="skew"):
        ttt_linear_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=16, backend="gluon", skew=True)


def test_backend_errors_name_the_bad_value():
    q = torch.zeros(1, 1, 16, 64)
    s = (torch.zeros(1, 1, 64, 64),) * 4
    assert resolve_backend("auto", q, q, q, s, 16, "bf16") == "triton"  # CPU tensors: the interpreter's kernel
    with pytest.raises(UserError, match="backend='cuda'"):
        resolve_backend("cuda", q, q, q, s, 16, "bf16")
    with pytest.raises(UserError, match="needs CUDA tensors, got device 'cpu'"):
        resolve_backend("gluon", q, q, q, s, 16, "bf16")
