"""Fused inference kernels around the TTT op (the `triton` impl's fast path): the block's RMSNorm + causal
depthwise pre-conv + residual, the TTT layer's prologue (q/k convs, interleaved RoPE, eta) and epilogue
(post-LayerNorm + gate), SwiGLU's SiLU * up, and a cache of parameters concatenated for one GEMM.

Submodules are imported where used: `kernels` imports triton (an optional extra, slow to import); `cache` does
not. Each kernel's reference is the plain PyTorch code in `ttt.layer` / `ttt.model`; tests/ttt/test_ttt_fused.py
compares them.
"""
