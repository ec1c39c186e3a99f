"""Attention flows: rollout, attention flow, information tensors, the barrier max-flow solver.

References are independent of the code under test: networkx max-flow on a graph built here,
numpy matrix products, scipy.optimize on the same barrier objective, hand-made tiny cases.
"""
from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xattr_lab as xa
from xattr_lab import flows
from xattr_lab.errors import XattrError
from xattr_lab.results import FlowResult


def attention_like(L, n, seed=0, power=4.0, zeros=0.0):
    """Row-stochastic, peaked random 'attention' (L, n, n); ``zeros``: fraction of entries set to 0."""
    rng = np.random.default_rng(seed)
    A = rng.random((L, n, n)) ** power
    if zeros:
        A[rng.random(A.shape) < zeros] = 0.0
        A[:, np.arange(n), np.arange(n)] += 1e-3  # keep every row non-empty
    return A / A.sum(axis=2, keepdims=True)


def nx_graph(C, sources=None):
    """The GAF graph (docs/ARCHITECTURE.md, section "Flows and GAF"), built independently of xattr_lab."""
    L, n, _ = C.shape
    U = C.sum()
    G = nx.DiGraph()
    for k in range(L):
        for i in range(n):
            for j in range(n):
                if C[k, i, j] > 0:
                    G.add_edge((k + 1, i), (k, j), capacity=float(C[k, i, j]))
    for i in range(n) if sources is None else sources:
        G.add_edge("s", (L, i), capacity=U)
    for j in range(n):
        G.add_edge((0, j), "t", capacity=U)
    return G


def nx_value(C, sources=None):
    return nx.maximum_flow_value(nx_graph(C, sources), "s", "t")


def check_flow(C, sol, rel=1e-9):
    """Conservation at every node and 0 <= f <= u on every edge, relative to the value."""
    scale = max(sol.value, 1e-300)
    F = sol.edge_flow
    assert F.shape == C.shape and np.all(F >= -rel * scale)
    assert np.all(F <= C + rel * scale)
    assert np.all(F[C == 0] == 0)
    out = F.sum(axis=2)  # out-flow of layers 1..L
    inflow = F.sum(axis=1)  # in-flow of layers 0..L-1
    np.testing.assert_allclose(out[:-1], inflow[1:], atol=rel * scale, rtol=0)  # inner layers
    np.testing.assert_allclose(out[-1], sol.source_flow, atol=rel * scale, rtol=0)  # top: from s
    np.testing.assert_allclose(inflow[0], sol.attributions, atol=rel * scale, rtol=0)  # bottom: to t
    assert abs(sol.attributions.sum() - sol.value) <= rel * scale  # efficiency
    assert abs(sol.source_flow.sum() - sol.value) <= rel * scale
    np.testing.assert_allclose(sol.node_flow[0], sol.attributions)
    np.testing.assert_allclose(sol.node_flow[1:], out)


# ----------------------------------------------------------------------------- barrier max-flow


@pytest.mark.parametrize(
    "L, n, seed, zeros, sources",
    [(1, 3, 0, 0.0, None), (2, 4, 1, 0.0, None), (3, 6, 2, 0.5, None), (4, 8, 3, 0.3, [0, 5]), (6, 12, 4, 0.0, [2])],
)
def test_value_matches_networkx_at_auto_mu(L, n, seed, zeros, sources):
    C = attention_like(L, n, seed, zeros=zeros)
    sol = flows.barrier_max_flow(C, None, sources)
    exact = nx_value(C, sources)
    assert sol.value <= exact * (1 + 1e-12)
    assert sol.value == pytest.approx(exact, rel=1e-6)
    assert sol.upper_bound >= exact * (1 - 1e-12)  # the certificate is a real cut
    assert sol.mu > 0
    check_flow(C, sol)


def test_value_below_max_flow_and_converges_as_mu_shrinks():
    C = attention_like(3, 5, 7)
    exact = nx_value(C)
    values = [flows.barrier_max_flow(C, mu).value for mu in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)]
    assert all(v < exact for v in values)
    assert all(a < b for a, b in zip(values, values[1:]))
    gaps = [exact - v for v in values]
    m = C.size + 2 * 5 + 1
    assert all(gap <= 2 * m * mu for gap, mu in zip(gaps, (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)))  # duality gap bound
    assert gaps[-1] < 1e-4 * exact


