"""Information tensors (xattr_lab.graphs.information): the attention mask zeroes every kind."""
from __future__ import annotations

import numpy as np
import pytest

from xattr_lab.errors import InputError
from xattr_lab.graphs.information import INFO_KINDS, information_tensor


def _causal_case(seed=0, L=2, H=3, n=5):
    rng = np.random.default_rng(seed)
    attn = np.tril(rng.random((L, H, n, n)))
    attn /= attn.sum(axis=3, keepdims=True)
    grad = rng.standard_normal((L, H, n, n))  # the gradient reaches masked entries too
    return attn, grad, np.tril(np.ones((n, n)))


@pytest.mark.parametrize("kind", INFO_KINDS)
def test_every_kind_is_zero_where_the_mask_is_zero(kind):
    attn, grad, mask = _causal_case()
    C = information_tensor(attn, grad, kind, mask=mask)
    assert np.all(np.triu(C, 1) == 0)
    unmasked = information_tensor(attn, grad, kind)
    np.testing.assert_array_equal(np.tril(C), np.tril(unmasked))  # the mask only removes edges


def test_gf_without_a_mask_keeps_future_edges():
    # the defect the mask fixes: ReLU(grad) is positive on entries the model never reads
    attn, grad, _ = _causal_case()
    assert np.triu(information_tensor(attn, grad, "gf"), 1).max() > 0


def test_mask_shapes_and_padding():
    attn, grad, mask = _causal_case(n=4)
    L, H, n, _ = attn.shape
    padding = np.ones((n, n))
    padding[:, 3] = 0  # key 3 is padding
    per_head = np.broadcast_to(padding, (L, H, n, n))
    for m in (padding, np.broadcast_to(padding, (L, n, n)), per_head):
        C = information_tensor(attn, grad, "gf", mask=m)
        assert np.all(C[:, :, 3] == 0) and np.any(C[:, :, :3] > 0)
    with pytest.raises(InputError, match="mask must have shape"):
        information_tensor(attn, grad, "gf", mask=np.ones((n, n + 1)))
