"""Default source rows of rollout and attention flow (issue 16): the readout token, as in
Abnar & Zuidema (2020), who explain the [CLS] row of Â = 0.5·A + 0.5·I (rows renormalised)."""
from __future__ import annotations

import numpy as np
import pytest

from xattr_lab.graphs import attention_flow, rollout


def _mixed(A):
    n = A.shape[1]
    M = 0.5 * A + 0.5 * np.eye(n)[None]
    return M / M.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("method", ["rollout", "attention_flow"])
def test_encoder_classifier_explains_the_cls_row_by_default(tiny, method):
    ex = tiny("bert")
    text = "a quiet film about loud people"
    A = ex.capture(text).attentions.double().numpy().mean(axis=1)
    a = ex.attribute(text, method=method)
    assert a.options["sources"] == [0]  # [CLS]
    if method == "rollout":
        M = _mixed(A)
        expected = M[-1]
        for layer in range(A.shape[0] - 2, -1, -1):
            expected = expected @ M[layer]
        np.testing.assert_allclose(a.scores, expected[0], rtol=1e-9)  # the paper's definition, by hand
        np.testing.assert_allclose(a.scores, rollout(A, 0.5)[-1][0], rtol=1e-12)
    else:
        np.testing.assert_allclose(a.scores, attention_flow(A, 0.5, sources=[0])[0], rtol=1e-12)
    assert a.scores.sum() > 0
    everything = ex.attribute(text, method=method, sources="all")  # still an option: the mean row
    n = A.shape[1]
    assert everything.options["sources"] == list(range(n))
    full = rollout(A, 0.5)[-1] if method == "rollout" else attention_flow(A, 0.5)
    np.testing.assert_allclose(everything.scores, full.mean(axis=0), rtol=1e-12)
    assert not np.allclose(everything.scores, a.scores)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_causal_lm_explains_the_predicting_position_by_default(tiny, arch):
    ex = tiny(arch)
    text = "the cat sat on a warm mat"
    n = ex.encode(text).n
    A = ex.capture(text).attentions.double().numpy().mean(axis=1)
    a = ex.attribute(text, method="rollout")
    assert a.options["sources"] == [n - 1]
    np.testing.assert_allclose(a.scores, rollout(A, 0.5)[-1][n - 1], rtol=1e-12)


def test_gaf_default_sources_unchanged(tiny):
    # GAF keeps its paper's default: every top-level token for an encoder classifier
    ex = tiny("bert")
    text = "a quiet film"
    assert ex.attribute(text, method="gaf", info="af").options["sources"] == list(range(ex.encode(text).n))
