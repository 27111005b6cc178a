"""Shared test machinery for the TTT ops: a spec per op (linear / MLP), random inputs, and an independent reference
of the definition built on torch.autograd (no code shared with ttt.ops beyond the public entry points)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

import ttt.ops.ttt_linear as lin
import ttt.ops.ttt_mlp as mlp


def _f_linear(x: torch.Tensor, p: list[torch.Tensor]) -> torch.Tensor:
    W, b = p
    return x @ W + b.unsqueeze(-2)


def _f_mlp(x: torch.Tensor, p: list[torch.Tensor]) -> torch.Tensor:
    W1, b1, W2, b2 = p
    return F.gelu(x @ W1 + b1.unsqueeze(-2), approximate="tanh") @ W2 + b2.unsqueeze(-2)


def _params_linear(g: torch.Generator, H: int, d: int, dt: torch.dtype) -> tuple[torch.Tensor, ...]:
    return (torch.randn(H, d, d, generator=g, dtype=dt) / d**0.5, 0.3 * torch.randn(H, d, generator=g, dtype=dt))


def _params_mlp(g: torch.Generator, H: int, d: int, dt: torch.dtype) -> tuple[torch.Tensor, ...]:
    return (
        torch.randn(H, d, 4 * d, generator=g, dtype=dt) / d**0.5,
        0.3 * torch.randn(H, 4 * d, generator=g, dtype=dt),
        torch.randn(H, 4 * d, d, generator=g, dtype=dt) / (4 * d) ** 0.5,
        0.3 * torch.randn(H, d, generator=g, dtype=dt),
    )


@dataclass
class OpSpec:
    name: str
    op: Callable[..., Any]
    step: Callable[..., Any]
    init_state: Callable[..., Any]
    make_params: Callable[..., tuple[torch.Tensor, ...]]
    f_res: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
    weights: tuple[str, ...]  # state field names; the accumulators are these + "_acc"


LINEAR = OpSpec("linear", lin.ttt_linear, lin.ttt_linear_step, lin.init_state, _params_linear, _f_linear, ("W", "b"))
MLP = OpSpec("mlp", mlp.ttt_mlp, mlp.ttt_mlp_step, mlp.init_state, _params_mlp, _f_mlp, ("W1", "b1", "W2", "b2"))


@dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    eta: torch.Tensor
    token_eta: torch.Tensor
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    state: Any
    b: int

    def seq(self, lo: int, hi: int) -> tuple[torch.Tensor, ...]:
        """q, k, v, eta of tokens lo..hi-1, then the per-sequence constants."""
        return (
            self.q[:, :, lo:hi],
            self.k[:, :, lo:hi],
            self.v[:, :, lo:hi],
            self.eta[:, :, lo:hi],
            self.token_eta,
            self.ln_w,
            self.ln_b,
        )

    @property
    def T(self) -> int:
        return self.q.shape[2]


def make_case(
    spec: OpSpec, T: int, b: int, *, seed: int, B: int = 2, H: int = 2, d: int = 8, dtype=torch.float64
) -> Case:
    """Random inputs with inner learning rates large enough that the inner updates visibly change the outputs
    (random eta and token_eta, not 1/i, so position/eta mix-ups show)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64

    def rn(*s: int) -> torch.Tensor:
        return torch.randn(*s, generator=g, dtype=dt)

    q, k, v = rn(B, H, T, d), rn(B, H, T, d), rn(B, H, T, d)
    eta = 0.1 + 0.6 * torch.rand(B, H, T, generator=g, dtype=dt)
    token_eta = 0.3 + torch.rand(b, generator=g, dtype=dt)
    ln_w, ln_b = 1.0 + 0.2 * rn(H, d), 0.2 * rn(H, d)
    params = spec.make_params(g, H, d, dt)
    state = spec.init_state(*params, B)
    cast = lambda x: x.to(dtype)  # noqa: E731
    return Case(cast(q), cast(k), cast(v), cast(eta), cast(token_eta), cast(ln_w), cast(ln_b), state, b)


