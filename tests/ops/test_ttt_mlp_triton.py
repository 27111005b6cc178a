"""The Triton TTT-MLP kernels against the token-by-token definition (naive, float64), on the CPU under
TRITON_INTERPRET=1 (tests/conftest.py sets it without a GPU).

Tolerances: fp32 inputs with "ieee" matmuls agree with the fp64 reference to rounding: max |err| / max |ref| < 2e-5
on outputs and every state field (seen ~1e-6). bf16 inputs (fp32 state and accumulation, fp32 "ieee" matmuls here:
the interpreter's bf16 tl.dot is not usable) < 2e-2 relative L2. The GPU tests (marked gpu) check the default bf16
operands against the fp32 dual form at relative L2 < 2e-2.
"""

from __future__ import annotations

import os
from dataclasses import fields

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not importable: the Triton kernels cannot be tested")

import ttt.ops.ttt_mlp as mlp  # noqa: E402
from ttt.errors import UserError  # noqa: E402
from ttt.ops.common import TTTMLPState  # noqa: E402
from ttt.ops.ttt_mlp.naive import ttt_mlp_naive, ttt_mlp_step  # noqa: E402

from . import MLP, assert_states_close, make_case, rel_err  # noqa: E402

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
if not ON_GPU and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and TRITON_INTERPRET is not 1 (tests/conftest.py sets it)", allow_module_level=True)

from ttt.ops.ttt_mlp.decode import ttt_mlp_step_triton  # noqa: E402
from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton  # noqa: E402

DEV = "cuda" if ON_GPU else "cpu"
TOL = 2e-5  # fp32 inputs, ieee matmuls, vs fp64
PREC = "ieee" if not ON_GPU else "tf32"  # the interpreter's reference precision; tf32 is the closest fast one on GPU
TOL_PREC = TOL if not ON_GPU else 5e-3


def _state(st: TTTMLPState, dtype: torch.dtype = torch.float32, device: str = DEV) -> TTTMLPState:
    """A private copy (copy=True: the offset tensor too, which the in-place step advances)."""
    return TTTMLPState(
        **{f.name: getattr(st, f.name).to(device=device, dtype=dtype if f.name != "offset" else torch.int64, copy=True)
           for f in fields(st)}
    )  # fmt: skip


def _case(T: int, b: int, d: int, seed: int, B: int = 1, H: int = 2, pre: int = 0, dtype=torch.float32):
    """Inputs of T tokens after `pre` tokens already consumed by the definition (state offset = pre % b)."""
    c = make_case(MLP, T=pre + T, b=b, seed=seed, B=B, H=H, d=d, dtype=torch.float64)
    st = c.state
    if pre:
        _, st = ttt_mlp_naive(*c.seq(0, pre), st, mini_batch_size=b)
    ins = [x.to(DEV, dtype) for x in c.seq(pre, pre + T)[:4]] + [x.to(DEV, torch.float32) for x in c.seq(0, 1)[4:]]
    return c, ins, st


def _ref(c, pre: int, T: int, st: TTTMLPState):
    """The definition in float64 from the same state."""
    return ttt_mlp_naive(*c.seq(pre, pre + T), _state(st, torch.float64, "cpu"), mini_batch_size=c.b)


def _check(out, st, ref, st_ref, tol: float) -> None:
    assert rel_err(out.cpu(), ref) < tol, f"out: rel err {rel_err(out.cpu(), ref):.3e}"
    assert_states_close(_state(st, torch.float64, "cpu"), st_ref, tol)


@pytest.mark.parametrize(
    "B,H,T,d,b,pre,seed",
    [
        (1, 2, 32, 16, 16, 0, 0),  # whole mini-batches
        (2, 1, 21, 16, 16, 0, 1),  # ragged tail
        (1, 1, 21, 16, 16, 0, 2),  # ... another seed
        (1, 1, 9, 16, 16, 0, 3),  # T < b: the tail alone
        (1, 1, 19, 16, 8, 0, 4),  # mini-batch 8 (padded to 16 rows in the kernel), ragged
        (1, 1, 21, 16, 16, 5, 5),  # input offset 5: head chunk through the accumulators, then full, then tail
        (1, 1, 7, 16, 16, 5, 6),  # input offset 5, stays inside the same mini-batch
        (1, 1, 11, 16, 16, 5, 7),  # input offset 5, ends exactly at the mini-batch boundary
        (1, 1, 20, 32, 16, 3, 8),  # d = 32, offset 3
        (1, 1, 18, 64, 16, 0, 9),  # the paper's head dim (hidden 256)
    ],
)
def test_prefill_matches_naive(B, H, T, d, b, pre, seed):
    c, ins, st = _case(T, b, d, seed, B=B, H=H, pre=pre)
    st_in = _state(st)
    st_copy = st_in.clone()
    out, new = ttt_mlp_triton(*ins, st_in, mini_batch_size=b, precision=PREC)
    ref, st_ref = _ref(c, pre, T, st)
    assert out.dtype == ins[0].dtype and out.shape == ins[0].shape
    _check(out, new, ref, st_ref, TOL_PREC)
    assert int(new.offset) == (pre + T) % b
    for f in fields(st_in):  # the input state is untouched (functional update)
        assert torch.equal(getattr(st_in, f.name), getattr(st_copy, f.name)), f.name


