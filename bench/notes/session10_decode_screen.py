"""Session 10 screen: the decode step's skinny GEMMs (ttt/fused/skinny.py) and the PDL chain (ttt/ops/pdl.py).

1. GEMM level, the 1.3B layer's four GEMMs at M = 16, bf16: cuBLAS (F.linear; + silu_mul for gate|up; addmm_ for
   the residual ones) vs the skinny kernel over tile configs, PDL off and on. Each timed graph is 24 calls, one per
   weight copy (24 x the layer's weights > L2), so it is the weight stream of a 24-layer decode.
2. Model level, 1.3B TTT-Linear (Mamba backbone) at B = 16: decode ms/step under a CUDA graph with the session's
   three changes (TTT_SKINNY, TTT_PDL, TTT_FUSED_STEP) off, one at a time and together, each one's logits against
   the all-off step from the same cache, and a kernel profile of the all-on step.

    python3 bench/notes/session10_decode_screen.py OUTDIR [--gemm]   (run 1 had the GEMM screen, run 2 not)
"""

from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from decode_ab import profile, time_step  # noqa: E402

from ttt.fused import skinny  # noqa: E402
from ttt.fused.mlp import silu_mul  # noqa: E402

SHAPES = {"in_proj": (6176, 2048, 0), "o_proj": (2048, 2048, 1), "gate_up": (5504, 2048, 2), "down": (2048, 5504, 1)}
CFGS = {
    "in_proj": [(32, 256, 1), (32, 128, 1), (64, 128, 1), (16, 256, 1), (32, 256, 2), (64, 256, 2)],
    "o_proj": [(32, 256, 4), (32, 256, 2), (32, 256, 1), (16, 256, 2), (64, 256, 4), (32, 256, 8)],
    "gate_up": [(32, 128, 1), (16, 128, 1), (32, 256, 1), (16, 256, 2), (32, 128, 2), (64, 128, 1)],
    "down": [(32, 128, 4), (32, 128, 2), (32, 128, 8), (16, 128, 4), (64, 128, 8), (32, 256, 4)],
}
COPIES = 24
# (TTT_SKINNY, TTT_PDL, TTT_FUSED_STEP[, TTT_SKINNY_NORM, TTT_SKINNY_PRELOAD]): the session-9 path first (every
# error is against it), the defaults last (profiled). SCREEN=final: the A/B of the two opt-in fusions.
VARIANTS = [("0", "0", "0"), ("1", "0", "0"), ("0", "1", "0"), ("0", "0", "1"), ("1", "1", "0"), ("1", "1", "1")]
if os.environ.get("SCREEN") == "final":
    VARIANTS = [("0", "0", "0"), ("1", "1", "1", "1", "0"), ("1", "1", "1", "0", "1"), ("1", "1", "1", "1", "1"),
                ("1", "1", "1", "0", "0")]  # fmt: skip


