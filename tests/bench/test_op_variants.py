"""bench.op's impl names -> kernel keyword arguments: every knob a sweep names reaches the kernel, unknown parts fail."""

import inspect

import pytest

from bench.op import mlp_triton_variant, step_variant, triton_variant
from ttt.ops.ttt_linear.prefill import ttt_linear_prefill
from ttt.ops.ttt_mlp.prefill import ttt_mlp_prefill


def test_linear_variant_knobs():
    tri = {"backend": "triton"}  # 'ttt_linear/triton' rows always time the Triton kernel, whatever auto would pick
    assert triton_variant("ttt_linear/triton") == tri
    assert triton_variant("ttt_linear/triton-tf32-w8-r168-skew-ln2-nopf") == dict(
        precision="tf32", num_warps=8, maxnreg=168, skew=True, one_pass_ln=False, prefetch=False, **tri
    )
    # session 5 measured no prefetch and the update in the MMA faster on an H200; '-pf-nomf' brings the old loop back
    sig = inspect.signature(ttt_linear_prefill).parameters
    assert (sig["prefetch"].default, sig["mma_fold"].default) == (False, True)
    assert triton_variant("ttt_linear/triton-pf-nomf") == {"prefetch": True, "mma_fold": False, **tri}
    assert triton_variant("ttt_linear/triton-pf") == {"prefetch": True, **tri}
    assert triton_variant("ttt_linear/triton-la2-r0") == {"lookahead": 2, "maxnreg": 0, **tri}
    assert triton_variant("ttt_linear/triton-la1-nola") == {"lookahead": 0, **tri}
    assert triton_variant("ttt_linear/gluon") == {"backend": "gluon"}
    assert triton_variant("ttt_linear/gluon-r0") == {"maxnreg": 0, "backend": "gluon"}
    assert sig["backend"].default == "auto"


def test_mlp_variant_knobs():
    tri = {"backend": "triton"}
    assert mlp_triton_variant("ttt_mlp/triton") == tri
    assert mlp_triton_variant("ttt_mlp/triton-pf-h2-eq1") == dict(prefetch=True, hidden_chunks=2, late_zq1=False) | tri
    assert mlp_triton_variant("ttt_mlp/triton-nopf-lq1-dz16-exact") == dict(
        prefetch=False, late_zq1=True, dz_bf16=True, fast_tanh=False, backend="triton"
    )
    assert mlp_triton_variant("ttt_mlp/gluon") == {"backend": "gluon"}
    assert mlp_triton_variant("ttt_mlp/gluon-nb2") == {"backend": "gluon", "nbuf": 2}


def test_mlp_default_is_the_measured_fastest():
    """The kernel's defaults are the variant session 4 measured fastest (-nopf-lq1-h1); '-pf-h2-eq1' undoes them."""
    sig = inspect.signature(ttt_mlp_prefill).parameters
    assert (sig["prefetch"].default, sig["hidden_chunks"].default, sig["late_zq1"].default) == (False, 1, True)
    old = mlp_triton_variant("ttt_mlp/triton-pf-h2-eq1")
    assert all(sig[k].default != v for k, v in old.items())


@pytest.mark.parametrize("bad", ["ttt_mlp/triton-h", "ttt_mlp/triton-zz9"])
def test_mlp_variant_unknown_part_reaches_precision_check(bad):
    """An unknown part lands in `precision`, which the kernel entry rejects by name."""
    kw = mlp_triton_variant(bad)
    assert kw["precision"] == bad.rsplit("-", 1)[1]


def test_step_variant_knobs():
    assert step_variant("ttt_linear/triton-step") == {} == step_variant("ttt_linear/triton-step+proj")
    assert step_variant("ttt_linear/triton-step-w2") == {"num_warps": 2}
    assert step_variant("ttt_mlp/triton_single-step-h16-w8") == {"hidden_chunk": 16, "num_warps": 8}
    assert step_variant("mamba_ssm/Mamba.step") == {}
    with pytest.raises(ValueError, match="'x3'"):
        step_variant("ttt_linear/triton-step-x3")
