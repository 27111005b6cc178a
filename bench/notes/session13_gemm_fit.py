"""Session 13: the skinny GEMM's time against its bytes, to split a decode GEMM's cost into a fixed part a kernel
and a streaming part: t = a + bytes / bw, fitted over weights of 0.5-67 MB (M = 16, K = 2048, the default tile of
each size), COPIES weights a graph as in the session-10 screen, PDL on and off; a tiny GEMM (16 KB) shows the floor
of a launch in the chain.

    python3 bench/notes/session13_gemm_fit.py OUTDIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from session10_decode_screen import COPIES, graph_time  # noqa: E402

from ttt.fused import skinny  # noqa: E402

SIZES = [(32, 256), (128, 2048), (512, 2048), (2048, 2048), (8192, 2048), (16384, 2048)]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    x16 = {k: torch.randn(16, k, device="cuda", dtype=torch.bfloat16) for k in {k for _, k in SIZES}}
    for n, k in SIZES:
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(COPIES)]
        x = x16[k]
        cfg = skinny.default_config(n, k, skinny.EPI_NONE)
        ref = x.double() @ ws[0].double().t()
        for pdl in (False, True):
            y = skinny.skinny_gemm(x, ws[0], cfg=cfg, pdl=pdl)
            err = float((y.double() - ref).norm() / ref.norm())
            t = graph_time(lambda i, p=pdl, x=x, ws=ws, c=cfg: skinny.skinny_gemm(x, ws[i], cfg=c, pdl=p))
            mb = n * k * 2 / 1e6
            rows.append(dict(n=n, k=k, mb=mb, cfg=str(cfg), pdl=pdl, us=t, gbps=mb * 1e3 / t, rel_err=err))
            print(f"n={n:6d} k={k} {mb:7.2f} MB pdl={pdl!s:5s} {t:7.2f} us {mb * 1e3 / t:6.0f} GB/s err {err:.1e}")
        del ws
        torch.cuda.empty_cache()
    for pdl in (False, True):
        pts = [(r["mb"], r["us"]) for r in rows if r["pdl"] == pdl and r["mb"] >= 2]
        xs = torch.tensor([p[0] for p in pts], dtype=torch.float64)
        ts = torch.tensor([p[1] for p in pts], dtype=torch.float64)
        A = torch.stack([torch.ones_like(xs), xs], 1)
        a, b = torch.linalg.lstsq(A, ts[:, None]).solution[:, 0].tolist()
        print(f"fit pdl={pdl}: t = {a:.2f} us + bytes / {1e3 / b:.0f} GB/s (sizes >= 2 MB)")
        rows.append(dict(n="fit", k="", mb="", cfg="t = a + mb * b", pdl=pdl, us=a, gbps=1e3 / b, rel_err=""))
    with open(out / "gemm_fit.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
