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
from xattr_lab.evaluation.robustness import chance as RC
from xattr_lab.evaluation.robustness import experiment as RE
from xattr_lab.evaluation.robustness import perturbations as P
from xattr_lab.evaluation.robustness import report as RR
from xattr_lab.evaluation.robustness import search as RS
from xattr_lab.evaluation.robustness import stats as RSt
from xattr_lab.evaluation.robustness import text_edits as TE


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
    words = TE.Words.of(ex)
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
    state = TE.Text(ex, "It's an unbelievably dull film, isn't it?")
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
    mass = TE.topk_mass(attribution.scores, keep, np.asarray(info["top"]))
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
    from xattr_lab.evaluation.robustness import metrics

    assert xa.robustness is R
    modules = (metrics, P, RR, RC, RS, RE, RSt)
    for module in modules:
        for name in module.__all__:
            assert name in R.__all__ and getattr(R, name) is getattr(module, name), name
    assert sorted(R.__all__) == sorted(sum((list(m.__all__) for m in modules), []))
    assert callable(R.chance_overlap) and callable(R.chance_corrected)


def test_evaluation_modules_import_only_lower_layers():
    """docs/ARCHITECTURE.md: evaluation may use core, methods, results, errors, constants, graphs; no front end or
    facade."""
    import ast
    import inspect

    from xattr_lab.evaluation.robustness import metrics

    allowed = {"core", "methods", "results", "errors", "constants", "graphs", "evaluation"}
    for module in (metrics, P, RR, RC, RS, RE, RSt):
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


# ---------------------------------------------------------------------------- chance levels
def _exact_chance_by_enumeration(n, k, w):
    """E|N_w(A) ∩ B| / k over all pairs of k-subsets A, B of range(n) (brute force)."""
    subsets = list(itertools.combinations(range(n), k))
    total = 0.0
    for a in subsets:
        around = set().union(*(naive_window(i, (n,), w) for i in a))
        total += sum(len(around & set(b)) for b in subsets)
    return total / (len(subsets) ** 2 * k)


@pytest.mark.parametrize("n, k, w", [(6, 2, 1), (6, 2, 3), (7, 3, 5), (5, 1, 3), (8, 4, 3)])
def test_chance_overlap_is_exact_against_enumeration(n, k, w):
    assert R.chance_overlap(n, k, w) == pytest.approx(_exact_chance_by_enumeration(n, k, w), abs=1e-12)


def test_chance_overlap_w1_is_k_over_n_and_grows_with_w():
    for n, k in [(10, 1), (20, 3), (37, 8)]:
        assert R.chance_overlap(n, k) == pytest.approx(k / n)
        assert R.chance_overlap(n, k, 1) < R.chance_overlap(n, k, 3) < R.chance_overlap(n, k, 5)
    assert R.chance_overlap(10, 10, 1) == 1.0 and R.chance_overlap(9, 3, 17) == 1.0  # forced overlap


@pytest.mark.parametrize("shape, k, w", [(20, 3, 3), (25, 8, 5), ((4, 5), 3, 3), ((6, 6), 4, (3, 1))])
def test_chance_overlap_matches_simulation_of_random_rankings(shape, k, w):
    rng = np.random.default_rng(0)
    draws = 6000
    shape_tuple = (shape,) if np.isscalar(shape) else shape
    recall = [R.lens_recall(rng.random(shape_tuple), rng.random(shape_tuple), k, w) for _ in range(draws)]
    precision = [R.lens_precision(rng.random(shape_tuple), rng.random(shape_tuple), k, w) for _ in range(draws)]
    expected = R.chance_overlap(shape, k, w)
    for values in (recall, precision):
        assert abs(np.mean(values) - expected) < 4.5 * np.std(values) / np.sqrt(draws) + 1e-9


