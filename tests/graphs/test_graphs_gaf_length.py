"""GAF at length on smollm2-135m (issue 33): certified values where the solver used to stall.

Before issue 33 the barrier solver started the first μ stage from a proportional split that left
most edges orders of magnitude below the centre; on smollm2's AGF capacities for 255 tokens of
Rotten Tomatoes prose it ran 400 Newton steps in that stage and raised SolverError (measured
with ``barrier.PRIMAL_DUAL_START = False``, which restores that start). The reference is scipy's max-flow,
bracketed exactly: its integer flow on floor-scaled capacities is a feasible flow (a lower bound,
loose by the rounding of every edge it uses) and the cut of its residual graph, priced at the
true capacities, an upper bound (tight: within 5e-8 of the value at 128 tokens).
"""
from __future__ import annotations

import numpy as np
import pytest

from tests.support.gaf_length_cases import max_flow_bracket, prose_of_tokens
from xattr_lab.graphs import VALUE_RTOL, barrier_max_flow


@pytest.mark.slow
def test_smollm2_255_tokens_of_prose_certifies(smollm):
    from xattr_lab.graphs.barrier import cpu_threads
    from xattr_lab.methods import flows as method_flows

    text = prose_of_tokens(smollm.tokenizer, 255)
    with cpu_threads(2, "cpu"):
        cap = smollm.capture(smollm.encode(text), None, attention_grads=True)
    valid = method_flows._valid_positions(cap.encoding)
    assert len(valid) >= 250
    C = method_flows._capacities(smollm, cap, "agf", valid)
    sources = method_flows._pick_sources(smollm, cap.encoding, None, valid)
    assert sources == [len(valid) - 1]
    sol = barrier_max_flow(C, None, sources, threads=2)
    lower, upper = max_flow_bracket(C, sources)  # lower <= exact max-flow value <= upper
    assert 0 < lower <= upper
    assert sol.value <= upper * (1 + 1e-9)  # the flow is feasible: below scipy's cut
    assert sol.upper_bound >= lower * (1 - 1e-9)  # the certificate is a cut: above scipy's flow
    assert upper - sol.value <= VALUE_RTOL * sol.value  # scipy's cut certifies the value too
    assert sol.gap <= VALUE_RTOL * sol.value
    assert sol.residuals["primal_dual_iterations"] > 0 and sol.iterations <= 200