def ln_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-head LayerNorm with torch's own kernel; w, b (H, d) against x (B, H, T, d)."""
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * w.unsqueeze(-2) + b.unsqueeze(-2)


def token_grads(spec: OpSpec, params: list[torch.Tensor], k, v, ln_w, ln_b) -> list[torch.Tensor]:
    """autograd of 0.5 * ||LN(f_res(k; params)) - (v - k)||^2 w.r.t. params, for one token per (B, H).
    Each (B, H) owns its params, so summing the losses over (B, H) keeps the gradients separate."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    loss = 0.5 * ((ln_ref(spec.f_res(k, ps), ln_w, ln_b) - (v - k)) ** 2).sum()
    return list(torch.autograd.grad(loss, ps))


def reference(spec: OpSpec, c: Case) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The definition, from the case's initial state (offset 0): returns (out, weights W', accumulators)."""
    Wp = [getattr(c.state, n).detach().clone() for n in spec.weights]
    acc = [torch.zeros_like(p) for p in Wp]
    outs = []
    for t in range(c.T):
        pos = t % c.b
        sl = slice(t, t + 1)
        grads = token_grads(spec, Wp, c.k[:, :, sl], c.v[:, :, sl], c.ln_w, c.ln_b)
        e = c.eta[:, :, t]
        acc = [a + e.reshape(*e.shape, *([1] * (a.dim() - 2))) * gr for a, gr in zip(acc, grads)]
        Wt = [p - c.token_eta[pos] * a for p, a in zip(Wp, acc)]
        outs.append(c.q[:, :, sl] + ln_ref(spec.f_res(c.q[:, :, sl], Wt), c.ln_w, c.ln_b))
        if pos == c.b - 1:
            Wp, acc = Wt, [torch.zeros_like(a) for a in acc]
    return torch.cat(outs, dim=2), Wp, acc


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def assert_states_close(s1: Any, s2: Any, tol: float) -> None:
    for f in fields(s1):
        x, y = getattr(s1, f.name), getattr(s2, f.name)
        if f.name == "offset":
            assert int(x) == int(y), f"offset {int(x)} != {int(y)}"
        elif y.abs().max() == 0:
            assert x.abs().max().item() <= tol, f"{f.name} should be zero"
        else:
            assert rel_err(x, y) <= tol, f"{f.name}: rel err {rel_err(x, y):.3e}"


# ---------------------------------------------------------------------------------------------------------------
# Tests shared by test_ttt_linear.py and test_ttt_mlp.py. Each of those modules imports them and provides a `spec`
# fixture; pytest collects them there (this file is not a test module itself).
# ---------------------------------------------------------------------------------------------------------------
import pytest  # noqa: E402

from ttt.errors import UserError  # noqa: E402

TIGHT = 1e-10  # float64 dual vs naive vs autograd reference


def _run(spec: OpSpec, c: Case, lo: int, hi: int, state: Any, impl: str) -> tuple[torch.Tensor, Any]:
    return spec.op(*c.seq(lo, hi), state, mini_batch_size=c.b, impl=impl)


def test_step_gradient_is_autograd(spec: OpSpec) -> None:
    """Inside one mini-batch, each step adds eta_t * grad_t to the accumulators, with grad_t taken at W'."""
    c = make_case(spec, T=6, b=8, seed=1)
    st = c.state.clone()
    Wp = [getattr(st, n).clone() for n in spec.weights]
    for t in range(c.T):
        before = [getattr(st, n + "_acc").clone() for n in spec.weights]
        spec.step(*c.seq(t, t + 1), st, mini_batch_size=c.b)
        grads = token_grads(spec, Wp, c.k[:, :, t : t + 1], c.v[:, :, t : t + 1], c.ln_w, c.ln_b)
        for n, a0, gr in zip(spec.weights, before, grads):
            e = c.eta[:, :, t].reshape(*c.eta.shape[:2], *([1] * (gr.dim() - 2)))
            assert rel_err((getattr(st, n + "_acc") - a0) / e, gr) < TIGHT, n
        for n, p in zip(spec.weights, Wp):  # W' stays put until the mini-batch closes
            assert torch.equal(getattr(st, n), p)
    assert int(st.offset) == c.T