def test_chance_div_overlap_matches_simulation_with_topk_div():
    rng = np.random.default_rng(1)
    draws = 3000
    for n, k, w in [(20, 3, 3), (12, 4, 5)]:
        inter = [R.topk_div_intersection(rng.random(n), rng.random(n), k, w, fill=True) for _ in range(draws)]
        recall = [R.lens_div_recall(rng.random(n), rng.random(n), k, w, fill=True) for _ in range(draws)]
        for values, kind in ((inter, "intersection"), (recall, "recall")):
            expected = R.chance_div_overlap(n, k, w, kind)
            assert abs(np.mean(values) - expected) < 4.5 * np.std(values) / np.sqrt(draws) + 0.004, (n, k, w, kind)
    assert R.chance_div_overlap(15, 4, 1) == pytest.approx(4 / 15)
    # diverse sets are spread out, so two random ones meet less often than two random top-k sets
    assert R.chance_div_overlap(20, 5, 5) < R.chance_overlap(20, 5, 1) + 0.02


def test_chance_corrected_kappa_form_difference_form_and_errors():
    chance = R.chance_overlap(20, 3, 3)
    assert R.chance_corrected(chance, 20, 3, 3) == pytest.approx(0.0)
    assert R.chance_corrected(1.0, 20, 3, 3) == pytest.approx(1.0)
    assert R.chance_corrected(0.0, 20, 3, 3) == pytest.approx(-chance / (1 - chance))
    assert R.chance_corrected(0.5, 20, 3, 3, scaled=False) == pytest.approx(0.5 - chance)
    values = R.chance_corrected(np.array([0.2, 0.6]), 20, 3)
    assert values.shape == (2,) and values == pytest.approx((np.array([0.2, 0.6]) - 0.15) / 0.85)
    assert np.isnan(R.chance_corrected(1.0, 5, 5))
    for bad in [dict(n=0, k=1), dict(n=5, k=6), dict(n=5, k=2, w=2), dict(n=(2, 2, 2), k=1), dict(n=5, k=True)]:
        with pytest.raises(XattrError):
            R.chance_overlap(**bad)
    with pytest.raises(XattrError):
        R.chance_div_overlap((3, 3), 2, 3)


def test_window_counts_are_clipped_window_sizes():
    assert R.window_counts(5, 3).tolist() == [2, 3, 3, 3, 2]
    assert R.window_counts((2, 3), 3).reshape(2, 3).tolist() == [[4, 6, 4], [4, 6, 4]]


# ---------------------------------------------------------------------------- paired experiment arms
def _changed_positions(ex, original, text):
    a, b = ex.encode(original).input_ids[0].tolist(), ex.encode(text).input_ids[0].tolist()
    assert len(a) == len(b)
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def test_protected_positions_cover_top_tokens_and_top_words():
    scores = [0.0, 0.1, 0.9, -0.5, 0.4, 0.3, 0.0]
    special = [True, False, False, False, False, False, True]
    words = [None, 0, 1, 1, 2, 3, None]  # word 1 = tokens 2, 3: sum 0.4
    assert RS.protected_positions(scores, special, words, 1) == [2, 3]  # top token 2 -> word 1 (|0.4| ties word 2)
    assert RS.protected_positions(scores, special, words, 2) == [2, 3, 4]


@pytest.mark.parametrize("queries", [1, 3])
def test_neighbour_search_respects_protection_budget_and_queries(tiny, queries):
    ex = tiny("bert")
    text = TEXTS[0]
    eligible = TE.Text(ex, text).eligible()
    protect = eligible[:3]
    scores = ex.attribute(text, method="attention").scores
    keep = ~np.asarray(ex.encode(text).special_mask)
    objective = RS.objective_of(scores, keep, (1, 3), 3)
    pert = RS.neighbour_search(ex, text, "attention", budget=2, queries=queries, seed=4, protect=protect,
                               objective=objective, neighbours=8)
    assert 1 <= len(pert.positions) <= 2 and not set(pert.positions) & set(protect)
    assert sorted(_changed_positions(ex, text, pert.text)) == sorted(pert.positions)
    assert _predicted(ex, pert.text)[0] == _predicted(ex, text)[0]
    if queries == 1:
        assert pert.info["queries"] == 1  # unselected: only the final attribution
    else:
        assert len(pert.positions) <= pert.info["queries"] <= 2 * queries
    assert np.allclose(pert.info["scores"], ex.attribute(pert.text, method="attention").scores)
    again = RS.neighbour_search(ex, text, "attention", budget=2, queries=queries, seed=4, protect=protect,
                                objective=objective, neighbours=8)
    assert again.text == pert.text
    with pytest.raises(XattrError, match="objective"):
        RS.neighbour_search(ex, text, "attention", queries=2)


