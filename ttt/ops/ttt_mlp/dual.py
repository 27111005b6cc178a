"""TTT-MLP, mini-batch dual form (PyTorch): the prefill path.

Per mini-batch (positions p_i, primes = weights at its start, E[i, j] = token_eta[p_i] * eta_j for j <= i):
    Z1 = K W1' + b1',  X2 = gelu(Z1),  G2 = LN_L2_bwd(X2 W2' + b2', V - K),  G1 = (G2 W2'^T) * gelu'(Z1)
    Z1bar = Q W1' + b1' - ((Q K^T + 1) * E) G1
    X2bar = gelu(Z1bar)
    Z2bar = X2bar W2' + b2' - ((X2bar X2^T + 1) * E) G2
    end of mini-batch: [W1'; b1'] -= token_eta[b-1] * ([K, 1] * eta)^T G1, [W2'; b2'] likewise with [X2, 1], G2.
Weights/biases are carried augmented ([W; b], inputs [x, 1]). Only Q K^T and E can be computed before the
sequential loop; X2bar X2^T depends on the weights. A state starting mid-mini-batch adds
-token_eta[p_i] * ([Q, 1] @ acc1) to Z1bar and -token_eta[p_i] * ([X2bar, 1] @ acc2) to Z2bar.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttt.ops.common import (
    TTTMLPState,
    augment,
    causal_eta,
    check_args,
    compute_dtype,
    from_chunks,
    gelu_tanh,
    gelu_tanh_bwd,
    ln_fused_l2_bwd,
    ln_fwd,
    ln_params,
    to_chunks,
)

_Accs = tuple[torch.Tensor, torch.Tensor] | None


def _grads(
    Z1k: torch.Tensor, W2a: torch.Tensor, tgt: torch.Tensor, lw: torch.Tensor, lb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the first-layer pre-activations of the keys: ([X2, 1], G1, G2), all at the mini-batch-start weights."""
    X2a = augment(gelu_tanh(Z1k))
    G2 = ln_fused_l2_bwd(X2a @ W2a, tgt, lw, lb)
    G1 = (G2 @ W2a[..., :-1, :].transpose(-1, -2)) * gelu_tanh_bwd(Z1k)
    return X2a, G1, G2


def _partial_chunk(
    Qa: torch.Tensor,
    Ka: torch.Tensor,
    tgt: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    start: int,
    W1a: torch.Tensor,
    W2a: torch.Tensor,
    accs: _Accs,
    lw: torch.Tensor,
    lb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, _Accs]:
    """n tokens at positions start..start+n-1, `accs` (None = zero) from earlier tokens of the same mini-batch.
    Returns (Z2bar, W1a, W2a, accs); accs is None once the mini-batch closed."""
    n = Qa.shape[2]
    te = token_eta[start : start + n]
    E = causal_eta(te, eta)
    X2a, G1, G2 = _grads(Ka @ W1a, W2a, tgt, lw, lb)
    Z1 = Qa @ W1a - ((Qa @ Ka.transpose(-1, -2)) * E) @ G1
    if accs is not None:
        Z1 = Z1 - te.unsqueeze(-1) * (Qa @ accs[0])
    X2qa = augment(gelu_tanh(Z1))
    Z2 = X2qa @ W2a - ((X2qa @ X2a.transpose(-1, -2)) * E) @ G2
    if accs is not None:
        Z2 = Z2 - te.unsqueeze(-1) * (X2qa @ accs[1])
    e = eta.unsqueeze(-1)
    acc1 = (e * Ka).transpose(-1, -2) @ G1
    acc2 = (e * X2a).transpose(-1, -2) @ G2
    if accs is not None:
        acc1, acc2 = acc1 + accs[0], acc2 + accs[1]
    if start + n == token_eta.shape[0]:
        return Z2, W1a - token_eta[-1] * acc1, W2a - token_eta[-1] * acc2, None
    return Z2, W1a, W2a, (acc1, acc2)


