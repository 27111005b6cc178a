"""Where one 1.3B decode step's time goes (TTT-Linear, fused triton path, B=16, bf16): the graphed step time, then a
torch.profiler trace of graph replays and of eager steps, kernels summed per step (name, launches, total us).

    python3 bench/notes/session4_decode_prof.py OUTDIR [model] [batch]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import registry  # noqa: E402
from ttt.generation import GraphedDecode  # noqa: E402


def table(prof, steps: int) -> str:
    agg: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            a = agg.setdefault(e.name[:90], [0, 0.0])
            a[0] += 1
            a[1] += e.device_time_total
    rows = sorted(agg.items(), key=lambda kv: -kv[1][1])
    tot = sum(v[1] for v in agg.values()) / steps
    n = sum(v[0] for v in agg.values()) / steps
    out = [f"kernels per step {n:.0f}, kernel time per step {tot:.1f} us"]
    out += [f"{v[1] / steps:9.1f} us {v[0] / steps:6.1f}x  {k}" for k, v in rows]
    return "\n".join(out)


def main() -> None:
    out = Path(sys.argv[1])
    model = sys.argv[2] if len(sys.argv) > 2 else "ttt_linear"
    B = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    net = registry.build(model, "1.3b", None, "cuda", torch.bfloat16)
    vocab = int(registry.size_config("1.3b").vocab_size)
    cache = net.allocate_cache(B, 4096)
    with torch.inference_mode():
        net.prefill(torch.randint(0, vocab, (B, 128), device="cuda"), cache)
        tok = torch.randint(0, vocab, (B, 1), device="cuda")
        g = GraphedDecode(net, cache, B)
        for _ in range(20):
            g(tok)
        torch.cuda.synchronize()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(100):
            g(tok)
        e.record()
        torch.cuda.synchronize()
        ms = s.elapsed_time(e) / 100
        lines = [
            f"{model} impl {net.impl} decode impl {getattr(net, 'decode_impl', '?')} B={B}: graph {ms * 1e3:.1f} us/step"
        ]
        for name, fn in (("graph", lambda: g(tok)), ("eager", lambda: net.decode_step(tok, cache))):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    fn()
                torch.cuda.synchronize()
            lines += [f"--- {name} (10 steps)", table(prof, 10)]
    text = "\n".join(lines)
    print(text[:6000])
    (out / f"decode_prof_{model}.txt").write_text(text)


if __name__ == "__main__":
    main()
