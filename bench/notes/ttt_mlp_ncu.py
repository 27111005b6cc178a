"""Target for an Nsight Compute profile of the TTT-MLP prefill kernel at op shape (a) T=2k (B=32, 32 heads x 64):
three calls of ttt_mlp_triton (two launches each: the head chunk, then the main loop). Profile the main loop of
the third call with: ncu --clock-control none -k regex:_ttt_mlp_prefill --launch-skip 5 --launch-count 1 ..."""

import torch

from bench.op import Inputs
from ttt.ops.ttt_mlp.prefill import ttt_mlp_triton

B, T = 32, 2048
x = Inputs(B, T, torch.bfloat16, seed=1)
st = x.mlp_state()
for _ in range(3):
    ttt_mlp_triton(x.q, x.k, x.v, x.eta, x.token_eta, x.ln_w, x.ln_b, st, mini_batch_size=16)
torch.cuda.synchronize()
print("ttt_mlp_ncu: 3 calls done")