@pytest.mark.parametrize("mu", [1e-1, 1e-3, 1e-6])
def test_conservation_capacity_efficiency_at_fixed_mu(mu):
    C = attention_like(4, 7, 11, zeros=0.4)
    sol = flows.barrier_max_flow(C, mu)
    check_flow(C, sol)
    assert sol.mu == mu
    assert sol.residuals["decrement"] < 1e-5


def _barrier_reference(C, mu):
    """Same objective, solved by scipy's trust-region Newton on the null space of conservation."""
    from scipy.linalg import null_space
    from scipy.optimize import minimize

    L, n, _ = C.shape
    assert np.all(C > 0)
    U = C.sum()
    nodes = [("s",), ("t",)] + [(l, i) for l in range(L + 1) for i in range(n)]
    index = {v: k for k, v in enumerate(nodes)}
    edges, caps = [], []
    for k in range(L):
        for i in range(n):
            for j in range(n):
                edges.append(((k + 1, i), (k, j)))
                caps.append(C[k, i, j])
    for i in range(n):
        edges.append((("s",), (L, i)))
        caps.append(U)
    for j in range(n):
        edges.append(((0, j), ("t",)))
        caps.append(U)
    edges.append((("t",), ("s",)))
    caps.append(U)
    caps = np.array(caps)
    B = np.zeros((len(nodes), len(edges)))
    for e, (a, b) in enumerate(edges):
        B[index[a], e] += 1
        B[index[b], e] -= 1
    N = null_space(B)
    # strictly feasible start: delta on every internal edge, n·delta through terminals, n²·delta back
    delta = 0.25 * C.min()
    f0 = np.concatenate([np.full(L * n * n, delta), np.full(2 * n, n * delta), [n * n * delta]])
    assert np.allclose(B @ f0, 0)
    c = np.zeros(len(edges))
    c[-1] = -1.0

    def objective(z):
        f = f0 + N @ z
        if np.any(f <= 0) or np.any(f >= caps):
            return np.inf
        return c @ f - mu * np.sum(np.log(f) + np.log(caps - f))

    def grad(z):
        f = f0 + N @ z
        return N.T @ (c - mu / f + mu / (caps - f))

    def hess(z):
        f = f0 + N @ z
        return (N.T * (mu / f**2 + mu / (caps - f) ** 2)) @ N

    res = minimize(objective, np.zeros(N.shape[1]), jac=grad, hess=hess, method="trust-exact",
                   options={"gtol": 1e-12, "maxiter": 2000})
    f = f0 + N @ res.x
    return f[-1], f[: L * n * n].reshape(L, n, n), f[L * n * n + n: L * n * n + 2 * n]


@pytest.mark.parametrize("L, n, mu", [(1, 2, 0.05), (2, 3, 0.01), (2, 3, 1e-3), (3, 3, 0.02)])
def test_agrees_with_independent_solve_of_the_same_objective(L, n, mu):
    C = attention_like(L, n, 5, power=1.0)
    value, edge_flow, attributions = _barrier_reference(C, mu)
    sol = flows.barrier_max_flow(C, mu)
    assert sol.value == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(sol.edge_flow, edge_flow, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sol.attributions, attributions, rtol=1e-5, atol=1e-9)


def test_hand_computed_path_graph():
    # n = 1: a path; max flow = the smallest capacity
    C = np.array([[[0.7]], [[0.2]], [[0.9]]])
    sol = flows.barrier_max_flow(C, None)
    assert sol.value == pytest.approx(0.2, rel=1e-6) and sol.value < 0.2
    np.testing.assert_allclose(sol.edge_flow[:, 0, 0], sol.value)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), L=st.integers(1, 3))