def test_search_picks_the_candidate_the_objective_prefers(tiny):
    """With one step, random search's pick is the best of its queries: never worse than the first."""
    ex = tiny("bert")
    text = TEXTS[1]
    scores = ex.attribute(text, method="attention").scores
    keep = ~np.asarray(ex.encode(text).special_mask)
    objective = RS.objective_of(scores, keep, (1, 2, 3), 3)
    first = RS.neighbour_search(ex, text, "attention", budget=1, queries=1, seed=7, neighbours=8)
    best = RS.neighbour_search(ex, text, "attention", budget=1, queries=4, seed=7, objective=objective, neighbours=8)
    assert objective(best.info["scores"]) <= objective(first.info["scores"])


def test_gradient_search_keeps_prediction_and_protection(tiny):
    ex = tiny("bert")
    text = TEXTS[0]
    original = ex.attribute(text, method="attention").scores
    keep = ~np.asarray(ex.encode(text).special_mask)
    protect = RS.protected_positions(original, ex.encode(text).special_mask, RE.word_ids(ex, text), 3)
    pert = RS.gradient_search(ex, text, "attention", budget=2, queries=2, seed=0, protect=protect,
                              objective=RS.objective_of(original, keep, (3,), 3), original=original, neighbours=8)
    assert pert.kind == "attack" and 1 <= len(pert.positions) <= 2 and not set(pert.positions) & set(protect)
    assert _predicted(ex, pert.text)[0] == _predicted(ex, text)[0]
    assert pert.info["queries"] <= 4 and pert.info["predicted"] == RS.predicted_label(ex.attribute(text, method="attention"))


def test_embedding_noise_has_the_asked_norm_spares_protected_rows_and_restores_weights(tiny, monkeypatch):
    ex = tiny("bert")
    text = TEXTS[1]
    weight = ex.model.get_input_embeddings().weight
    before = weight.detach().clone()
    encoding = ex.encode(text)
    ids = encoding.input_ids[0].tolist()
    protect = [i for i, s in enumerate(encoding.special_mask) if not s][:2]
    seen = {}
    real = type(ex).attribute

    def spy(self, text, method="sig", **options):
        seen["rows"] = self.model.get_input_embeddings().weight.detach().clone()
        return real(self, text, method=method, **options)

    monkeypatch.setattr(type(ex), "attribute", spy)
    pert = RS.embedding_noise(ex, text, "attention", norm=0.5, seed=1, protect=protect)
    assert torch.equal(weight.detach(), before)  # restored
    delta = seen["rows"] - before
    per_token = delta[torch.as_tensor(ids)]
    open_positions = [i for i, s in enumerate(encoding.special_mask) if not s and i not in protect]
    assert float(per_token[open_positions].norm()) == pytest.approx(0.5, rel=1e-4)  # Frobenius over tokens
    untouched = [i for i in range(len(ids)) if i not in open_positions and ids[i] not in {ids[j] for j in open_positions}]
    assert float(per_token[untouched].abs().max()) == 0.0
    assert pert.positions == open_positions and pert.info["queries"] == 1

    def broken(self, text, method="sig", **options):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(ex), "attribute", broken)
    with pytest.raises(RuntimeError):
        RS.embedding_noise(ex, text, "attention", scale=0.3, seed=2)
    assert torch.equal(weight.detach(), before)  # restored on error too