@pytest.mark.parametrize("b,T", [(1, 5), (4, 12), (4, 11), (16, 3), (16, 37)])
def test_naive_is_the_definition(spec: OpSpec, b: int, T: int) -> None:
    c = make_case(spec, T=T, b=b, seed=10 + b + T)
    out, st = _run(spec, c, 0, T, c.state, "naive")
    ref_out, ref_W, ref_acc = reference(spec, c)
    assert rel_err(out, ref_out) < TIGHT
    for n, w, a in zip(spec.weights, ref_W, ref_acc):
        assert rel_err(getattr(st, n), w) < TIGHT, n
        assert (getattr(st, n + "_acc") - a).abs().max() < TIGHT, n + "_acc"
    assert int(st.offset) == T % b


def test_minibatch_one_is_online_gd(spec: OpSpec) -> None:
    """b = 1: plain online gradient descent, W_t = W_{t-1} - token_eta[0] * eta_t * grad(W_{t-1}), output at W_t."""
    c = make_case(spec, T=9, b=1, seed=3)
    W = [getattr(c.state, n).clone() for n in spec.weights]
    outs = []
    for t in range(c.T):
        sl = slice(t, t + 1)
        grads = token_grads(spec, W, c.k[:, :, sl], c.v[:, :, sl], c.ln_w, c.ln_b)
        lr = c.token_eta[0] * c.eta[:, :, t]
        W = [w - lr.reshape(*lr.shape, *([1] * (w.dim() - 2))) * gr for w, gr in zip(W, grads)]
        outs.append(c.q[:, :, sl] + ln_ref(spec.f_res(c.q[:, :, sl], W), c.ln_w, c.ln_b))
    for impl in ("naive", "dual"):
        out, st = _run(spec, c, 0, c.T, c.state, impl)
        assert rel_err(out, torch.cat(outs, dim=2)) < TIGHT, impl
        for n, w in zip(spec.weights, W):
            assert rel_err(getattr(st, n), w) < TIGHT, (impl, n)


def test_updates_matter(spec: OpSpec) -> None:
    """Guards the tolerance tests against vacuity: the inner updates move the outputs by far more than any tolerance,
    and a wrong position factor (token_eta reversed) is caught."""
    c = make_case(spec, T=16, b=8, seed=4)
    out, _ = _run(spec, c, 0, 16, c.state, "dual")
    frozen, _ = spec.op(*c.seq(0, 16)[:3], c.eta * 0, *c.seq(0, 16)[4:], c.state, mini_batch_size=8, impl="dual")
    assert rel_err(out, frozen) > 1e-2
    rev, _ = spec.op(*c.seq(0, 16)[:4], c.token_eta.flip(0), c.ln_w, c.ln_b, c.state, mini_batch_size=8, impl="dual")
    assert rel_err(out, rev) > 1e-4


@pytest.mark.parametrize("b", [1, 4, 16])
@pytest.mark.parametrize("kind", ["multiple", "ragged", "short"])
@pytest.mark.parametrize("start", ["fresh", "mid"])
def test_dual_matches_naive(spec: OpSpec, b: int, kind: str, start: str) -> None:
    T = {"multiple": 2 * b if b > 1 else 7, "ragged": 2 * b + 3, "short": max(b - 1, 1)}[kind]
    pre = b // 2 + 1 if start == "mid" else 0  # a prefix that leaves the state mid-mini-batch (when b > 2)
    c = make_case(spec, T=pre + T, b=b, seed=100 * b + T + pre)
    _, st0 = _run(spec, c, 0, pre, c.state, "naive")
    assert int(st0.offset) == pre % b
    out_n, st_n = _run(spec, c, pre, pre + T, st0, "naive")
    out_d, st_d = _run(spec, c, pre, pre + T, st0, "dual")
    assert out_d.shape == out_n.shape == c.q[:, :, pre:].shape
    assert rel_err(out_d, out_n) < TIGHT
    assert_states_close(st_d, st_n, TIGHT)