@pytest.mark.parametrize(
    "tuning",
    [
        {"hidden_chunks": 2},
        {"hidden_chunks": 4},
        {"prefetch": True},
        {"one_pass_ln": False},
        {"late_zq1": False},
        {"late_zq1": False, "prefetch": True, "hidden_chunks": 2},
        {"dz_bf16": True},
        {"reload_consts": True},
        {"lazy_offsets": True},
        {"dz_bf16": True, "reload_consts": True, "lazy_offsets": True, "prefetch": True},
    ],
    ids=["hch2", "hch4", "prefetch", "ln2", "eq1", "pf-eq1-h2", "dz16", "rl", "lzo", "all-pf"],
)
def test_prefill_knobs_keep_results(tuning):
    """The tuning knobs change the schedule, never the function: head chunk, full mini-batch and tail."""
    c, ins, st = _case(24, 16, 16, seed=11, pre=4)
    out, new = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, precision=PREC, **tuning)
    ref, st_ref = _ref(c, 4, 24, st)
    _check(out, new, ref, st_ref, TOL_PREC)


def test_prefill_chains():
    """Processing [x1; x2] equals processing x1, then x2 from the returned state (the interface contract)."""
    c, ins, st = _case(40, 16, 16, seed=12)
    full, st_full = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, precision=PREC)
    s = 13
    o1, st1 = ttt_mlp_triton(*[x[:, :, :s] for x in ins[:4]], *ins[4:], _state(st), mini_batch_size=16, precision=PREC)
    o2, st2 = ttt_mlp_triton(*[x[:, :, s:] for x in ins[:4]], *ins[4:], st1, mini_batch_size=16, precision=PREC)
    assert rel_err(torch.cat([o1, o2], 2), full) < TOL_PREC
    assert_states_close(st2, st_full, TOL_PREC)


def test_prefill_bf16_inputs():
    """bf16 q, k, v, eta (fp32 state): out in bf16, close to the fp64 definition on the bf16-rounded inputs."""
    c, ins, st = _case(37, 16, 32, seed=13, dtype=torch.bfloat16)
    out, new = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, precision=PREC)
    assert out.dtype == torch.bfloat16 and new.W1.dtype == torch.float32
    ref, st_ref = ttt_mlp_naive(*[x.cpu().double() for x in ins], _state(st, torch.float64, "cpu"), mini_batch_size=16)
    assert ((out.cpu().double() - ref).norm() / ref.norm()).item() < 2e-2
    for n in ("W1", "W2", "W1_acc", "W2_acc"):
        a, r = getattr(new, n).cpu().double(), getattr(st_ref, n)
        assert ((a - r).norm() / r.norm()).item() < 2e-2, n


def test_prefill_updates_matter():
    """Guards the tolerances against vacuity: the inner updates move the outputs far more than TOL."""
    c, ins, st = _case(32, 16, 16, seed=14)
    out, _ = ttt_mlp_triton(*ins, _state(st), mini_batch_size=16, precision=PREC)
    frozen, _ = ttt_mlp_triton(*ins[:3], ins[3] * 0, *ins[4:], _state(st), mini_batch_size=16, precision=PREC)
    assert rel_err(out, frozen) > 1e-2


@pytest.mark.parametrize("split", [False, True], ids=["one-program", "hidden-split"])
@pytest.mark.parametrize("b,pre,steps,d", [(4, 0, 6, 16), (16, 13, 5, 16), (16, 3, 2, 64)])
def test_step_matches_naive(b, pre, steps, d, split):
    """The Triton step (in place) against naive.ttt_mlp_step in float64, after a Triton prefill of `pre` tokens
    (the prefill's ragged-tail state feeds the step), across a mini-batch boundary (the offset wraps). Both step
    kernels: one program per head, and the hidden-split one (several programs per head, three launches)."""
    c, ins, st = _case(pre + steps, b, d, seed=20 + pre, B=2, H=2)
    st_tri = _state(st)
    if pre:
        _, st_tri = ttt_mlp_triton(
            *[x[:, :, :pre] for x in ins[:4]], *ins[4:], st_tri, mini_batch_size=b, precision=PREC
        )
    st_ref = _state(st_tri, torch.float64, "cpu")
    for t in range(pre, pre + steps):
        xs = [x[:, :, t : t + 1] for x in ins[:4]]
        o, st_ret = ttt_mlp_step_triton(*xs, *ins[4:], st_tri, mini_batch_size=b, split=split)
        assert st_ret is st_tri
        r, _ = ttt_mlp_step(*[x.cpu().double() for x in xs + ins[4:]], st_ref, mini_batch_size=b)
        assert rel_err(o.cpu(), r) < TOL, t
        assert_states_close(_state(st_tri, torch.float64, "cpu"), st_ref, TOL)
    assert int(st_tri.offset) == (pre + steps) % b


