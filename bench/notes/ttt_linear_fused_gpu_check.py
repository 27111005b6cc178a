"""GPU check of the fused `triton` path of the TTT layers (ttt/fused/), for the lead to run on the H100 (~2-3 min).

    python bench/notes/ttt_linear_fused_gpu_check.py --out bench/notes/fused_run1

1. correctness: 1.3B ttt_linear (Mamba backbone) in bf16, impl=triton fused and unfused against impl=dual on a short
   input (bench.latency.check_against_reference: last logits of a forward, a prefill, one decode step after it);
2. model-level prefill, B=16, ctx 1k and 8k, forward(x, logits_to_keep=1) (bench.latency.measure_prefill): unfused
   (the layer code before this change, `fused=False`) vs fused; mamba-ssm's Mamba 1.4B alongside when installed;
3. one decode step at ctx 1k under a CUDA graph (bench.latency.measure_decode), unfused vs fused (and Mamba);
4. torch.profiler tables of one prefill forward at ctx 2k (top CUDA kernels, fused and unfused) and the number of
   CUDA kernels per forward and per decode step (divided by the 24 layers for a per-layer count).
Everything lands in --out: summary.txt (what is printed), timings.csv, kernels_*.csv, profile_*.txt.

On the lent GPU machine bench.registry needs omegaconf and the Mamba row mamba-ssm: install the wheels of
../shared/device-wheels first (README there). A CPU smoke test of the script itself (fp32, interpreter, no
kernel counts): TRITON_INTERPRET=1 python bench/notes/ttt_linear_fused_gpu_check.py --out /tmp/x --size tiny
--batch 2 --ctx 32 --decode-ctx 16 --no-mamba
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.latency import Timing, check_against_reference, measure_decode, measure_prefill  # noqa: E402
from bench.registry import build  # noqa: E402

B = 16
VOCAB = 32000
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def set_fused(model: torch.nn.Module, on: bool) -> None:
    for blk in model.layers:
        blk.ttt.fused = on


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def log(out: Path, *parts: object) -> None:
    line = " ".join(str(p) for p in parts)
    print(line, flush=True)
    with open(out / "summary.txt", "a") as f:
        f.write(line + "\n")


def kernel_rows(prof: torch.profiler.profile) -> dict[str, tuple[int, float]]:
    """CUDA kernel name -> (launches, total us), from the profiler's device-side events."""
    rows: dict[str, tuple[int, float]] = {}
    for e in prof.key_averages():
        if getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(e, "device_time_total", None)
        us = e.cuda_time_total if us is None else us
        n, t = rows.get(e.key, (0, 0.0))
        rows[e.key] = (n + e.count, t + us)
    if not rows:  # a profiler that files kernels under their launching CPU op only
        for e in prof.events():
            for k in getattr(e, "kernels", []):
                n, t = rows.get(k.name, (0, 0.0))
                rows[k.name] = (n + 1, t + getattr(k, "duration", 0.0))
    return rows


@torch.inference_mode()
def profile_forward(model: torch.nn.Module, out: Path, tag: str, ctx: int) -> int:
    from torch.profiler import ProfilerActivity, profile

    x = torch.randint(0, VOCAB, (B, ctx), device=DEV)
    model(x, logits_to_keep=1)
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model(x, logits_to_keep=1)
        sync()
    try:
        table = prof.key_averages().table(sort_by="device_time_total", row_limit=40, max_name_column_width=90)
    except Exception:  # older torch names the key after CUDA
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90)
    (out / f"profile_{tag}_{ctx}.txt").write_text(table)
    rows = kernel_rows(prof)
    with open(out / f"kernels_{tag}_{ctx}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", "count", "total_us"])
        for name, (n, us) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            w.writerow([name, n, f"{us:.1f}"])
    return sum(n for n, _ in rows.values())


@torch.inference_mode()
def count_decode_kernels(model: torch.nn.Module) -> int:
    from torch.profiler import ProfilerActivity, profile

    cache = model.allocate_cache(B, 64)
    x = torch.randint(0, VOCAB, (B, 17), device=DEV)
    model.prefill(x[:, :16], cache)
    model.decode_step(x[:, 16:], cache)
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        model.decode_step(x[:, 16:], cache)
        sync()
    return sum(n for n, _ in kernel_rows(prof).values())