def test_symmetry_permuting_tokens_permutes_attributions(seed, n, L):
    C = attention_like(L, n, seed, power=2.0)
    perm = np.random.default_rng(seed + 1).permutation(n)
    Cp = C[:, perm][:, :, perm]
    a = flows.barrier_max_flow(C, 1e-3)
    b = flows.barrier_max_flow(Cp, 1e-3)
    np.testing.assert_allclose(b.attributions, a.attributions[perm], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(b.edge_flow, a.edge_flow[:, perm][:, :, perm], rtol=1e-6, atol=1e-12)
    assert b.value == pytest.approx(a.value, rel=1e-9)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 5), L=st.integers(1, 3), data=st.data())
def test_nullity_token_without_capacity_gets_zero(seed, n, L, data):
    C = attention_like(L, n, seed, power=2.0)
    j = data.draw(st.integers(0, n - 1))
    C[0][:, j] = 0.0  # nothing flows into input token j
    sol = flows.barrier_max_flow(C, 1e-3)
    assert sol.attributions[j] == 0.0
    assert np.all(sol.edge_flow[0][:, j] == 0)
    assert sol.attributions.sum() == pytest.approx(sol.value, rel=1e-12)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 6))
def test_determinism_and_efficiency(seed, n):
    C = attention_like(2, n, seed)
    a = flows.barrier_max_flow(C, 1e-4)
    b = flows.barrier_max_flow(C.copy(), 1e-4)
    np.testing.assert_array_equal(a.edge_flow, b.edge_flow)
    np.testing.assert_array_equal(a.attributions, b.attributions)
    assert a.attributions.sum() == pytest.approx(a.value, rel=1e-12)


def test_torch_input_and_scale_equivariance():
    import torch

    C = attention_like(2, 4, 3)
    a = flows.barrier_max_flow(torch.tensor(C, dtype=torch.float32), 1e-3)
    b = flows.barrier_max_flow(1000.0 * C.astype(np.float32).astype(np.float64), 1.0)  # mu scales with C
    assert isinstance(a.value, float) and a.edge_flow.dtype == np.float64
    assert b.value == pytest.approx(1000.0 * a.value, rel=1e-9)


def test_subset_sources_and_unreachable_parts():
    C = attention_like(3, 5, 8)
    C[2][1, :] = 0.0  # top token 1 has no out-edges: a dead end
    sol = flows.barrier_max_flow(C, None, sources=[1])
    assert sol.value == 0.0 and np.all(sol.edge_flow == 0)
    sol = flows.barrier_max_flow(C, None, sources=[0, 1])
    assert sol.source_flow[1] == 0.0
    assert sol.value == pytest.approx(nx_value(C, [0, 1]), rel=1e-6)
    check_flow(C, sol)


def test_well_defined_degenerate_inputs():
    zero = flows.barrier_max_flow(np.zeros((2, 3, 3)), 1e-3)
    assert zero.value == 0.0 and zero.attributions.shape == (3,) and zero.iterations == 0
    C = attention_like(3, 4, 1)
    C[1] = 0.0  # an all-zero layer cuts every path
    assert flows.barrier_max_flow(C, None).value == 0.0
    tiny = np.full((1, 2, 2), 1e-300)  # scale-free: tiny capacities still solve
    assert flows.barrier_max_flow(tiny, None).value == pytest.approx(4e-300, rel=1e-6)


@pytest.mark.parametrize(
    "C, mu, sources, match",
    [
        (np.ones((3, 3)), 1e-3, None, "shape"),
        (np.ones((2, 3, 4)), 1e-3, None, "shape"),
        (np.ones((0, 3, 3)), 1e-3, None, "L = 0"),
        (np.ones((1, 0, 0)), 1e-3, None, "n = 0"),
        (np.full((1, 2, 2), np.nan), 1e-3, None, "non-finite"),
        (np.array([[[1.0, -0.1], [0.2, 0.3]]]), 1e-3, None, "negative"),
        (np.ones((1, 2, 2)), 0.0, None, "mu"),
        (np.ones((1, 2, 2)), -1.0, None, "mu"),
        (np.ones((1, 2, 2)), float("nan"), None, "mu"),
        (np.ones((1, 2, 2)), 1e-3, [], "sources"),
        (np.ones((1, 2, 2)), 1e-3, [5], "out of range"),
    ],
)
def test_bad_input_errors(C, mu, sources, match):
    with pytest.raises(XattrError, match=match):
        flows.barrier_max_flow(C, mu, sources)