def _full_chunks(
    Qa: torch.Tensor,
    Ka: torch.Tensor,
    tgt: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    W1a: torch.Tensor,
    W2a: torch.Tensor,
    lw: torch.Tensor,
    lb: torch.Tensor,
    step: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole mini-batches from position 0 with zero accs; weight-independent parts batched before the loop."""
    b = token_eta.shape[0]
    Qc, Kc, tgt_c, eta_c = (to_chunks(x, b) for x in (Qa, Ka, tgt, eta))
    E = causal_eta(token_eta, eta_c)  # (nc, B, H, b, b)
    attn1 = (Qc @ Kc.transpose(-1, -2)) * E
    QK = torch.cat([Qc, Kc], dim=-2)  # one matmul with W1' for the queries and the gradient inputs
    eta_last = (token_eta[-1] * eta_c).unsqueeze(-1)  # (nc, B, H, b, 1)
    upd1 = (eta_last * Kc).transpose(-1, -2).contiguous()
    step = step or _chunk_step
    zs = []
    # unbind, not QK[c]: indexing's backward writes a zero-filled gradient of the whole tensor per mini-batch.
    chunks = (x.unbind(0) for x in (QK, tgt_c, attn1, E, upd1, eta_last))
    for qk, t, a, e_, u, el in zip(*chunks):
        z, W1a, W2a = step(W1a, W2a, qk, t, a, e_, u, el, lw, lb)
        zs.append(z)
    return from_chunks(torch.stack(zs)), W1a, W2a


def _chunk_step(
    W1a: torch.Tensor,
    W2a: torch.Tensor,
    QK: torch.Tensor,
    tgt: torch.Tensor,
    attn1: torch.Tensor,
    E: torch.Tensor,
    upd1: torch.Tensor,
    eta_last: torch.Tensor,
    lw: torch.Tensor,
    lb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One whole mini-batch of the sequential chain: (Z2bar, W1a, W2a after it). QK holds [Q; K] of the chunk."""
    b = E.shape[-1]
    Z1 = QK @ W1a
    X2a, G1, G2 = _grads(Z1[..., b:, :], W2a, tgt, lw, lb)
    X2qa = augment(gelu_tanh(Z1[..., :b, :] - attn1 @ G1))
    z = X2qa @ W2a - ((X2qa @ X2a.transpose(-1, -2)) * E) @ G2
    return z, W1a - upd1 @ G1, W2a - (eta_last * X2a).transpose(-1, -2) @ G2


_COMPILED_STEP: list[Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []


def compiled_chunk_step() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`_chunk_step` under torch.compile, built once per process: one mini-batch, not the whole op (whose loop
    would be unrolled). Training is bound by the per-mini-batch eager ops and their autograd nodes."""
    if not _COMPILED_STEP:
        _COMPILED_STEP.append(torch.compile(_chunk_step, fullgraph=True, dynamic=False))
    return _COMPILED_STEP[0]


def ttt_mlp_dual(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTMLPState,
    *,
    mini_batch_size: int = 16,
    compiled: bool = False,
) -> tuple[torch.Tensor, TTTMLPState]:
    """Functional: returns (out, new_state); `state` is not modified. Differentiable (no in-place ops).
    `compiled`: run each whole mini-batch through `compiled_chunk_step` (same math; the training path)."""
    check_args(q, token_eta, mini_batch_size)
    b = mini_batch_size
    T = q.shape[2]
    d, dh = state.W2.shape[-1], state.W1.shape[-1]
    sd, cd = state.W1.dtype, compute_dtype(q, state.W1)
    o = int(state.offset)  # the one host read: chunk boundaries are shapes, so they must be Python ints

    Q, K = q.to(cd), k.to(cd)
    tgt = v.to(cd) - K
    e, te = eta.to(cd), token_eta.to(cd)
    lw, lb = ln_params(ln_w, ln_b, cd)
    Qa, Ka = augment(Q), augment(K)
    W1a = torch.cat([state.W1, state.b1.unsqueeze(-2)], dim=-2).to(cd)
    W2a = torch.cat([state.W2, state.b2.unsqueeze(-2)], dim=-2).to(cd)
    accs: _Accs = None
    if o:
        accs = (
            torch.cat([state.W1_acc, state.b1_acc.unsqueeze(-2)], dim=-2).to(cd),
            torch.cat([state.W2_acc, state.b2_acc.unsqueeze(-2)], dim=-2).to(cd),
        )

    n0 = min(T, b - o) if o else 0  # leading tokens that finish the state's partial mini-batch
    nc = (T - n0) // b
    r = T - n0 - nc * b
    zs = []
    if n0:
        s = slice(0, n0)
        z, W1a, W2a, accs = _partial_chunk(
            Qa[:, :, s], Ka[:, :, s], tgt[:, :, s], e[:, :, s], te, o, W1a, W2a, accs, lw, lb
        )
        zs.append(z)
    if nc:
        s = slice(n0, n0 + nc * b)
        step = compiled_chunk_step() if compiled else _chunk_step
        z, W1a, W2a = _full_chunks(Qa[:, :, s], Ka[:, :, s], tgt[:, :, s], e[:, :, s], te, W1a, W2a, lw, lb, step)
        zs.append(z)
    if r:
        s = slice(T - r, T)
        z, W1a, W2a, accs = _partial_chunk(
            Qa[:, :, s], Ka[:, :, s], tgt[:, :, s], e[:, :, s], te, 0, W1a, W2a, accs, lw, lb
        )
        zs.append(z)

    if zs:
        out = (Q + ln_fwd(torch.cat(zs, dim=2), lw, lb)).to(q.dtype)
    else:
        out = q.new_empty(q.shape)
    acc1, acc2 = accs if accs is not None else (torch.zeros_like(W1a), torch.zeros_like(W2a))
    new_state = TTTMLPState(
        W1=W1a[..., :d, :].to(sd),
        b1=W1a[..., d, :].to(sd),
        W2=W2a[..., :dh, :].to(sd),
        b2=W2a[..., dh, :].to(sd),
        W1_acc=acc1[..., :d, :].to(sd),
        b1_acc=acc1[..., d, :].to(sd),
        W2_acc=acc2[..., :dh, :].to(sd),
        b2_acc=acc2[..., dh, :].to(sd),
        offset=torch.full((), (o + T) % b, dtype=torch.int64, device=state.offset.device),
    )
    return out, new_state


def ttt_mlp_dual_compiled(*args, **kwargs) -> tuple[torch.Tensor, TTTMLPState]:
    """`ttt_mlp_dual` with each whole mini-batch compiled (impl 'dual_compiled')."""
    return ttt_mlp_dual(*args, compiled=True, **kwargs)