def graph_time(fn, reps: int = 5) -> float:
    """us per call of fn(i) for i over the weight copies, captured once as COPIES calls."""
    for i in range(COPIES):
        fn(i)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(COPIES):
            fn(i)
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / COPIES)
    return sorted(ts)[len(ts) // 2]


def screen_shape(name: str, N: int, K: int, epi: int) -> list[dict]:
    rows = []
    rows_w = 2 * N if epi == 2 else N
    ws = [torch.randn(rows_w, K, device="cuda", dtype=torch.bfloat16) / K**0.5 for _ in range(COPIES)]
    x = torch.randn(16, K, device="cuda", dtype=torch.bfloat16)
    o = torch.zeros(16, N, device="cuda", dtype=torch.bfloat16)
    mb = rows_w * K * 2 / 1e6
    if epi == 2:
        ref = F.silu(x.double() @ ws[0].double()[:N].t()) * (x.double() @ ws[0].double()[N:].t())
        cub = lambda i: silu_mul(F.linear(x, ws[i]))  # noqa: E731
    elif epi == 1:
        ref = x.double() @ ws[0].double().t()
        cub = lambda i: o.addmm_(x, ws[i].t())  # noqa: E731
    else:
        ref = x.double() @ ws[0].double().t()
        cub = lambda i: F.linear(x, ws[i])  # noqa: E731
    t = graph_time(cub)
    rows.append(dict(shape=name, impl="cublas", cfg="", pdl=False, us=t, gbps=mb * 1e3 / t, rel_err=""))
    print(f"{name:8s} cublas {'':28s} {t:7.2f} us {mb * 1e3 / t:6.0f} GB/s", flush=True)

    def call(i: int, cfg: skinny.SkinnyConfig, pdl: bool) -> torch.Tensor:
        if epi == 1:
            return skinny.skinny_gemm(x, ws[i], o, epi=1, cfg=cfg, pdl=pdl)
        return skinny.skinny_gemm(x, ws[i], epi=epi, cfg=cfg, pdl=pdl)

    for bn, bk, split in CFGS[name]:
        for pf in (True, False):
            cfg = skinny.SkinnyConfig(bn=bn, bk=bk, split=split, prefetch=pf)
            for pdl in (False, True):
                try:
                    o.zero_()
                    y = call(0, cfg, pdl).clone()
                    err = float((y.double() - ref).norm() / ref.norm())
                    t = graph_time(lambda i, c=cfg, p=pdl: call(i, c, p))
                except Exception as ex:  # noqa: BLE001
                    print(f"{name} {cfg} pdl={pdl} failed: {type(ex).__name__}: {str(ex)[:200]}", flush=True)
                    continue
                tag = f"bn{bn}-bk{bk}-s{split}{'' if pf else '-nopf'}"
                rows.append(dict(shape=name, impl="skinny", cfg=tag, pdl=pdl, us=t, gbps=mb * 1e3 / t, rel_err=err))
                print(f"{name:8s} skinny {tag:18s} pdl={pdl!s:5s} {t:7.2f} us {mb * 1e3 / t:6.0f} GB/s "
                      f"err {err:.1e}", flush=True)  # fmt: skip
    return rows


def gemm_screen(out: Path) -> None:
    rows = []
    for name, (N, K, epi) in SHAPES.items():
        rows += screen_shape(name, N, K, epi)
        torch.cuda.empty_cache()
    with open(out / "gemm_screen.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def model_screen(out: Path) -> None:
    from bench.registry import build
    from ttt.generation import GraphedDecode, restore_cache, snapshot_cache
    from ttt.ops.common import KERNEL_LAUNCHES

    model = build("ttt_linear", "1.3b", impl="triton", device="cuda", dtype=torch.bfloat16)
    B, P = 16, 512
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (B, P + 1), generator=g).cuda()
    cache = model.allocate_cache(B, P + 4096)
    with torch.inference_mode():
        model.prefill(x[:, :P], cache)
        snap = snapshot_cache(cache)
        rows, ref = [], None
        for variant in VARIANTS:
            skin, pdl, fstep, snorm, spre = (*variant, "0", "0")[:5]
            env = dict(TTT_SKINNY=skin, TTT_PDL=pdl, TTT_FUSED_STEP=fstep, TTT_SKINNY_NORM=snorm,
                       TTT_SKINNY_PRELOAD=spre)  # fmt: skip
            os.environ.update(env)
            restore_cache(cache, snap)
            KERNEL_LAUNCHES.clear()
            logits = model.decode_step(x[:, P:], cache).float()
            kernels = ",".join(sorted(KERNEL_LAUNCHES))
            ref = logits if ref is None else ref
            err = float((logits - ref).norm() / ref.norm())
            restore_cache(cache, snap)
            step = GraphedDecode(model, cache, B)
            tok = x[:, P:]
            for _ in range(5):
                step(tok)
            torch.cuda.synchronize()
            ts = time_step(step, tok, reps=7)
            t = sorted(ts)[3]
            rows.append(dict(skinny=skin, pdl=pdl, fused_step=fstep, skinny_norm=snorm, skinny_preload=spre,
                             ms_per_step=t, min_ms=min(ts), rel_err_vs_first=err, kernels=kernels))  # fmt: skip
            print(f"model decode {env}: {t:.3f} ms/step (min {min(ts):.3f}) err {err:.2e} [{kernels}]", flush=True)
            if variant == VARIANTS[-1]:
                print(profile(step, tok, out / "decode_profile.txt"), flush=True)
            del step
    with open(out / "model_decode.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    model_screen(out)
    print(f"[model screen {time.time() - t0:.0f} s]", flush=True)
    if "--gemm" in sys.argv:
        gemm_screen(out)
        print(f"[gemm screen {time.time() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
