"""TTT-Linear, mini-batch dual form (PyTorch): the prefill path.

Per mini-batch (b tokens, positions p_i, weights W' and bias b' at its start, all gradients taken at W'):
    G = LN_L2_bwd(K W' + b', V - K)                                  (b, d)
    E[i, j] = token_eta[p_i] * eta_j  for j <= i
    Zbar = Q W' + b' - ((Q K^T + 1) * E) G                           (the "+ 1" is the bias path)
    end of mini-batch: [W'; b'] -= token_eta[b-1] * ([K, 1] * eta)^T G
Weights and biases are carried augmented ([W; b], inputs [x, 1]) so each of these is one matmul. A state that
starts mid-mini-batch (offset o > 0) adds -token_eta[p_i] * ([Q, 1] @ [W_acc; b_acc]) for the leading tokens;
a trailing partial mini-batch leaves its eta-weighted gradient sum in the returned state's *_acc.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttt.ops.common import (
    TTTLinearState,
    augment,
    causal_eta,
    check_args,
    compute_dtype,
    from_chunks,
    ln_fused_l2_bwd,
    ln_fwd,
    ln_params,
    to_chunks,
)


def _partial_chunk(
    Qa: torch.Tensor,
    Ka: torch.Tensor,
    tgt: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    start: int,
    Wa: torch.Tensor,
    acc: torch.Tensor | None,
    lw: torch.Tensor,
    lb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """n tokens at mini-batch positions start..start+n-1 with `acc` (None = zero) from earlier tokens of the same
    mini-batch. Returns (Zbar, Wa, acc); acc is None once the mini-batch closed."""
    n = Qa.shape[2]
    te = token_eta[start : start + n]
    G = ln_fused_l2_bwd(Ka @ Wa, tgt, lw, lb)
    Z = Qa @ Wa - ((Qa @ Ka.transpose(-1, -2)) * causal_eta(te, eta)) @ G
    new_acc = (eta.unsqueeze(-1) * Ka).transpose(-1, -2) @ G
    if acc is not None:
        Z = Z - te.unsqueeze(-1) * (Qa @ acc)
        new_acc = new_acc + acc
    if start + n == token_eta.shape[0]:
        return Z, Wa - token_eta[-1] * new_acc, None
    return Z, Wa, new_acc


def _full_chunks(
    Qa: torch.Tensor,
    Ka: torch.Tensor,
    tgt: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    Wa: torch.Tensor,
    lw: torch.Tensor,
    lb: torch.Tensor,
    step: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole mini-batches starting at position 0 with zero acc. Everything that does not depend on the weights is
    computed for all chunks at once; the sequential loop is two matmuls, the LN backward, and one more matmul."""
    b = token_eta.shape[0]
    Qc, Kc, tgt_c, eta_c = (to_chunks(x, b) for x in (Qa, Ka, tgt, eta))
    attn = (Qc @ Kc.transpose(-1, -2)) * causal_eta(token_eta, eta_c)  # (nc, B, H, b, b)
    QK = torch.cat([Qc, Kc], dim=-2)  # one matmul with W' serves both the queries and the gradient inputs
    upd = ((token_eta[-1] * eta_c).unsqueeze(-1) * Kc).transpose(-1, -2).contiguous()  # (nc, B, H, d+1, b)
    step = step or _chunk_step
    zs = []
    # unbind, not QK[c]: the backward of each indexing op writes a zero-filled gradient of the whole tensor, which
    # over every mini-batch is quadratic in the sequence length; unbind's backward stacks the gradients once.
    for qk, t, a, u in zip(QK.unbind(0), tgt_c.unbind(0), attn.unbind(0), upd.unbind(0)):
        z, Wa = step(Wa, qk, t, a, u, lw, lb)
        zs.append(z)
    return from_chunks(torch.stack(zs)), Wa