def test_non_convergence_raises_with_residuals():
    C = attention_like(3, 6, 2)
    with pytest.raises(flows.FlowSolverError, match="did not converge") as info:
        flows.barrier_max_flow(C, 1e-6, max_iter=2)
    history = info.value.residuals["history"]
    assert len(history) >= 2 and all(len(h) == 2 for h in history)


# ----------------------------------------------------------------------------- rollout, attention flow


def test_rollout_equals_matrix_product():
    A = attention_like(4, 5, 3, power=1.0)
    for residual in (0.5, None, 0.0, 1.0, 0.3):
        r = 0.0 if residual is None else residual
        mixed = [r * np.eye(5) + (1 - r) * A[l] for l in range(4)]
        mixed = [m / m.sum(axis=1, keepdims=True) for m in mixed]
        expected = mixed[3] @ mixed[2] @ mixed[1] @ mixed[0]
        R = flows.rollout(A, residual)
        assert R.shape == (4, 5, 5) and R.dtype == np.float64
        np.testing.assert_allclose(R[-1], expected, rtol=1e-12)
        np.testing.assert_allclose(R[0], mixed[0], rtol=1e-12)
        np.testing.assert_allclose(R[-1].sum(axis=1), 1.0)


@pytest.mark.parametrize("residual", [0.5, None])
def test_attention_flow_equals_networkx_per_pair(residual):
    A = attention_like(3, 4, 9, power=2.0)
    values, bound = flows.attention_flow(A, residual, return_bound=True)
    r = 0.0 if residual is None else residual
    mixed = r * np.eye(4)[None] + (1 - r) * A
    mixed = mixed / mixed.sum(axis=2, keepdims=True)
    G = nx_graph(mixed)
    for i in range(4):
        for j in range(4):
            exact = nx.maximum_flow_value(G, (3, i), (0, j), flow_func=nx.algorithms.flow.edmonds_karp)
            assert values[i, j] - 1e-15 <= exact <= values[i, j] + bound[i, j] + 1e-15
            assert values[i, j] == pytest.approx(exact, rel=1e-6, abs=1e-9)
    assert bound.max() < 1e-7


def test_attention_flow_sources_subset_and_bad_input():
    A = attention_like(2, 3, 1)
    full = flows.attention_flow(A)
    part = flows.attention_flow(A, sources=[1])
    np.testing.assert_array_equal(part[1], full[1])
    assert np.all(part[[0, 2]] == 0)
    with pytest.raises(XattrError, match="residual"):
        flows.attention_flow(A, residual=1.5)
    with pytest.raises(XattrError, match="shape"):
        flows.rollout(np.ones((2, 3)))


# ----------------------------------------------------------------------------- information tensor


def test_information_tensor_definitions():
    rng = np.random.default_rng(0)
    attn = rng.random((2, 3, 4, 4))
    grad = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(flows.information_tensor(attn, None, "af"), attn.mean(axis=1))
    np.testing.assert_allclose(flows.information_tensor(attn, grad, "gf"), np.maximum(grad, 0).mean(axis=1))
    agf = flows.information_tensor(attn, grad)
    np.testing.assert_allclose(agf, np.maximum(attn * grad, 0).mean(axis=1))
    assert not np.allclose(agf, np.abs(attn * grad).mean(axis=1))  # ReLU, not absolute value
    with pytest.raises(XattrError, match="unknown information kind"):
        flows.information_tensor(attn, grad, "abs")
    with pytest.raises(XattrError, match="gradients"):
        flows.information_tensor(attn, None, "agf")
    with pytest.raises(XattrError, match="grad shape"):
        flows.information_tensor(attn, grad[:, :2])


