"""Target for an Nsight Compute profile of the TTT-Linear prefill kernel at op shape (a), T from argv (default 8k:
B=8, 32 heads x 64, 256 programs): three calls of ttt_linear_triton (one launch each). Profile the third with:
ncu --clock-control none -k regex:_ttt_linear_prefill --launch-skip 2 --launch-count 1 ... python3 this.py T"""

import sys

import torch

from bench.op import TOKENS_A, Inputs
from ttt.ops.ttt_linear.prefill import ttt_linear_triton

T = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
x = Inputs(TOKENS_A // T, T, torch.bfloat16, seed=1)
st = x.state()
for _ in range(3):
    ttt_linear_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=16)
torch.cuda.synchronize()
print(f"ttt_linear_ncu: 3 calls done at T={T}")
