"""Decode GEMMs at M = 16 (the 1.3B layer's in-proj, o_proj, gate-up, down): cuBLAS (F.linear) vs a Triton weight-
streaming kernel over a grid of tile configs. Weights rotate over enough copies to defeat L2. Prints GB/s per row.

    python3 bench/notes/session4_skinny_screen.py OUTDIR
"""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, o_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid = tl.program_id(0)
    rm = tl.arange(0, BM)
    rn = pid * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in tl.range(0, K, BK):
        km = (k0 + rk < K)[None, :]
        x = tl.load(x_ptr + rm[:, None] * K + (k0 + rk)[None, :], mask=(rm < M)[:, None] & km, other=0.0)
        w = tl.load(w_ptr + rn.to(tl.int64)[:, None] * K + (k0 + rk)[None, :], mask=(rn < N)[:, None] & km, other=0.0)
        acc = tl.dot(x, tl.trans(w), acc)
    tl.store(
        o_ptr + rm[:, None] * N + rn[None, :],
        acc.to(o_ptr.dtype.element_ty),
        mask=(rm < M)[:, None] & (rn < N)[None, :],
    )


def skinny(x, w, BN, BK, stages, warps):
    M, K = x.shape
    N = w.shape[0]
    o = torch.empty(M, N, dtype=x.dtype, device=x.device)
    _skinny_kernel[(triton.cdiv(N, BN),)](x, w, o, M, N, K, BM=16, BN=BN, BK=BK, num_stages=stages, num_warps=warps)
    return o


def bench(fn, n_w):
    for i in range(3):
        fn(i % n_w)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    reps = 8 * n_w
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i % n_w)
    g.replay()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(5):
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / reps)
    return sorted(ts)[2]


def main() -> None:
    out = Path(sys.argv[1])
    shapes = {"in_proj": (6176, 2048), "o_proj": (2048, 2048), "gate_up": (11008, 2048), "down": (2048, 5504)}
    rows = []
    for name, (N, K) in shapes.items():
        n_w = max(2, int(400e6 // (N * K * 2)))
        ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(n_w)]
        x = torch.randn(16, K, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x.float(), ws[0].float())
        mb = N * K * 2 / 1e6
        t = bench(lambda i, x=x, ws=ws: F.linear(x, ws[i]), n_w)
        rows.append(dict(shape=name, impl="cublas", cfg="", us=t, gbps=mb * 1e3 / t, err=0.0))
        print(f"{name:8s} cublas              {t:7.2f} us {mb * 1e3 / t:7.0f} GB/s", flush=True)
        best = None
        for BN, BK, st, nw in itertools.product((16, 32, 64), (128, 256), (3, 4, 6), (4, 8)):
            if BN * BK * 2 * st > 200_000:
                continue
            try:
                o = skinny(x, ws[0], BN, BK, st, nw)
                err = ((o.float() - ref).norm() / ref.norm()).item()
                t = bench(lambda i, x=x, ws=ws, c=(BN, BK, st, nw): skinny(x, ws[i], *c), n_w)
            except Exception as ex:  # noqa: BLE001
                print(f"{name} {BN} {BK} {st} {nw} failed: {type(ex).__name__}", flush=True)
                continue
            cfg = f"BN{BN}-BK{BK}-s{st}-w{nw}"
            rows.append(dict(shape=name, impl="triton", cfg=cfg, us=t, gbps=mb * 1e3 / t, err=err))
            if best is None or t < best[0]:
                best = (t, cfg, err)
        print(
            f"{name:8s} triton {best[1]:14s} {best[0]:7.2f} us {mb * 1e3 / best[0]:7.0f} GB/s err {best[2]:.1e}",
            flush=True,
        )
    with open(out / "skinny_screen.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
