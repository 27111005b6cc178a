"""Device probe (session 2): training step time and peak memory of the four models at size `small`
(fwd+bwd, bf16 autocast, fp32 weights) at long contexts, to size bench/train.py's GPU defaults.
Run: python bench/notes/train_probe.py --out DIR"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from bench import registry

IMPLS = {"ttt_linear": "dual_compiled", "ttt_mlp": "dual_compiled", "transformer": "sdpa_flash", "mamba": "mamba_ssm"}


def _checkpoint_blocks(net: torch.nn.Module) -> None:
    from torch.utils.checkpoint import checkpoint

    for blk in net.layers:
        fwd = blk.forward
        blk.forward = lambda *a, _f=fwd, **k: checkpoint(_f, *a, use_reentrant=False, **k)


def probe(model: str, impl: str, B: int, T: int, ckpt: bool) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    net = registry.build(model, "small", impl, device="cuda", dtype=torch.float32).train()
    if ckpt:
        _checkpoint_blocks(net)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randint(0, 257, (B, T + 1), device="cuda")

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = net(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 2
    for _ in range(n):
        loss = step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    return {"s_per_step": dt, "tok_per_s": B * T / dt, "peak_gb": torch.cuda.max_memory_allocated() / 1e9, "loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="ttt_linear,ttt_mlp")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in a.models.split(","):
        for T, B, ck in ((32768, 1, False), (32768, 4, False), (32768, 16, True)):
            row = {"model": model, "impl": IMPLS[model], "T": T, "B": B, "ckpt": ck}
            try:
                row.update(probe(model, IMPLS[model], B, T, ck))
            except Exception as e:  # OOM or a missing backward: a row, not a crash
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(row, flush=True)
            rows.append(row)
    keys = sorted({k for r in rows for k in r})
    with open(a.out / "train_probe.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
