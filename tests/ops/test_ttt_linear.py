"""TTT-Linear ops: naive against an autograd reference of the definition, dual against naive, chaining, decode step,
dtypes, dispatch. The test bodies are shared with TTT-MLP (tests/ops/__init__.py)."""

import pytest

from . import (  # noqa: F401  (collected by pytest from this module)
    LINEAR,
    OpSpec,
    test_bf16_inputs,
    test_chaining_random_splits,
    test_dual_compiled_matches_dual,
    test_dual_gradcheck,
    test_dual_matches_naive,
    test_float32_close_to_float64,
    test_input_state_untouched,
    test_minibatch_one_is_online_gd,
    test_naive_is_the_definition,
    test_step_after_dual_prefill,
    test_step_cuda_graph,
    test_step_gradient_is_autograd,
    test_step_has_no_host_reads,
    test_unknown_impl,
    test_updates_matter,
)


@pytest.fixture
def spec() -> OpSpec:
    return LINEAR
