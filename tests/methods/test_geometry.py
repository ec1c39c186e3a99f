"""Attention entropy, cone index, head patterns, and head_stats on tiny models."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xattr_lab as xa
from xattr_lab import geometry as G
from xattr_lab.errors import XattrError


# ---------------------------------------------------------------------------- entropy
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_uniform_attention_has_entropy_ln_n(n):
    attn = np.full((2, 3, n, n), 1.0 / n)
    assert np.allclose(G.attention_entropy(attn), math.log(n))


def test_one_hot_rows_have_zero_entropy_and_torch_input_works():
    attn = torch.eye(5).repeat(2, 4, 1, 1)
    out = G.attention_entropy(attn)
    assert out.shape == (2, 4) and out.dtype == np.float64 and np.allclose(out, 0.0)


def test_entropy_averages_only_valid_rows():
    n = 4
    attn = np.zeros((1, 1, n, n))
    attn[0, 0, :3, :3] = 1 / 3  # valid rows: uniform over the 3 valid keys
    attn[0, 0, 3] = 0.25  # a padding row, which must not count
    mask = [1, 1, 1, 0]
    assert G.attention_entropy(attn, mask)[0, 0] == pytest.approx(math.log(3))
    assert G.attention_entropy(attn)[0, 0] == pytest.approx((3 * math.log(3) + math.log(4)) / 4)


def test_entropy_matches_direct_formula_on_random_rows():
    rng = np.random.default_rng(0)
    attn = rng.dirichlet(np.ones(6), size=(2, 3, 6))
    expected = -(attn * np.log(attn)).sum(-1).mean(-1)
    assert np.allclose(G.attention_entropy(attn), expected)


@pytest.mark.parametrize("bad", [np.ones((2, 3, 4)), np.ones((1, 1, 3, 4)), np.full((1, 1, 2, 2), np.nan), -np.ones((1, 1, 2, 2))])
def test_entropy_bad_input(bad):
    with pytest.raises(XattrError):
        G.attention_entropy(bad)


# ---------------------------------------------------------------------------- cone index
def test_parallel_vectors_have_cone_index_n():
    X = np.outer([1.0, 2.0, 0.5, 7.0], [1.0, -2.0, 3.0])
    assert G.cone_index(X) == pytest.approx(4.0)
    assert G.cone_index(X, normalise=True) == pytest.approx(1.0)


def test_antipodal_pairs_have_cone_index_zero():
    rng = np.random.default_rng(1)
    V = rng.normal(size=(5, 8))
    X = np.concatenate([V, -3.0 * V])
    assert G.cone_index(X) == pytest.approx(0.0, abs=1e-12)


def test_orthogonal_vectors_and_zero_rows():
    assert G.cone_index(np.eye(4)) == pytest.approx(2.0)  # ‖(1,1,1,1)‖ = √4
    X = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    assert G.cone_index(X) == pytest.approx(2.0)  # the zero row has no direction
    assert G.cone_index(torch.tensor(X), normalise=True) == pytest.approx(2.0 / 3)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(0, 10_000))
def test_cone_index_is_bounded_and_rotation_invariant(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    value = G.cone_index(X)
    assert -1e-12 <= value <= n + 1e-9
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    assert G.cone_index(X @ Q) == pytest.approx(value, abs=1e-9)
    assert G.cone_index(X * rng.uniform(0.1, 5, size=(n, 1))) == pytest.approx(value, abs=1e-9)


def test_cone_indices_per_layer():
    hidden = np.stack([np.outer(np.ones(3), [1.0, 0.0]), np.array([[1.0, 0], [-1.0, 0], [0, 1.0]])])
    assert np.allclose(G.cone_indices(hidden), [3.0, 1.0])
    assert np.allclose(G.cone_indices(hidden, normalise=True), [1.0, 1 / 3])
    with pytest.raises(XattrError):
        G.cone_index(np.ones(3))


# ---------------------------------------------------------------------------- head patterns
N = 6
TOKENS = ["[CLS]", "the", "film", "is", ".", "[SEP]"]
SPECIAL = [True, False, False, False, False, True]


def _one_head(rows: np.ndarray) -> np.ndarray:
    return rows[None, None]


def _maps():
    eye = np.eye(N)
    previous = np.zeros((N, N))
    previous[0, 0] = 1
    previous[np.arange(1, N), np.arange(N - 1)] = 1
    following = np.zeros((N, N))
    following[np.arange(N - 1), np.arange(1, N)] = 1
    following[N - 1, N - 1] = 1
    first = np.zeros((N, N))
    first[:, 0] = 1
    sink = np.zeros((N, N))
    sink[:, N - 1] = 0.5
    sink[:, 4] = 0.5  # half on [SEP], half on "."
    sink[4] = 0
    sink[4, N - 1] = 1
    sink[N - 1] = 0
    sink[N - 1, 4] = 1
    uniform = np.full((N, N), 1 / N)
    mixed = np.full((N, N), 0.1 / (N - 2))
    for i in range(N):
        j = (i - 1) % N
        mixed[i, i] = mixed[i, j] = 0.45
    return {"diagonal": eye, "previous": previous, "next": following, "first": first, "sink": sink,
            "broad": uniform, "mixed": mixed}


@pytest.mark.parametrize("expected", ["diagonal", "previous", "next", "first", "sink", "broad", "mixed"])
def test_hand_built_maps_land_in_their_class(expected):
    attn = _one_head(_maps()[expected])
    assert G.head_patterns(attn, TOKENS, SPECIAL, causal=False) == [[expected]]


def test_all_heads_at_once_and_thresholds_in_one_place():
    maps = _maps()
    names = list(maps)
    attn = np.stack([maps[name] for name in names])[None]  # (1, 7, n, n)
    assert G.head_patterns(attn, TOKENS, SPECIAL) == [names]
    assert set(G.PATTERN_THRESHOLDS) == set(G.POSITIONAL) | {"broad"}
    assert set(G.PATTERNS) >= set(names)
    # raising the diagonal threshold above 1 reclassifies the identity head (low entropy -> mixed)
    assert G.head_patterns(_one_head(maps["diagonal"]), TOKENS, SPECIAL, thresholds={"diagonal": 1.1}) == [["mixed"]]


def test_causal_maps():
    n = 5
    uniform = np.tril(np.ones((n, n)))
    uniform /= uniform.sum(1, keepdims=True)
    previous = np.zeros((n, n))
    previous[0, 0] = 1
    previous[np.arange(1, n), np.arange(n - 1)] = 1
    first = np.zeros((n, n))
    first[:, 0] = 1
    attn = np.stack([uniform, previous, first])[None]
    tokens = ["The", "Ġfilm", "Ġis", "Ġgood", "Ġfun"]
    scores = G.pattern_scores(attn, tokens)
    assert np.allclose(scores["broad"][0, 0], 1.0)  # uniform over the keys each row can see
    assert G.head_patterns(attn, tokens) == [["broad", "previous", "first"]]


def test_punctuation_detection():
    assert G.is_punctuation(".") and G.is_punctuation("Ġ,") and G.is_punctuation("...") and G.is_punctuation("##!")
    assert not G.is_punctuation("film") and not G.is_punctuation("Ġ") and not G.is_punctuation("a.")


def test_pattern_counts():
    counts = G.pattern_counts([["broad", "first"], ["first", "mixed"]])
    assert counts["first"] == 2 and counts["broad"] == 1 and counts["diagonal"] == 0
    assert sum(counts.values()) == 4


# ---------------------------------------------------------------------------- head_stats on tiny models
TEXTS = ["A gripping, beautifully acted film.", "Dull and far too long; I left early."]


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_head_stats_on_tiny_models(tiny, arch):
    ex = tiny(arch)
    stats = ex.heads(TEXTS[0])
    L, H = ex.n_layers, ex.n_heads
    cap = ex.capture(TEXTS[0], hidden_states=True)
    n = len(cap.tokens)
    assert isinstance(stats, xa.HeadStats)
    assert stats.entropy.shape == (L, H) and stats.cone_index.shape == (L + 1,)
    assert np.allclose(stats.entropy, G.attention_entropy(cap.attentions))
    assert np.all(stats.entropy <= math.log(n) + 1e-6) and np.all(stats.entropy >= 0)
    assert np.allclose(stats.cone_index, [G.cone_index(h) for h in cap.hidden_states])
    assert np.allclose(stats.cone_index_normalised, stats.cone_index / n)
    assert len(stats.patterns) == L and all(len(row) == H for row in stats.patterns)
    assert all(name in G.PATTERNS for row in stats.patterns for name in row)
    assert stats.attentions.shape == (L, H, n, n)
    assert ex._state is None
    again = xa.HeadStats.from_json(stats.to_json())
    assert again.patterns == stats.patterns and np.allclose(again.entropy, stats.entropy)


def test_head_stats_averages_over_texts(tiny):
    ex = tiny("bert")
    one, two = ex.heads(TEXTS[0]), ex.heads(TEXTS[1])
    both = ex.heads(TEXTS)
    assert np.allclose(both.entropy, (one.entropy + two.entropy) / 2)
    assert np.allclose(both.cone_index, (one.cone_index + two.cone_index) / 2)
    assert np.allclose(both.cone_index_normalised, (one.cone_index_normalised + two.cone_index_normalised) / 2)
    assert both.texts == TEXTS and both.tokens == one.tokens
    mean_scores = {k: (np.asarray(one.options["pattern_scores"][k]) + np.asarray(two.options["pattern_scores"][k])) / 2
                   for k in one.options["pattern_scores"]}
    assert both.patterns == G.classify_patterns(mean_scores)
    assert G.head_stats(ex, TEXTS, max_map_tokens=3).attentions is None
    with pytest.raises(XattrError):
        ex.heads([])


# ---------------------------------------------------------------------------- cone-index floor
@pytest.mark.parametrize("n, d", [(4, 3), (16, 8), (30, 384)])
def test_cone_index_floor_is_the_rms_of_random_directions(n, d):
    rng = np.random.default_rng(n * d)
    values = np.array([G.cone_index(rng.normal(size=(n, d))) for _ in range(4000)])
    rms = math.sqrt(np.mean(values ** 2))
    assert rms == pytest.approx(G.cone_index_floor(n, normalise=False), rel=0.03)
    assert 0.85 < np.mean(values) / G.cone_index_floor(n, normalise=False) < 1.0 + 0.03  # the mean: just below
    normalised = np.array([G.cone_index(rng.normal(size=(n, d)), normalise=True) for _ in range(2000)])
    assert math.sqrt(np.mean(normalised ** 2)) == pytest.approx(G.cone_index_floor(n), rel=0.03)


def test_cone_index_floor_values_and_above_floor_scale():
    assert G.cone_index_floor(16) == pytest.approx(0.25) and G.cone_index_floor(16, normalise=False) == 4.0
    assert G.cone_index_floor(np.array([4, 25])).tolist() == pytest.approx([0.5, 0.2])
    assert G.cone_index_above_floor(0.25, 16) == pytest.approx(0.0)
    assert G.cone_index_above_floor(1.0, 16) == pytest.approx(1.0)
    assert G.cone_index_above_floor(0.0, 16) < 0
    assert math.isnan(G.cone_index_above_floor(1.0, 1))
    parallel = np.tile(np.arange(1.0, 6.0), (9, 1))
    assert G.cone_index_above_floor(G.cone_index(parallel, normalise=True), 9) == pytest.approx(1.0)
    with pytest.raises(XattrError):
        G.cone_index_floor(0)


def test_head_stats_report_the_floor_of_their_texts_and_name_the_taxonomy_ours(tiny):
    ex = tiny("bert")
    stats = ex.heads(TEXTS)
    lengths = [len(ex.encode(t).tokens) for t in TEXTS]
    assert stats.options["tokens_per_text"] == lengths
    assert stats.options["cone_index_floor"] == pytest.approx(np.mean([1 / math.sqrt(n) for n in lengths]))
    one = [ex.heads(t) for t in TEXTS]
    above = np.mean([G.cone_index_above_floor(s.cone_index_normalised, n) for s, n in zip(one, lengths)], axis=0)
    assert np.allclose(stats.options["cone_index_above_floor"], above)
    assert "not from a paper" in stats.options["taxonomy"] and stats.options["taxonomy"] == G.TAXONOMY
    again = xa.HeadStats.from_json(stats.to_json())
    assert again.options["cone_index_floor"] == pytest.approx(stats.options["cone_index_floor"])


def test_head_grid_shows_the_floor_in_the_layer_detail_and_the_cone_plot(tiny):
    from bokeh.models import Span

    from xattr_lab import widgets

    ex = tiny("bert")
    stats = ex.heads(TEXTS[0])
    view = widgets.view(stats, display=False)
    view.widget
    view.select_layer(1)
    floor = 1 / math.sqrt(len(stats.tokens))
    assert view.detail["cone_index_floor"] == pytest.approx(floor)
    assert f"{floor:.3f}" in view._detail_title.value and "floor" in view._detail_title.value
    figure = view._cone_figure()
    spans = [m for m in figure.center if isinstance(m, Span)]
    assert len(spans) == 1 and spans[0].location == pytest.approx(floor)
    assert any(getattr(m, "name", None) == "xattr-cone-index" for m in view.export_models())


def test_head_grid_png_draws_the_cone_index_with_its_floor(tiny):
    from xattr_lab import widgets
    from xattr_lab.widgets import export

    ex = tiny("bert")
    stats = ex.heads(TEXTS[0])
    view = widgets.view(stats, display=False)
    figure = view.png_figure()
    panels = [ax for ax in figure.axes if ax.get_ylabel().startswith("normalised")]
    assert len(panels) == 1
    curve, floor_line = panels[0].get_lines()
    assert np.allclose(curve.get_ydata(), stats.cone_index_normalised)
    floor = 1 / math.sqrt(len(stats.tokens))
    assert np.allclose(floor_line.get_ydata(), floor) and floor_line.get_linestyle() == "--"
    assert any(f"{floor:.2f}" in t.get_text() for t in panels[0].texts)
    assert view.png_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(export.draw_grid("circuit", [["#ffffff"]], [["a"]]).axes) == 1  # no cone: the grid alone