def _chunk_step(
    Wa: torch.Tensor,
    QK: torch.Tensor,
    tgt: torch.Tensor,
    attn: torch.Tensor,
    upd: torch.Tensor,
    lw: torch.Tensor,
    lb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One whole mini-batch of the sequential chain: (Zbar, weights after it). QK holds [Q; K] of the chunk."""
    b = attn.shape[-1]
    Z = QK @ Wa
    G = ln_fused_l2_bwd(Z[..., b:, :], tgt, lw, lb)
    return Z[..., :b, :] - attn @ G, Wa - upd @ G


_COMPILED_STEP: list[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = []


def compiled_chunk_step() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """`_chunk_step` under torch.compile, built once per process. Compiling one mini-batch (not the whole op, whose
    loop would be unrolled over every mini-batch) cuts the ~20 eager ops and their autograd nodes per mini-batch to
    a few fused kernels: training is bound by that per-mini-batch overhead, not by FLOPs."""
    if not _COMPILED_STEP:
        _COMPILED_STEP.append(torch.compile(_chunk_step, fullgraph=True, dynamic=False))
    return _COMPILED_STEP[0]


def ttt_linear_dual(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    eta: torch.Tensor,
    token_eta: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    state: TTTLinearState,
    *,
    mini_batch_size: int = 16,
    compiled: bool = False,
) -> tuple[torch.Tensor, TTTLinearState]:
    """Functional: returns (out, new_state); `state` is not modified. Differentiable (no in-place ops).
    `compiled`: run each whole mini-batch through `compiled_chunk_step` (same math; the training path)."""
    check_args(q, token_eta, mini_batch_size)
    b = mini_batch_size
    T, d = q.shape[2], q.shape[3]
    sd, cd = state.W.dtype, compute_dtype(q, state.W)
    o = int(state.offset)  # the one host read: chunk boundaries are shapes, so they must be Python ints

    Q, K = q.to(cd), k.to(cd)
    tgt = v.to(cd) - K
    e, te = eta.to(cd), token_eta.to(cd)
    lw, lb = ln_params(ln_w, ln_b, cd)
    Qa, Ka = augment(Q), augment(K)
    Wa = torch.cat([state.W, state.b.unsqueeze(-2)], dim=-2).to(cd)
    acc: torch.Tensor | None = None
    if o:
        acc = torch.cat([state.W_acc, state.b_acc.unsqueeze(-2)], dim=-2).to(cd)

    n0 = min(T, b - o) if o else 0  # leading tokens that finish the state's partial mini-batch
    nc = (T - n0) // b
    r = T - n0 - nc * b
    zs = []
    if n0:
        z, Wa, acc = _partial_chunk(Qa[:, :, :n0], Ka[:, :, :n0], tgt[:, :, :n0], e[:, :, :n0], te, o, Wa, acc, lw, lb)
        zs.append(z)
    if nc:
        s = slice(n0, n0 + nc * b)
        step = compiled_chunk_step() if compiled else _chunk_step
        z, Wa = _full_chunks(Qa[:, :, s], Ka[:, :, s], tgt[:, :, s], e[:, :, s], te, Wa, lw, lb, step)
        zs.append(z)
    if r:
        s = slice(T - r, T)
        z, Wa, acc = _partial_chunk(Qa[:, :, s], Ka[:, :, s], tgt[:, :, s], e[:, :, s], te, 0, Wa, acc, lw, lb)
        zs.append(z)

    if zs:
        out = (Q + ln_fwd(torch.cat(zs, dim=2), lw, lb)).to(q.dtype)
    else:
        out = q.new_empty(q.shape)
    if acc is None:
        acc = torch.zeros_like(Wa)
    new_state = TTTLinearState(
        W=Wa[..., :d, :].to(sd),
        b=Wa[..., d, :].to(sd),
        W_acc=acc[..., :d, :].to(sd),
        b_acc=acc[..., d, :].to(sd),
        offset=torch.full((), (o + T) % b, dtype=torch.int64, device=state.offset.device),
    )
    return out, new_state


def ttt_linear_dual_compiled(*args, **kwargs) -> tuple[torch.Tensor, TTTLinearState]:
    """`ttt_linear_dual` with each whole mini-batch compiled (impl 'dual_compiled')."""
    return ttt_linear_dual(*args, compiled=True, **kwargs)
