"""Session 11 A/B: the decode step's row norms from producer statistics (TTT_ROW_STATS, default on) against their
own launches (TTT_ROW_STATS=0, session 10's path), 1.3B TTT-Linear and TTT-MLP (Mamba backbone), B = 16, bf16, CUDA
graph. The variants alternate (A B A B ...) so that drift in the shared machine falls on both; each one's logits
are compared with the first variant's from the same cache. Then a kernel profile of each model's default step
with PDL off (under PDL a kernel's time includes its wait on the previous one).

    python3 bench/notes/session11_decode_ab.py OUTDIR
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VARIANTS = [{"TTT_ROW_STATS": "0"}, {"TTT_ROW_STATS": "1"}]
ROUNDS = 3


def time_step(step, tok) -> list[float]:
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(5):
        s.record()
        for _ in range(16):
            step(tok)
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 16)
    return ts


def profile(step, tok, path: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    with prof(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(8):
            step(tok)
        torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=60)
    path.write_text(table)
    print(table, flush=True)


def screen(name: str, out: Path, rows: list[dict]) -> None:
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
        for env in VARIANTS:
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
            for env, step, err, launches in steps:
                ts = time_step(step, tok)
                t = sorted(ts)[2]
                kernels = ";".join(f"{k}={v}" for k, v in sorted(launches.items()))
                rows.append(dict(model=name, **env, round=r, ms_per_step=t, min_ms=min(ts), rel_err_vs_first=err,
                                 kernels=kernels, device=torch.cuda.get_device_name(), torch=torch.__version__,
                                 commit=os.environ.get("TTT_BENCH_GIT_COMMIT", "")))  # fmt: skip
                print(f"{name} {env} round {r}: {t:.4f} ms/step (min {min(ts):.4f}) err {err:.2e}", flush=True)
        del steps
        os.environ.update(VARIANTS[-1], TTT_PDL="0")
        restore_cache(cache, snap)
        step = GraphedDecode(model, cache, B)
        for _ in range(3):
            step(tok)
        profile(step, tok, out / f"profile_{name}_nopdl.txt")
        os.environ.pop("TTT_PDL")
        del step


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    rows: list[dict] = []
    for name in ("ttt_linear", "ttt_mlp"):
        screen(name, out, rows)
        print(f"[{name} {time.time() - t0:.0f} s]", flush=True)
        with open(out / "decode_ab.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