def test_run_text_record_and_cache_and_shards(tiny, tmp_path):
    ex = tiny("bert")
    config = RE.ExperimentConfig(model="tiny-bert", methods=("attention",), ks=(1, 3), ws=(1, 3), queries=2,
                                 neighbours=8)
    shard0 = RE.run_experiment(ex, TEXTS, config, cache=tmp_path, shard=(0, 2), progress=False)
    assert [r["index"] for r in shard0] == [0]
    both = RE.run_experiment(ex, TEXTS, config, cache=tmp_path, shard=(1, 2), progress=False)
    assert sorted(r["index"] for r in both) == [0, 1]  # shard 1 computed text 1 and read text 0
    again = RE.run_experiment(ex, TEXTS, config, cache=tmp_path, compute=False, progress=False)
    assert again == both or sorted(json_dump(r) for r in again) == sorted(json_dump(r) for r in both)
    record = again[0]
    assert set(record["arms"]) == set(RE.PERMISSIONS)
    for permission, arms in record["arms"].items():
        assert set(arms) == set(RE.ARMS)
        protected = RS.protected_positions(record["original"], record["special"], record["word_ids"], 3)
        for arm, result in arms.items():
            if not result["kept"]:
                assert result["reason"]
                continue
            assert len(result["scores"]) == len(record["original"])
            if arm != "noise":
                assert _predicted(ex, result["text"])[0] == _predicted(ex, record["text"])[0]
                if permission == "kept":
                    assert not set(result["positions"]) & set(protected)
        assert arms["search"]["queries"] <= config.budget * config.queries
    assert RE.ExperimentConfig(queries=3).key("m") != RE.ExperimentConfig(queries=4).key("m")


def json_dump(record):
    import json

    return json.dumps(record, sort_keys=True)


# ---------------------------------------------------------------------------- experiment statistics
def _record(index, original, arms, special=None, words=None):
    n = len(original)
    special = special or [False] * n
    words = words or list(range(n))
    return {"method": "m", "index": index, "original": list(original), "special": special, "word_ids": words,
            "arms": {"kept": {name: ({"kept": True, "scores": list(scores), "positions": [1], "queries": 1, "seconds": 0.1}
                                     if scores is not None else {"kept": False, "reason": "x", "positions": [],
                                                                 "queries": 0, "seconds": 0.0})
                              for name, scores in arms.items()}}}


def test_metric_frame_values_and_chance_match_the_metric_functions():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=12), rng.normal(size=12)
    frame = RSt.metric_frame([_record(0, a, {"attack": b, "search": a})], ks=(2, 3), ws=(1, 3), levels=("token",))
    row = lambda arm, metric, k, w: frame[(frame.arm == arm) & (frame.metric == metric) & (frame.k == k) & (frame.w == w)].iloc[0]
    assert row("attack", "topk", 3, 1).observed == pytest.approx(R.topk_intersection(np.abs(a), np.abs(b), 3))
    assert row("attack", "lens_recall", 2, 3).observed == pytest.approx(R.lens_recall(np.abs(a), np.abs(b), 2, 3))
    assert row("attack", "topk_div", 3, 3).chance == pytest.approx(R.chance_div_overlap(12, 3, 3))
    assert row("attack", "lens_precision", 3, 3).chance == pytest.approx(R.chance_overlap(12, 3, 3))
    assert row("search", "topk", 2, 1).observed == 1.0 and row("search", "kendall", 0, 0).observed == pytest.approx(1.0)


def test_word_level_map_sums_signed_token_scores():
    record = {"special": [True, False, False, False, True], "word_ids": [None, 0, 0, 1, None]}
    assert RSt.level_map(record, [9, 0.5, -0.2, -1.0, 9], "word").tolist() == pytest.approx([0.3, 1.0])
    assert RSt.level_map(record, [9, 0.5, -0.2, -1.0, 9], "token").tolist() == pytest.approx([0.5, 0.2, 1.0])