def test_residual_capacity_mixing_matches_rollout_mixing_for_attention():
    A = attention_like(2, 4, 2, power=1.0)
    np.testing.assert_allclose(flows.mix_residual_capacity(A, 0.3), flows.mix_residual(A, 0.3), rtol=1e-12)
    G = 5.0 * A
    mixed = flows.mix_residual_capacity(G, 0.3)
    np.testing.assert_allclose(mixed.sum(axis=2), G.sum(axis=2))  # row totals kept


# ----------------------------------------------------------------------------- Explainer integration


def _state(ex):
    """Train mode, requires_grad flags, and hook count (after a warm-up forward: transformers 5
    installs its own output-recording hooks once, on the first call with output_attentions)."""
    ex.capture("warm up")
    return (
        ex.model.training,
        [p.requires_grad for p in ex.model.parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in ex.model.modules()),
    )


TARGETS = {
    "bert": [None, 0, "POSITIVE", (1, 0)],
    "llama": [None, 5, " the", (" the", " a")],
    "gpt2": [None, 5, " the", (" the", " a")],
}


@pytest.mark.parametrize("arch", ["bert", "llama", "gpt2"])
def test_flow_on_tiny_models_every_target_kind(tiny, arch):
    ex = tiny(arch)
    before = _state(ex)
    text = "the cat sat on a warm mat"
    n = ex.encode(text).n
    for target in TARGETS[arch]:
        f = ex.flow(text, target=target)
        assert isinstance(f, FlowResult) and f.info == "agf" and len(f.tokens) == n
        assert f.edge_flow.shape == (ex.n_layers, n, n) and f.node_flow.shape == (ex.n_layers + 1, n)
        assert f.capacities.shape == (ex.n_layers, n, n)
        if f.value > 0:
            assert f.attributions.sum() == pytest.approx(f.value, rel=1e-9)
            exact = nx.maximum_flow_value(f.to_networkx(), "s", "t")
            assert f.value == pytest.approx(exact, rel=1e-6) and f.value <= exact * (1 + 1e-12)
            assert f.upper_bound >= exact * (1 - 1e-12)
        expected_sources = list(range(n)) if arch == "bert" else [n - 1]
        assert f.sources == expected_sources
        if target is not None:
            assert f.target == (ex.resolve_target(target, ex.capture(text).logits, ex.readout_position(ex.encode(text))).public)
        back = FlowResult.from_json(f.to_json())
        np.testing.assert_allclose(back.edge_flow, f.edge_flow)
        assert back.upper_bound == pytest.approx(f.upper_bound) and back.solver == json.loads(json.dumps(f.solver))
    assert _state(ex) == before


@pytest.mark.parametrize("arch", ["bert", "llama", "gpt2"])
@pytest.mark.parametrize("method", ["rollout", "attention_flow", "gaf"])
def test_attribute_methods_on_tiny_models(tiny, arch, method):
    ex = tiny(arch)
    before = _state(ex)
    text = "a quiet film about loud people"
    a = ex.attribute(text, method=method)
    n = ex.encode(text).n
    assert isinstance(a, xa.Attribution) and a.method == method and a.scores.shape == (n,)
    assert np.all(np.isfinite(a.scores)) and np.all(a.scores >= -1e-12)
    if method == "rollout":
        assert a.scores.sum() == pytest.approx(1.0)  # rows of a rolled-out stochastic matrix
    if arch != "bert":
        assert a.options["sources"] == [n - 1]
        if method != "gaf":  # causal: the last token cannot reach beyond itself; all others feed it
            assert a.scores.sum() > 0
    a2 = ex.attribute(text, method=method, target=(" the", " a") if arch != "bert" else 1)
    if arch == "bert":
        assert a2.target == 1 and a2.target_label == "POSITIVE"
    else:
        assert isinstance(a2.target, tuple) and len(a2.target) == 2 and a2.target[0] != a2.target[1]
    assert _state(ex) == before