@pytest.mark.parametrize("impl", ["naive", "dual"])
def test_chaining_random_splits(spec: OpSpec, impl: str) -> None:
    b, T = 4, 29
    c = make_case(spec, T=T, b=b, seed=7)
    whole, st_whole = _run(spec, c, 0, T, c.state, impl)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        cuts = sorted(set(torch.randint(1, T, (3,), generator=g).tolist()))
        st, outs, lo = c.state, [], 0
        for hi in [*cuts, T]:
            o, st = _run(spec, c, lo, hi, st, impl)
            outs.append(o)
            lo = hi
        assert rel_err(torch.cat(outs, dim=2), whole) < TIGHT, cuts
        assert_states_close(st, st_whole, TIGHT)


@pytest.mark.parametrize("prefill", [0, 5, 8])
def test_step_after_dual_prefill(spec: OpSpec, prefill: int) -> None:
    b, T = 4, 15
    c = make_case(spec, T=T, b=b, seed=11 + prefill)
    whole, st_whole = _run(spec, c, 0, T, c.state, "dual")
    out0, st = _run(spec, c, 0, prefill, c.state, "dual")
    outs = [out0]
    for t in range(prefill, T):
        o, st2 = spec.step(*c.seq(t, t + 1), st, mini_batch_size=b)
        assert st2 is st  # in place
        outs.append(o)
    assert rel_err(torch.cat(outs, dim=2), whole) < TIGHT
    assert_states_close(st, st_whole, TIGHT)


@pytest.mark.parametrize("impl", ["naive", "dual"])
def test_input_state_untouched(spec: OpSpec, impl: str) -> None:
    c = make_case(spec, T=6, b=4, seed=5)
    before = c.state.clone()
    _run(spec, c, 0, 6, c.state, impl)
    assert_states_close(c.state, before, 0.0)


def test_float32_close_to_float64(spec: OpSpec) -> None:
    c64 = make_case(spec, T=37, b=16, seed=21)
    c32 = make_case(spec, T=37, b=16, seed=21, dtype=torch.float32)
    c32.state = spec.init_state(*[getattr(c64.state, n)[0].float() for n in spec.weights], 2)
    ref, _ = _run(spec, c64, 0, 37, c64.state, "naive")
    for impl in ("naive", "dual"):
        out, st = _run(spec, c32, 0, 37, c32.state, impl)
        assert out.dtype == torch.float32 and getattr(st, spec.weights[0]).dtype == torch.float32
        assert rel_err(out, ref) < 1e-4, impl


def test_bf16_inputs(spec: OpSpec) -> None:
    c = make_case(spec, T=37, b=16, seed=22, dtype=torch.bfloat16)
    c.state = spec.init_state(*[getattr(c.state, n)[0].float() for n in spec.weights], 2)
    c64 = Case(*[x.double() for x in c.seq(0, c.T)], state=c.state, b=c.b)  # same (bf16-rounded) values
    ref, _ = _run(spec, c64, 0, c.T, c.state, "naive")
    for impl in ("naive", "dual"):
        out, st = _run(spec, c, 0, c.T, c.state, impl)
        assert out.dtype == torch.bfloat16 and out.shape == c.q.shape
        assert getattr(st, spec.weights[0]).dtype == torch.float32
        assert rel_err(out, ref) < 1e-2, impl
    o, _ = spec.step(*c.seq(0, 1), c.state.clone(), mini_batch_size=c.b)
    assert o.dtype == torch.bfloat16


def test_unknown_impl(spec: OpSpec) -> None:
    c = make_case(spec, T=4, b=4, seed=0)
    with pytest.raises(UserError) as ei:
        _run(spec, c, 0, 4, c.state, "cuda-magic")
    msg = str(ei.value)
    assert "\n" not in msg and "cuda-magic" in msg and "naive" in msg and "dual" in msg