def test_summary_is_pooled_kappa_and_gaps_are_paired():
    rng = np.random.default_rng(5)
    records = []
    for i in range(30):
        a = rng.normal(size=10)
        records.append(_record(i, a, {"search": a + rng.normal(scale=0.1, size=10), "attack": rng.normal(size=10),
                                      "noise": None if i % 3 == 0 else a}))
    frame = RSt.metric_frame(records, ks=(3,), ws=(1, 3), levels=("token",))
    summary = RSt.summarise(frame, draws=300)
    cell = summary[(summary.arm == "attack") & (summary.metric == "topk")].iloc[0]
    values = frame[(frame.arm == "attack") & (frame.metric == "topk")]
    kappa = (values.observed.mean() - 0.3) / (1 - 0.3)
    assert cell.n == 30 and cell.raw == pytest.approx(values.observed.mean()) and cell.corrected == pytest.approx(kappa)
    assert cell.raw_lo <= cell.raw <= cell.raw_hi and cell.corrected_lo <= cell.corrected <= cell.corrected_hi
    noise = summary[(summary.arm == "noise") & (summary.metric == "topk")].iloc[0]
    assert noise.n == 20 and noise.raw == 1.0
    gaps = RSt.paired_gaps(frame, pairs=(("noise", "attack"),), draws=300)
    gap = gaps[(gaps.metric == "topk")].iloc[0]
    both = values[values.text % 3 != 0]
    assert gap.n == 20 and gap.gap == pytest.approx(1.0 - both.observed.mean())  # only texts where both were kept
    assert gap.gap_corrected == pytest.approx(gap.gap / 0.7)
    drops = RSt.drop_table(records)
    assert drops[drops.arm == "noise"].dropped.iloc[0] == pytest.approx(10 / 30)


def test_narrowing_is_positive_when_the_attack_only_shifts_top_tokens_by_one():
    """An 'attack' that moves each top token to a neighbour position: top-k sees a large gap to the
    unperturbed arm, LENS (w = 3) sees none, so LENS narrows the gap even after chance correction."""
    rng = np.random.default_rng(2)
    records = []
    for i in range(25):
        a = rng.random(20)
        shifted = np.roll(a, 1)
        records.append(_record(i, a, {"search": a, "attack": shifted}))
    frame = RSt.metric_frame(records, ks=(3,), ws=(1, 3), levels=("token",))
    table = RSt.narrowing(frame, pairs=(("search", "attack"),), metrics=("lens_precision",), draws=300)
    row = table[(table.k == 3) & (table.w == 3)].iloc[0]
    assert row.narrowed > 0.5 and row.narrowed_lo > 0


def test_method_gaps_are_paired_over_shared_texts_and_match_a_manual_difference():
    """Method A equals the original map on every text, method B is unrelated noise on half of them;
    the IG-style method ran on fewer texts: only the shared texts enter, and the corrected
    difference is the difference of the two pooled kappa values on those texts."""
    rng = np.random.default_rng(7)
    records = []
    for i in range(24):
        a = rng.normal(size=12)
        records.append({**_record(i, a, {"attack": a}), "method": "a"})
        if i < 16:
            records.append({**_record(i, a, {"attack": a if i % 2 else rng.normal(size=12)}), "method": "b"})
    frame = RSt.metric_frame(records, ks=(3,), ws=(1, 3), levels=("token",))
    table = RSt.method_gaps(frame, pairs=(("a", "b"), ("a", "absent")), draws=400)
    assert set(table.pair) == {"a − b"}
    row = table[(table.metric == "topk") & (table.k == 3)].iloc[0]
    part = frame[(frame.metric == "topk") & (frame.k == 3) & (frame.text < 16)]
    obs_a, obs_b = (part[part.method == m].sort_values("text").observed.to_numpy() for m in ("a", "b"))
    kappa = lambda x: (x.mean() - 0.25) / 0.75  # chance of top-3 among 12 tokens
    assert row.n == 16 and row.raw == pytest.approx(obs_a.mean() - obs_b.mean())
    assert row.corrected == pytest.approx(kappa(obs_a) - kappa(obs_b))
    assert row.corrected > 0 and row.corrected_lo > 0 and row.corrected_lo <= row.corrected_hi
    tau = table[table.metric == "kendall"].iloc[0]
    assert tau.corrected == pytest.approx(tau.raw)  # chance 0: its own correction