def test_attribute_matches_pure_functions(tiny):
    from xattr_lab.graphs.barrier import cpu_threads

    ex = tiny("bert")
    text = "a quiet film"
    with cpu_threads(1, "cpu"):  # as ex.flow captures: float32 sums in the same order
        cap = ex.capture(text)
    A = cap.attentions.double().numpy().mean(axis=1)
    roll = ex.attribute(text, method="rollout", sources="cls")
    np.testing.assert_allclose(roll.scores, flows.rollout(A, 0.5)[-1][0])
    af = ex.attribute(text, method="attention_flow", sources="cls", residual=None)
    np.testing.assert_allclose(af.scores, flows.attention_flow(A, None, sources=[0])[0])
    g = ex.attribute(text, method="gaf", info="af", mu=1e-3)
    sol = flows.barrier_max_flow(A, 1e-3)
    np.testing.assert_allclose(g.scores, sol.attributions, rtol=1e-12)
    with pytest.raises(XattrError, match="unknown"):
        ex.attribute(text, method="rollout", steps=3)
    with pytest.raises(XattrError, match="sources"):
        ex.attribute(text, method="gaf", sources="middle")
    with pytest.raises(XattrError, match="information kind"):
        ex.flow(text, info="xx")


def test_padding_is_masked_out(tiny):
    import torch

    from xattr_lab.core.session import Encoding

    ex = tiny("bert")
    enc = ex.encode("the cat sat")
    pad = ex.tokenizer.pad_token_id
    padded = Encoding(
        enc.text,
        torch.cat([enc.input_ids, torch.tensor([[pad, pad]])], dim=1),
        torch.cat([enc.attention_mask, torch.zeros((1, 2), dtype=enc.attention_mask.dtype)], dim=1),
        enc.tokens + ["[PAD]", "[PAD]"],
        enc.special_mask + [True, True],
    )
    plain = ex.flow(enc, info="af", mu=1e-3)
    masked = ex.flow(padded, info="af", mu=1e-3)
    n = enc.n
    assert masked.attributions.shape == (n + 2,) and np.all(masked.attributions[n:] == 0)
    assert np.all(masked.edge_flow[:, n:, :] == 0) and np.all(masked.edge_flow[:, :, n:] == 0)
    np.testing.assert_allclose(masked.attributions[:n], plain.attributions, rtol=1e-6)
    assert masked.sources == list(range(n))


def test_to_networkx_export():
    C = attention_like(2, 3, 4)
    sol = flows.barrier_max_flow(C, None)
    f = FlowResult(tokens=["a", "b", "c"], attributions=sol.attributions, edge_flow=sol.edge_flow, value=sol.value,
                   node_flow=sol.node_flow, capacities=C, sources=[0, 1, 2])
    G = FlowResult.from_json(f.to_json()).to_networkx()
    assert G.nodes[(0, 1)]["token"] == "b" and G.number_of_edges() == 2 * 9 + 3 + 3
    assert G.edges[(2, 0), (1, 2)]["capacity"] == pytest.approx(C[1, 0, 2])
    assert G.edges[(2, 0), (1, 2)]["flow"] == pytest.approx(sol.edge_flow[1, 0, 2])
    assert sum(G.edges[(0, j), "t"]["flow"] for j in range(3)) == pytest.approx(sol.value)
    assert nx.maximum_flow_value(G, "s", "t") == pytest.approx(sol.value, rel=1e-6)
    with pytest.raises(ValueError, match="capacities"):
        FlowResult(tokens=["a"], attributions=[1.0], edge_flow=np.ones((1, 1, 1)), value=1.0).to_networkx()


@pytest.mark.parametrize("info", ["gf", "agf", "af"])
def test_causal_lm_has_no_capacity_or_flow_on_future_edges(tiny, info):
    # issue 16: GF kept the gradients of masked (future) attention entries as capacities
    ex = tiny("gpt2")
    f = ex.flow("the cat sat on a warm mat", info=info)
    assert np.all(np.triu(f.capacities, 1) == 0)
    assert np.all(np.triu(f.edge_flow, 1) == 0)
    assert f.value > 0 and np.any(np.tril(f.capacities, -1) > 0)
    g = ex.attribute("the cat sat on a warm mat", method="gaf", info=info)
    np.testing.assert_allclose(g.scores, f.attributions, rtol=1e-9, atol=1e-15)
