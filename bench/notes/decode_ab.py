"""Decode A/B on the 1.3B models (B = 16, bf16, CUDA graph): variants are environment settings read when a step is
captured. They alternate (A B C A B C ...) so that drift in the shared machine falls on all; each one's logits are
compared with the first variant's from the same cache. Then a kernel profile of each variant's step (under PDL a
kernel's time includes its wait on the previous one: give TTT_PDL=0 variants for per-kernel times).

    python3 bench/notes/decode_ab.py OUTDIR MODEL[,MODEL] '[{"ENV": "1"}, {"ENV": "0"}]'

Used by the session scripts (session11_decode_ab.py, session12_run1_gpu.sh); rows go to OUTDIR/decode_ab.csv.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ROUNDS = 3


def time_step(step, tok, reps: int = 5, inner: int = 16) -> list[float]:
    """ms a step, `reps` timings of `inner` back-to-back replays each."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        s.record()
        for _ in range(inner):
            step(tok)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / inner)
    return ts


def profile(step, tok, path: Path, calls: int = 8) -> str:
    """The CUDA kernel table of `calls` steps, written to `path`."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(calls):
            step(tok)
        torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60)
    path.write_text(table)
    return table


def screen(name: str, variants: list[dict], out: Path, rows: list[dict]) -> None:
    from bench.registry import build
    from ttt.generation import GraphedDecode, restore_cache, snapshot_cache
    from ttt.ops.common import KERNEL_LAUNCHES

    model = build(name, "1.3b", impl="triton", device="cuda", dtype=torch.bfloat16)
    B, P = 16, 512
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (B, P + 1), generator=g).cuda()
    cache = model.allocate_cache(B, P + 4096)
    tok = x[:, P:]
    with torch.inference_mode():
        model.prefill(x[:, :P], cache)
        snap = snapshot_cache(cache)
        steps, ref = [], None
        for env in variants:
            os.environ.update(env)
            restore_cache(cache, snap)
            KERNEL_LAUNCHES.clear()
            logits = model.decode_step(tok, cache).float()
            launches = dict(KERNEL_LAUNCHES)
            ref = logits if ref is None else ref
            err = float((logits - ref).norm() / ref.norm())
            restore_cache(cache, snap)
            step = GraphedDecode(model, cache, B)  # captured under this variant's environment
            for _ in range(5):
                step(tok)
            torch.cuda.synchronize()
            steps.append((env, step, err, launches))
        for r in range(ROUNDS):
            for i, (env, step, err, launches) in enumerate(steps):
                ts = time_step(step, tok)
                t = sorted(ts)[len(ts) // 2]
                kernels = ";".join(f"{k}={v}" for k, v in sorted(launches.items()))
                rows.append(dict(model=name, variant=i, env=json.dumps(env, sort_keys=True), round=r, ms_per_step=t,
                                 min_ms=min(ts), rel_err_vs_first=err, kernels=kernels,
                                 device=torch.cuda.get_device_name(), torch=torch.__version__,
                                 commit=os.environ.get("TTT_BENCH_GIT_COMMIT", "")))  # fmt: skip
                print(f"{name} v{i} {env} round {r}: {t:.4f} ms/step (min {min(ts):.4f}) err {err:.2e}", flush=True)
        del steps
        for i, env in enumerate(variants):
            os.environ.update(env)
            restore_cache(cache, snap)
            step = GraphedDecode(model, cache, B)
            for _ in range(3):
                step(tok)
            table = profile(step, tok, out / f"profile_{name}_v{i}.txt")
            print(f"{name} v{i} {env} profile:\n" + "\n".join(table.splitlines()[3:8]), flush=True)
            del step


def run(out: Path, models: list[str], variants: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    rows: list[dict] = []
    for name in models:
        screen(name, variants, out, rows)
        print(f"[{name} {time.time() - t0:.0f} s]", flush=True)
        with open(out / "decode_ab.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2].split(","), json.loads(sys.argv[3]))
