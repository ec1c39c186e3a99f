"""Robustness metrics (hand-computed cases, naive references, properties) and text perturbations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xattr_lab import robustness as R
from xattr_lab.errors import XattrError
from xattr_lab.evaluation import perturbations as P
from xattr_lab.evaluation import robustness_report as RR


# ---------------------------------------------------------------------------- naive references
def naive_topk(a, k):
    flat = np.asarray(a, dtype=float).ravel()
    return sorted(range(flat.size), key=lambda i: (-flat[i], i))[:k]


def naive_window(index, shape, w):
    """Set of flat indices in the clipped window of width w around ``index`` (per-axis loops)."""
    coords = np.unravel_index(index, shape)
    half = w // 2
    ranges = [range(max(c - half, 0), min(c + half + 1, s)) for c, s in zip(coords, shape)]
    return {int(np.ravel_multi_index(point, shape)) for point in itertools.product(*ranges)}


def naive_lens_recall(a, b, k, w):
    shape = np.shape(a)
    around = set().union(*(naive_window(i, shape, w) for i in naive_topk(a, k)))
    return len(around & set(naive_topk(b, k))) / k


def naive_topk_div(a, k, w):
    shape = np.shape(a)
    pool = list(naive_topk(a, np.size(a)))
    picks = []
    while len(picks) < k and pool:
        best = pool[0]
        picks.append(best)
        blocked = naive_window(best, shape, w)
        pool = [i for i in pool if i not in blocked]
    return picks


# ---------------------------------------------------------------------------- top-k and ties
def test_topk_indices_orders_by_value_then_index():
    assert R.topk_indices([1, 3, 3, 2], 2).tolist() == [1, 2]
    assert R.topk_indices([1, 3, 3, 2], 3).tolist() == [1, 2, 3]
    assert R.topk_indices(np.zeros(5), 3).tolist() == [0, 1, 2]  # constant map: ties by index
    assert R.topk_indices([[0, 5], [5, 1]], 2).tolist() == [1, 2]  # flat row-major indices
    assert R.topk_indices([-np.inf, np.inf, 0.0], 1).tolist() == [1]


def test_topk_intersection_hand_case():
    a = [5, 4, 3, 2, 1, 0]
    assert R.topk_intersection(a, a, 2) == 1.0
    assert R.topk_intersection(a, [0, 1, 2, 3, 4, 5], 2) == 0.0
    assert R.topk_intersection(a, [4, 0, 5, 1, 2, 3], 2) == 0.5  # {0,1} vs {2,0}


# ---------------------------------------------------------------------------- LENS, 1-D
def test_lens_1d_hand_case_with_border_clipping():
    a = [5, 4, 3, 2, 1, 0]  # T_2(a) = {0, 1}
    b = [0, 1, 2, 3, 4, 5]  # T_2(b) = {5, 4}
    assert R.lens_recall(a, b, 2, 3) == 0.0  # N_3({0,1}) = {0,1,2}
    assert R.lens_recall(a, b, 2, 7) == 0.5  # N_7({0,1}) = {0..4} (clipped at 0): holds 4 only
    # N_7({5,4}) = {1..5} (clipped at 5, no wrap to 0): holds 1 of a's {0,1}
    assert R.lens_precision(a, b, 2, 7) == 0.5
    assert R.lens_precision(a, b, 2, 7) == R.lens_recall(b, a, 2, 7)


def test_lens_1d_does_not_wrap_around():
    a = np.array([9.0, 0, 0, 0, 0, 0])
    b = np.array([0.0, 0, 0, 0, 0, 9])
    assert R.lens_recall(a, b, 1, 3) == 0.0
    assert R.lens_precision(a, b, 1, 3) == 0.0
    assert R.lens_recall(a, b, 1, 11) == 1.0  # a wide enough window reaches across (clipped)


# ---------------------------------------------------------------------------- LENS, 2-D
def test_lens_2d_windows_are_per_axis_and_never_wrap_rows():
    a = np.zeros((4, 4))
    a[0, 3] = 1  # flat 3: end of row 0
    b = np.zeros((4, 4))
    b[1, 0] = 1  # flat 4: start of row 1, adjacent only in the flattened order
    assert R.lens_recall(a, b, 1, 3) == 0.0
    assert R.lens_recall(a.ravel(), b.ravel(), 1, 3) == 1.0  # the 1-D view does see them as neighbours
    c = np.zeros((4, 4))
    c[1, 2] = 1  # diagonal neighbour of (0, 3)
    assert R.lens_recall(a, c, 1, 3) == 1.0
    assert R.lens_recall(a, c, 1, (3, 1)) == 0.0  # window 3 rows x 1 column misses it
    assert R.lens_recall(a, c, 1, (1, 3)) == 0.0
    assert R.lens_recall(a, c, 1, (3, 3)) == 1.0


def test_lens_2d_hand_case():
    a = np.array([[9, 8, 0, 0, 0],
                  [0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 7]], dtype=float)  # T_3 = (0,0), (0,1), (2,4)
    b = np.array([[0, 0, 0, 0, 0],
                  [0, 0, 9, 0, 0],
                  [0, 0, 0, 8, 7]], dtype=float)  # T_3 = (1,2), (2,3), (2,4)
    assert R.topk_intersection(a, b, 3) == pytest.approx(1 / 3)
    # N_3(T(a)) covers rows 0-1 cols 0-2 and rows 1-2 cols 3-4: holds (1,2), (2,3), (2,4)
    assert R.lens_recall(a, b, 3, 3) == 1.0
    # N_3(T(b)) covers rows 0-2 cols 1-4 (from (1,2),(2,3),(2,4)): holds (0,1), (2,4), not (0,0)
    assert R.lens_precision(a, b, 3, 3) == pytest.approx(2 / 3)


def test_neighbourhood_mask():
    mask = R.neighbourhood([0, 8], (3, 3), 3)
    expected = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    assert (mask == expected).all()
    assert R.neighbourhood([4], 9, 5).tolist() == [False, False, True, True, True, True, True, False, False]


# ---------------------------------------------------------------------------- top-k-div
def test_topk_div_1d_picks():
    a = [10, 9, 8, 7, 6, 5, 4]
    assert R.topk_div(a, 2, 3).tolist() == [0, 2]  # the second diverse pick is taken, not skipped
    assert R.topk_div(a, 3, 3).tolist() == [0, 2, 4]
    assert R.topk_div(a, 2, 5).tolist() == [0, 3]
    assert R.topk_div(a, 3, 1).tolist() == R.topk_indices(a, 3).tolist()


def test_topk_div_does_not_wrap():
    a = [10, 1, 1, 1, 9]
    assert R.topk_div(a, 2, 3).tolist() == [0, 4]
    grid = np.zeros((3, 3))
    grid[0, 2], grid[1, 0], grid[2, 2] = 9, 8, 7  # (1,0) is flat 3, next to flat 2 in 1-D only
    assert R.topk_div(grid, 2, 3).tolist() == [2, 3]
    assert R.topk_div(grid.ravel(), 2, 3).tolist() == [2, 8]  # the 1-D view blocks flat 3


def test_topk_div_exhausted_pool():
    with pytest.raises(XattrError, match="fill=True"):
        R.topk_div([4, 3, 2, 1], 3, 3)
    assert R.topk_div([4, 3, 2, 1], 3, 3, fill=True).tolist() == [0, 2, 1]


def test_div_metrics_hand_case():
    a = [10, 9, 8, 7, 6, 5, 4]  # D_2(a, w=3) = [0, 2]
    b = [4, 5, 6, 7, 8, 9, 10]  # D_2(b, w=3) = [6, 4]
    assert R.topk_div_intersection(a, b, 2, 3) == 0.0
    assert R.lens_div_recall(a, b, 2, 3) == 0.0  # N_3({0,2}) = {0,1,2,3}
    assert R.lens_div_recall(a, b, 2, 5) == 0.5  # N_5({0,2}) = {0..4} holds 4
    assert R.lens_div_precision(a, b, 2, 5) == 0.5  # N_5({6,4}) = {2..6} holds 2
    assert R.topk_div_intersection(a, a, 3, 3) == 1.0


# ---------------------------------------------------------------------------- correlations
def test_rank_correlations_match_scipy_and_constant_maps_give_nan():
    from scipy.stats import kendalltau, spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert R.spearman(a, b) == pytest.approx(spearmanr(a, b)[0])
    assert R.kendall(a, b) == pytest.approx(kendalltau(a, b)[0])
    assert R.spearman(a, a) == pytest.approx(1.0)
    assert R.kendall(a.reshape(4, 5), -a.reshape(4, 5)) == pytest.approx(-1.0)
    assert np.isnan(R.spearman(np.ones(5), a[:5]))
    assert np.isnan(R.kendall(a[:5], np.ones(5)))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call", [
    lambda: R.topk_intersection([1, 2, 3], [1, 2], 1),
    lambda: R.lens_recall(np.ones((2, 3)), np.ones((3, 2)), 1, 1),
    lambda: R.topk_intersection([1, 2, 3], [1, 2, 3], 4),
    lambda: R.topk_intersection([1, 2, 3], [1, 2, 3], 0),
    lambda: R.topk_intersection([1, 2, 3], [1, 2, 3], 1.5),
    lambda: R.lens_recall([1, 2, 3], [1, 2, 3], 1, 2),
    lambda: R.lens_recall([1, 2, 3], [1, 2, 3], 1, 0),
    lambda: R.lens_precision([1, 2, 3], [1, 2, 3], 1, -3),
    lambda: R.lens_recall(np.ones((2, 2)), np.ones((2, 2)), 1, (3, 3, 3)),
    lambda: R.topk_div([1, 2, 3], 1, 4),
    lambda: R.topk_intersection([1, np.nan, 3], [1, 2, 3], 1),
    lambda: R.spearman([1, 2, 3], [np.nan, 2, 3]),
    lambda: R.topk_indices(np.ones((2, 2, 2)), 1),
    lambda: R.topk_indices([], 1),
])
def test_bad_input_raises_clear_errors(call):
    with pytest.raises(XattrError):
        call()


def test_error_messages_name_the_fix():
    with pytest.raises(XattrError, match="1 <= k <= 3"):
        R.topk_intersection([1, 2, 3], [3, 2, 1], 5)
    with pytest.raises(XattrError, match="odd positive"):
        R.lens_recall([1, 2, 3], [3, 2, 1], 1, 2)
    with pytest.raises(XattrError, match="same shape"):
        R.lens_recall([1, 2, 3], [3, 2], 1, 1)


def test_accepts_torch_and_returns_floats():
    a = torch.tensor([3.0, 1.0, 2.0])
    b = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    value = R.lens_recall(a, b, 1, 3)
    assert isinstance(value, float) and value == 1.0
    assert R.topk_div(a, 2, 1).dtype == np.int64


# ---------------------------------------------------------------------------- properties
def _maps(shape):
    # small integer values make ties common
    return arrays(np.float64, shape, elements=st.integers(-3, 3).map(float))


@st.composite
def map_pairs(draw):
    ndim = draw(st.sampled_from([1, 2]))
    shape = (draw(st.integers(1, 12)),) if ndim == 1 else (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    a, b = draw(_maps(shape)), draw(_maps(shape))
    k = draw(st.integers(1, a.size))
    w = draw(st.sampled_from([1, 3, 5]))
    return a, b, k, w


@settings(max_examples=60, deadline=None)
@given(map_pairs())
def test_lens_properties_and_naive_reference(case):
    a, b, k, w = case
    inter = R.topk_intersection(a, b, k)
    recall, precision = R.lens_recall(a, b, k, w), R.lens_precision(a, b, k, w)
    assert 0.0 <= inter <= recall <= 1.0
    assert inter <= precision <= 1.0
    assert precision == R.lens_recall(b, a, k, w)
    assert R.lens_recall(a, b, k, 1) == inter
    assert recall == pytest.approx(naive_lens_recall(a, b, k, w))
    assert R.topk_indices(a, k).tolist() == naive_topk(a, k)


@settings(max_examples=60, deadline=None)
@given(map_pairs())
def test_topk_div_matches_naive_greedy(case):
    a, _, k, w = case
    reference = naive_topk_div(a, k, w)
    if len(reference) < k:
        with pytest.raises(XattrError):
            R.topk_div(a, k, w)
        filled = R.topk_div(a, k, w, fill=True)
        assert filled[: len(reference)].tolist() == reference and len(set(filled.tolist())) == k
    else:
        picks = R.topk_div(a, k, w)
        assert picks.tolist() == reference
        # no pick lies in the window of an earlier pick
        for i, p in enumerate(picks):
            for q in picks[:i]:
                assert p not in naive_window(int(q), a.shape, w)


def test_lens_on_large_maps_matches_naive():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 50)), rng.normal(size=(40, 50))
    assert R.lens_recall(a, b, 100, 5) == pytest.approx(naive_lens_recall(a, b, 100, 5))
    x, y = rng.normal(size=4096), rng.normal(size=4096)
    assert R.lens_precision(x, y, 200, 7) == pytest.approx(naive_lens_recall(y, x, 200, 7))


# ---------------------------------------------------------------------------- perturbations
TEXTS = [
    "It's a gripping, beautifully acted film; the story is clever and the music is great!",
    "A dull, lifeless movie with a plot that goes nowhere and actors who seem bored.",
]


def _predicted(ex, text):
    cap = ex.capture(text)
    position = ex.readout_position(cap.encoding)
    return int(cap.logits.argmax()), position


def _check_perturbation(ex, pert, budget):
    before = ex.encode(pert.original)
    after = ex.encode(pert.text)
    assert len(after.tokens) == len(before.tokens)
    differ = [i for i, (x, y) in enumerate(zip(before.input_ids[0].tolist(), after.input_ids[0].tolist())) if x != y]
    assert sorted(differ) == sorted(pert.positions)
    assert 1 <= len(pert.positions) <= budget
    assert not any(before.special_mask[i] for i in pert.positions)
    assert _predicted(ex, pert.text)[0] == _predicted(ex, pert.original)[0]
    assert pert.replaced == [before.tokens[i] for i in pert.positions]
    assert pert.replacements == [after.tokens[i] for i in pert.positions]


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("kind", ["random", "neighbour"])
def test_substitutions_keep_prediction_and_respect_budget_and_seed(tiny, arch, kind):
    ex = tiny(arch)
    options = {"candidates": 8} if kind == "random" else {"neighbours": 8}
    one = R.perturb(ex, TEXTS[0], kind, budget=1, seed=3, **options)
    _check_perturbation(ex, one, 1)
    pert = R.perturb(ex, TEXTS[0], kind, budget=3, seed=3, **options)
    _check_perturbation(ex, pert, 3)
    again = R.perturb(ex, TEXTS[0], kind, budget=3, seed=3, **options)
    assert again.text == pert.text and again.positions == pert.positions
    other = R.perturb(ex, TEXTS[0], kind, budget=3, seed=4, **options)
    assert other.text != pert.text  # the seed matters
    assert ex._state is None and not ex.model.training  # restored: no hooks or state left behind


def test_neighbour_substitution_uses_nearest_embeddings(tiny):
    ex = tiny("bert")
    words = P._Words.of(ex)
    table = ex.model.get_input_embeddings().weight.detach()
    token_id = ex.tokenizer.convert_tokens_to_ids("film")
    near = words.nearest(token_id, table[token_id], 5)
    cosine = torch.nn.functional.cosine_similarity(table[torch.as_tensor(words.ids)], table[token_id][None], dim=1)
    cosine[words.index[token_id]] = -2
    assert near.tolist() == words.ids[torch.topk(cosine, 5).indices.numpy()].tolist()
    pert = R.neighbour_substitution(ex, TEXTS[1], budget=1, seed=0, neighbours=8)
    position = pert.positions[0]
    old = ex.encode(pert.original).input_ids[0, position].item()
    new = ex.encode(pert.text).input_ids[0, position].item()
    assert new in words.nearest(old, table[old], 8).tolist()


def test_substitution_never_touches_subword_or_contraction_pieces(tiny):
    ex = tiny("bert")
    state = P._Text(ex, "It's an unbelievably dull film, isn't it?")
    tokens = state.encoding.tokens
    chosen = [tokens[i] for i in state.eligible()]
    assert "s" not in chosen and "t" not in chosen and not any(t.startswith("##") for t in chosen)
    assert "dull" in chosen and "film" in chosen


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_attack_keeps_prediction_and_reports_mass(tiny, arch):
    ex = tiny(arch)
    pert = R.attribution_attack(ex, TEXTS[0], method="attention", budget=2, seed=0, k=3, candidates=3)
    _check_perturbation(ex, pert, 2)
    info = pert.info
    assert len(info["topk_mass"]) == len(pert.positions) + 1
    attribution = ex.attribute(pert.text, method="attention")
    keep = ~np.asarray(ex.encode(pert.text).special_mask)
    mass = P._topk_mass(attribution.scores, keep, np.asarray(info["top"]))
    assert mass == pytest.approx(info["topk_mass"][-1])
    again = R.attribution_attack(ex, TEXTS[0], method="attention", budget=2, seed=0, k=3, candidates=3)
    assert again.text == pert.text


def test_bad_budget_and_kind(tiny):
    ex = tiny("bert")
    with pytest.raises(XattrError):
        R.random_substitution(ex, TEXTS[0], budget=0)
    with pytest.raises(XattrError, match="unknown perturbation"):
        R.perturb(ex, TEXTS[0], "swap")


# ---------------------------------------------------------------------------- report
def _fake_method(monkeypatch, name: str, module: str) -> None:
    """Register an attribution method ``name`` implemented (or not) by ``module``, for this test only."""
    from xattr_lab.methods import registry

    monkeypatch.setitem(registry._BY_NAME, name, registry.MethodSpec(name, "attribution", module, "test stub"))
    monkeypatch.setattr(registry, "ATTRIBUTION_METHODS", (*registry.ATTRIBUTION_METHODS, name))


def test_report_on_tiny_bert_with_attention_and_an_unavailable_method(tiny, monkeypatch):
    _fake_method(monkeypatch, "fake", "xattr_lab._no_such_module_for_tests")
    ex = tiny("bert")
    table = R.robustness_report(ex, TEXTS, methods=("attention", "fake"), perturbations=("random", "neighbour", "attack"),
                                k=3, w=3, budget=2, seed=0, progress=False, attack_options={"candidates": 2})
    assert list(table["method"]) == ["attention"] * 3 + ["fake"] * 3
    rows = table[table.method == "attention"]
    assert (rows["n"] == 2).all()
    for name in ("topk_intersection", "lens_recall", "lens_precision"):
        assert ((rows[name] >= 0) & (rows[name] <= 1)).all()
        assert ((rows[f"{name}_lo"] <= rows[name] + 1e-12) & (rows[name] <= rows[f"{name}_hi"] + 1e-12)).all()
    assert (rows["lens_recall"] >= rows["topk_intersection"] - 1e-12).all()
    fake = table[table.method == "fake"]
    assert fake["note"].str.contains("unavailable").all() and (fake["n"] == 0).all()
    assert table.attrs["k"] == 3


def test_report_values_match_a_manual_computation(tiny):
    ex = tiny("bert")
    table = R.robustness_report(ex, TEXTS[:1], methods=("attention",), perturbations=("random",), k=3, w=3,
                                budget=2, seed=5, progress=False)
    pert = R.random_substitution(ex, TEXTS[0], budget=2, seed=5)
    special = np.asarray(ex.encode(TEXTS[0]).special_mask)
    a = np.abs(ex.attribute(TEXTS[0], method="attention").scores[~special])
    b = np.abs(ex.attribute(pert.text, method="attention").scores[~special])
    row = table.iloc[0]
    assert row["topk_intersection"] == pytest.approx(R.topk_intersection(a, b, 3))
    assert row["lens_recall"] == pytest.approx(R.lens_recall(a, b, 3, 3))
    assert row["lens_precision"] == pytest.approx(R.lens_precision(a, b, 3, 3))
    assert row["changed"] == pert.changed


def test_method_unavailable_reports_missing_modules_and_functions(monkeypatch):
    assert R.method_unavailable("attention") is None
    _fake_method(monkeypatch, "fake", "xattr_lab._no_such_module_for_tests")
    assert "cannot be imported" in R.method_unavailable("fake")
    _fake_method(monkeypatch, "fake2", "xattr_lab.results")
    assert "not implemented" in R.method_unavailable("fake2")
    with pytest.raises(XattrError):
        R.method_unavailable("nope")


def test_attack_reuses_the_original_attribution_and_returns_final_scores(tiny):
    ex = tiny("bert")
    base = ex.attribute(TEXTS[1], method="attention")
    pert = R.attribution_attack(ex, TEXTS[1], method="attention", budget=1, k=2, candidates=2, original=base)
    fresh = R.attribution_attack(ex, TEXTS[1], method="attention", budget=1, k=2, candidates=2)
    assert pert.text == fresh.text
    assert np.allclose(pert.info["scores"], ex.attribute(pert.text, method="attention").scores)
    with pytest.raises(XattrError, match="scores"):
        R.attribution_attack(ex, TEXTS[1], method="attention", budget=1, original=ex.attribute(TEXTS[0], method="attention"))


def test_mean_ci_matches_student_t_and_is_clipped():
    from scipy import stats

    values = [0.2, 0.5, 0.9, 0.4]
    mean, lo, hi = RR._mean_ci(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and (lo, hi) == pytest.approx(expected)
    assert RR._mean_ci([1.0, 1.0, 0.0], bounds=(0.0, 1.0))[2] == 1.0
    assert np.isnan(RR._mean_ci([0.5])[1]) and np.isnan(RR._mean_ci([])[0])


# ---------------------------------------------------------------------------- layout
def test_facade_reexports_every_public_name_of_the_three_layers():
    import xattr_lab as xa
    from xattr_lab.evaluation import robustness as metrics

    assert xa.robustness is R
    for module in (metrics, P, RR):
        for name in module.__all__:
            assert name in R.__all__ and getattr(R, name) is getattr(module, name), name
    assert sorted(R.__all__) == sorted(metrics.__all__ + P.__all__ + RR.__all__)


def test_evaluation_modules_import_only_lower_layers():
    """docs/ARCHITECTURE.md: evaluation may use core, methods, results, errors, graphs; no front end or facade."""
    import ast
    import inspect

    from xattr_lab.evaluation import robustness as metrics

    allowed = {"core", "methods", "results", "errors", "graphs", "evaluation"}
    for module in (metrics, P, RR):
        package = module.__name__.split(".")[:-1]
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "xattr_lab":
                    assert len(parts) > 1 and parts[1] in allowed, (module.__name__, name)