def empty_cache() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ctx", default="1024,8192", help="prefill contexts (comma separated)")
    ap.add_argument("--decode-ctx", type=int, default=1024)
    ap.add_argument("--profile-ctx", type=int, default=2048)
    ap.add_argument("--size", default="1.3b")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--no-mamba", action="store_true")
    args = ap.parse_args()
    global B, VOCAB
    B = args.batch
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text("")
    t_start = time.time()
    import triton

    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke test)"
    log(out, f"device {name} torch {torch.__version__} triton {triton.__version__}")
    dtype = torch.bfloat16 if DEV == "cuda" else torch.float32
    if DEV != "cuda":  # the interpreter's bf16 tl.dot is garbage: fp32 operands for the smoke test
        import functools

        from ttt.ops import ttt_linear as ops

        ops.IMPLS["triton"] = functools.partial(ops.IMPLS["triton"], precision="ieee", one_pass_ln=False)
    model = build("ttt_linear", args.size, impl="dual", device=DEV, dtype=dtype)
    model.impl = "triton"
    VOCAB = model.config.vocab_size
    L = len(model.layers)
    timing = Timing(warmup=1, min_repeats=3, max_repeats=10, budget_s=1.0)
    rows: list[dict] = []

    # 1. correctness against the dual form (the reference path), bf16, short input
    for fused in (True, False):
        set_fused(model, fused)
        err = check_against_reference(model, "dual", vocab=VOCAB, batch=2, tokens=77)
        log(out, f"check fused={fused}: max rel err vs dual (forward, prefill, 1 decode step) = {err:.3e}")
        rows.append(dict(what="check_rel_err", impl="ttt_linear/triton", fused=fused, ctx=77, value=err))

    # 4. kernel counts and profiles (before the timings: cheap, and they warm the kernels up)
    for fused in (True, False):
        set_fused(model, fused)
        n = profile_forward(model, out, "fused" if fused else "unfused", args.profile_ctx)
        nd = count_decode_kernels(model)
        log(out, f"fused={fused}: {n} CUDA kernels per prefill forward ({n / L:.1f} per layer incl. embed/head); "
                 f"{nd} per eager decode step ({nd / L:.1f} per layer)")  # fmt: skip
        rows.append(
            dict(what="kernels_per_forward", impl="ttt_linear/triton", fused=fused, ctx=args.profile_ctx, value=n)
        )
        rows.append(dict(what="kernels_per_decode_step", impl="ttt_linear/triton", fused=fused, ctx=0, value=nd))

    # 2. prefill, 3. decode
    ctxs = [int(c) for c in args.ctx.split(",")]
    for fused in (True, False):
        set_fused(model, fused)
        for ctx in ctxs:
            r = measure_prefill(model, batch=B, ctx=ctx, vocab=VOCAB, timing=timing)
            us = r[0]["value"] * 1e3
            peak = (r[0]["peak_mem_bytes"] or 0) / 2**30
            log(
                out, f"prefill fused={fused} ctx={ctx}: {us:.2f} us/token ({r[1]['value']:.1f} ms), peak {peak:.1f} GiB"
            )
            rows.append(dict(what="prefill_us_per_token", impl="ttt_linear/triton", fused=fused, ctx=ctx, value=us))
            empty_cache()
        r = measure_decode(model, batch=B, ctx=args.decode_ctx, vocab=VOCAB, timing=timing)
        how = "CUDA graph" if r[0]["decode_graph"] else "eager"
        log(out, f"decode fused={fused} ctx={args.decode_ctx} ({how}): {r[0]['value']:.3f} ms/step")
        rows.append(dict(what="decode_ms_per_step", impl="ttt_linear/triton", fused=fused, ctx=args.decode_ctx,
                         value=r[0]["value"]))  # fmt: skip
        empty_cache()
    del model
    empty_cache()

    if not args.no_mamba:
        try:
            mamba = build("mamba", args.size, impl="mamba_ssm", device=DEV, dtype=torch.bfloat16)
        except Exception as e:  # mamba-ssm not installed: the TTT numbers stand alone
            log(out, f"mamba skipped: {type(e).__name__}: {e}")
        else:
            for ctx in ctxs:
                r = measure_prefill(mamba, batch=B, ctx=ctx, vocab=VOCAB, timing=timing)
                us = r[0]["value"] * 1e3
                log(out, f"prefill mamba_ssm ctx={ctx}: {us:.2f} us/token")
                rows.append(dict(what="prefill_us_per_token", impl="mamba/mamba_ssm", fused="", ctx=ctx, value=us))
            r = measure_decode(mamba, batch=B, ctx=args.decode_ctx, vocab=VOCAB, timing=timing)
            log(out, f"decode mamba_ssm ctx={args.decode_ctx} (CUDA graph): {r[0]['value']:.3f} ms/step")
            rows.append(dict(what="decode_ms_per_step", impl="mamba/mamba_ssm", fused="", ctx=args.decode_ctx,
                             value=r[0]["value"]))  # fmt: skip

    with open(out / "timings.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["what", "impl", "fused", "ctx", "value"])
        w.writeheader()
        w.writerows(rows)
    log(out, f"done in {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
