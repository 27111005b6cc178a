"""Tensors derived from parameters (a concatenated GEMM weight, token_eta, a RoPE table), kept until a source
parameter changes.

A fused inference path wants one GEMM over [W_qk; W_v; W_g; theta_lr] but the checkpoint (and `ttt.convert`)
names each weight, so the parameters stay as they are and the concatenation is a derived copy. It is rebuilt
whenever a source is updated in place (optimizer step, `load_state_dict`: the version counter moves), replaced
(`module.to`, new storage), or moved. A CUDA graph captured over the derived copy does not see later weight
updates: capture again after changing weights (the decode runner is rebuilt per generate/measurement anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import torch


def _fingerprint(t: torch.Tensor) -> Hashable:
    return (id(t), t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


class DerivedParams:
    """name -> (fingerprint of the sources, value). Lives as a plain attribute on a module: not in state_dict."""

    def __init__(self) -> None:
        self._store: dict[str, tuple[Hashable, torch.Tensor]] = {}
        # Whether the latest `get` built its value: a kernel launched next must not read that value before its PDL
        # wait (`ttt.fused.skinny`'s static_weights), since the building kernel is then its predecessor.
        self.rebuilt = False

    def get(
        self, name: str, sources: Sequence[torch.Tensor], build: Callable[[], torch.Tensor], extra: Hashable = ()
    ) -> torch.Tensor:
        """The value of `build()` (run under no_grad) for the current state of `sources`; `extra` adds to the key
        what the sources do not fix (e.g. the device of a table built from config values only)."""
        self.rebuilt = True
        try:
            key = (tuple(_fingerprint(t) for t in sources), extra)
        except RuntimeError:  # inference tensors have no version counter: nothing to key on, so no caching
            with torch.no_grad():
                return build()
        hit = self._store.get(name)
        if hit is not None and hit[0] == key:
            self.rebuilt = False
            return hit[1]
        with torch.no_grad():
            value = build()
        self._store[name] = (key, value)
        return value

    def clear(self) -> None:
        self._store.clear()