def test_registered():
    assert mlp.STEP_IMPLS["triton"] is not None and "naive" in mlp.STEP_IMPLS
    c, ins, st = _case(5, 4, 16, seed=30)
    out, _ = mlp.ttt_mlp(*ins, _state(st), mini_batch_size=4, impl="triton")
    ref, _ = _ref(c, 0, 5, st)
    assert rel_err(out.cpu(), ref) < (2e-2 if ON_GPU else TOL)  # default: bf16 operands on a GPU, ieee interpreted
    xs = [x[:, :, :1] for x in ins[:4]]  # the step registry's entries agree with each other (in place, one token)
    outs = [mlp.STEP_IMPLS[n](*xs, *ins[4:], _state(st), mini_batch_size=4)[0] for n in ("triton", "triton_single")]
    assert rel_err(outs[1].cpu(), outs[0].cpu()) < TOL


@pytest.mark.parametrize("d", [8, 128])
def test_unsupported_head_dim_is_a_clear_error(d):
    c, ins, st = _case(4, 4, d, seed=31)
    with pytest.raises(UserError, match="head_dim"):
        ttt_mlp_triton(*ins, _state(st), mini_batch_size=4)


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize(
    "T,tuning",
    [
        (1000, {}),
        (4096, {}),
        (1000, {"backend": "triton"}),
        (4096, {"backend": "triton"}),
        (1000, {"hidden_chunks": 2}),
        (1000, {"prefetch": True, "late_zq1": False}),
    ],  # fmt: skip
)
def test_prefill_gpu_bf16(T, tuning):
    from ttt.ops.ttt_mlp.dual import ttt_mlp_dual

    g = torch.Generator(device="cuda").manual_seed(T)
    B, H, d, b = 2, 4, 64, 16
    q, k, v = (torch.randn(B, H, T, d, device="cuda", generator=g).bfloat16() for _ in range(3))
    eta = (torch.sigmoid(torch.randn(B, H, T, device="cuda", generator=g)) / d).bfloat16()
    te = 1.0 / torch.arange(1, b + 1, device="cuda", dtype=torch.float32)
    lw, lb = (
        1 + 0.1 * torch.randn(H, d, device="cuda", generator=g),
        0.1 * torch.randn(H, d, device="cuda", generator=g),
    )
    w = [0.02 * torch.randn(*s, device="cuda", generator=g) for s in ((H, d, 4 * d), (H, 4 * d), (H, 4 * d, d), (H, d))]
    st = mlp.init_state(*w, B)
    out, st_out = ttt_mlp_triton(q, k, v, eta, te, lw, lb, st, mini_batch_size=b, **tuning)
    ref, st_ref = ttt_mlp_dual(q.float(), k.float(), v.float(), eta.float(), te, lw, lb, st, mini_batch_size=b)
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2
    for n in ("W1", "W2"):
        a, r = getattr(st_out, n), getattr(st_ref, n)
        assert ((a - r).norm() / r.norm()).item() < 2e-2, n


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device")
@pytest.mark.parametrize("split", [False, True], ids=["one-program", "hidden-split"])
def test_step_cuda_graph(split):
    """The step replays in a CUDA graph and matches eager steps bit for bit (offset advanced on the device)."""
    c, ins, st = _case(40, 16, 64, seed=40, B=4, H=4, dtype=torch.bfloat16)
    st_eager, st_graph = _state(st), _state(st)
    xs = [x[:, :, :1].clone() for x in ins[:4]]
    for _ in range(2):  # compilation outside the capture, on a throwaway state
        ttt_mlp_step_triton(*xs, *ins[4:], _state(st), mini_batch_size=16, split=split)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out_g, _ = ttt_mlp_step_triton(*xs, *ins[4:], st_graph, mini_batch_size=16, split=split)
    for t in range(20):
        for buf, x in zip(xs, ins[:4]):
            buf.copy_(x[:, :, t : t + 1])
        g.replay()
        o, _ = ttt_mlp_step_triton(*xs, *ins[4:], st_eager, mini_batch_size=16, split=split)
        torch.testing.assert_close(out_g, o, atol=0, rtol=0)
    assert int(st_graph.offset) == int(st_eager.offset) == 20 % 16
    for f in fields(st_graph):
        torch.testing.assert_close(getattr(st_graph, f.name), getattr(st_eager, f.name), atol=0, rtol=0)