def test_step_has_no_host_reads(spec: OpSpec) -> None:
    """On the meta device any .item()/int()/bool() of a tensor raises, so this proves the step never reads the
    offset (or any data) on the host: the property CUDA-graph capture needs."""
    c = make_case(spec, T=1, b=4, seed=0)
    meta = lambda x: x.to("meta")  # noqa: E731
    st = type(c.state)(**{f.name: meta(getattr(c.state, f.name)) for f in fields(c.state)})
    out, st = spec.step(*[meta(x) for x in c.seq(0, 1)], st, mini_batch_size=4)
    assert out.shape == c.q.shape and out.device.type == "meta"


def test_dual_gradcheck(spec: OpSpec) -> None:
    """The dual form is what training differentiates: check its autograd against finite differences, through a
    mid-mini-batch start, a full mini-batch and a ragged tail, including the learned initial weights."""
    c = make_case(spec, T=9, b=4, seed=9, B=1, H=1, d=4)
    _, st0 = _run(spec, c, 0, 2, c.state, "naive")
    W0 = getattr(st0, spec.weights[0]).clone().requires_grad_(True)
    q, k, v, eta = (x.clone().requires_grad_(True) for x in c.seq(2, 9)[:4])

    def f(q, k, v, eta, W0):
        st = st0.clone()
        setattr(st, spec.weights[0], W0)
        out, new = spec.op(q, k, v, eta, c.token_eta, c.ln_w, c.ln_b, st, mini_batch_size=4, impl="dual")
        return out, getattr(new, spec.weights[0]), getattr(new, spec.weights[0] + "_acc")

    assert torch.autograd.gradcheck(f, (q, k, v, eta, W0), eps=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_cuda_graph(spec: OpSpec) -> None:
    c = make_case(spec, T=6, b=4, seed=2, dtype=torch.float32)
    dev = torch.device("cuda")
    cu = lambda x: x.to(dev)  # noqa: E731
    st0 = spec.init_state(*[getattr(c.state, n)[0].float().to(dev) for n in spec.weights], 2)
    ins = [cu(x).clone() for x in c.seq(0, 1)]
    eager_st = st0.clone()
    eager = [spec.step(*[cu(x) for x in c.seq(t, t + 1)], eager_st, mini_batch_size=4)[0] for t in range(6)]
    st = st0.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside capture, then restore the state
        spec.step(*ins, st, mini_batch_size=4)
    torch.cuda.current_stream().wait_stream(side)
    st.copy_(st0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, _ = spec.step(*ins, st, mini_batch_size=4)
    st.copy_(st0)
    for t in range(6):
        for dst, src in zip(ins[:4], c.seq(t, t + 1)[:4]):
            dst.copy_(src)
        graph.replay()
        assert rel_err(out, eager[t]) < 1e-5, t
    assert_states_close(st, eager_st, 1e-5)


def test_dual_compiled_matches_dual(spec: OpSpec) -> None:
    """impl 'dual_compiled' (each mini-batch under torch.compile: the training path) computes the dual form's
    outputs, final state and gradients, on a ragged tail and a mid-mini-batch start."""
    c = make_case(spec, T=23, b=4, seed=11, B=2, H=2, d=8, dtype=torch.float32)
    _, st0 = _run(spec, c, 0, 2, c.state, "naive")
    g = torch.Generator().manual_seed(12)
    w_out = torch.randn(c.q[:, :, 2:].shape, generator=g)
    results = {}
    for impl in ("dual", "dual_compiled"):
        ins = [x.clone().requires_grad_(True) for x in c.seq(2, c.T)[:4]]
        out, new = spec.op(*ins, c.token_eta, c.ln_w, c.ln_b, st0.clone(), mini_batch_size=4, impl=impl)
        (out * w_out).sum().backward()
        results[impl] = (out.detach(), new, [x.grad for x in ins])
    (o1, s1, g1), (o2, s2, g2) = results["dual"], results["dual_compiled"]
    assert rel_err(o2, o1) < 1e-5
    assert_states_close(s2, s1, 1e-5)
    for a, b in zip(g2, g1):
        assert rel_err(a, b) < 1e-4
