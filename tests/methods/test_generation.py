"""ex.attribute_generation: greedy/teacher-forced generation, one attribution row per generated token."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from xattr_lab.errors import InputError, ModelError
from xattr_lab.methods.gradients import Cancelled
from xattr_lab.results import GenerationResult, Result

PROMPT = "The film was"


def _model_greedy(ex, prompt, n):
    ids = ex.encode(prompt).input_ids
    with torch.no_grad():
        out = ex.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                                pad_token_id=ex.tokenizer.eos_token_id)
    return out[0, ids.shape[1]:].tolist()


def _logit(ex, ids, token, baseline_id=None, special=()):
    """F at the last position of ``ids`` for ``token``, from plain embeddings (optionally the baseline's)."""
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        x = ex.model.get_input_embeddings()(ids_t)
        if baseline_id is not None:
            row = ex.model.get_input_embeddings()(torch.tensor([[baseline_id]]))[0, 0]
            for i in range(len(ids)):
                if i not in special:
                    x[0, i] = row
        return float(ex.model(inputs_embeds=x, attention_mask=torch.ones_like(ids_t)).logits[0, -1, token])


def _check_rows(ex, result: GenerationResult):
    p, T = result.prompt_length, len(result.generated)
    assert result.matrix.shape == (T, p + T) == result.raw.shape and len(result.tokens) == p + T
    for t in range(T):  # row t sees positions 0 .. p+t-1 only
        assert np.all(np.isfinite(result.matrix[t, :p + t])) and np.all(np.isnan(result.matrix[t, p + t:]))


def test_greedy_ig_rows_on_tiny_gpt2(tiny):
    ex = tiny("gpt2")
    result = ex.attribute_generation(PROMPT, max_new_tokens=3, method="ig", steps=16)
    assert result.generated_ids == _model_greedy(ex, PROMPT, 3)
    assert result.generated == [ex.tokenizer.decode([i]) for i in result.generated_ids]
    _check_rows(ex, result)
    ids = ex.encode(PROMPT).input_ids[0].tolist() + result.generated_ids
    special = {i for i, s in enumerate(ex.encode(PROMPT).special_mask) if s}
    for t, row in enumerate(result.options["rows"]):  # completeness, against independent forward passes
        m = result.prompt_length + t
        f_x = _logit(ex, ids[:m], result.generated_ids[t])
        baseline = ex.tokenizer.convert_tokens_to_ids(row["baseline_token"])
        f_base = _logit(ex, ids[:m], result.generated_ids[t], baseline, special)
        assert row["f_x"] == pytest.approx(f_x, rel=1e-4, abs=1e-5)
        assert result.raw[t, :m].sum() == pytest.approx(f_x - f_base, rel=0.02, abs=1e-3)
    again = Result.from_json(result.to_json())
    assert isinstance(again, GenerationResult) and again.generated == result.generated
    np.testing.assert_array_equal(np.isnan(again.matrix), np.isnan(result.matrix))
    row = again.row(1)
    assert row.tokens == result.tokens[:result.prompt_length + 1] and row.target == result.generated_ids[1]


@pytest.mark.parametrize("method", ["attention", "rollout", "sig", "gaf"])
def test_other_methods_and_teacher_forcing(tiny, method):
    ex = tiny("gpt2")
    options = {"steps": 4} if method == "sig" else {}
    result = ex.attribute_generation(PROMPT, method=method, target=" a good one", **options)
    assert result.generated_ids == ex.tokenizer(" a good one", add_special_tokens=False)["input_ids"]
    assert result.options["mode"] == "teacher_forced" and result.target == " a good one"
    _check_rows(ex, result)
    if method in ("attention", "rollout"):  # each row is a distribution over the earlier tokens
        np.testing.assert_allclose(np.nansum(result.matrix, axis=1), 1.0, atol=1e-6)


def test_streaming_rows_and_cancel(tiny):
    ex = tiny("gpt2")
    seen = []

    def callback(partial):
        seen.append(partial.options["rows_done"])
        assert np.all(np.isnan(partial.matrix[partial.options["rows_done"]:]))
        return len(seen) < 2

    with pytest.raises(Cancelled, match="after 2 of 3"):
        ex.attribute_generation(PROMPT, max_new_tokens=3, method="attention", callback=callback)
    assert seen == [1, 2]


def test_bad_requests(tiny):
    with pytest.raises(ModelError, match="causal"):
        tiny("bert").attribute_generation(PROMPT, method="attention")
    ex = tiny("gpt2")
    with pytest.raises(InputError, match="attention_flow"):
        ex.attribute_generation(PROMPT, method="attention_flow")
    with pytest.raises(InputError, match="max_new_tokens"):
        ex.attribute_generation(PROMPT, max_new_tokens=0)
    with pytest.raises(InputError, match="granularity"):
        ex.attribute_generation(PROMPT, method="attention", granularity="word")
    with pytest.raises(TypeError, match="target"):
        ex.attribute_generation(PROMPT, target=3)


@pytest.mark.slow
def test_smollm2_greedy_generation_rows_and_ig_reporting(smollm):
    """Greedy tokens = model.generate's; attention rows are distributions over earlier tokens; IG rows
    report their completeness honestly (32 nodes are not enough on SmolLM2; see docs/guides/gradients.md on convergence)."""
    prompt = "The capital of France is"
    result = smollm.attribute_generation(prompt, max_new_tokens=4, method="attention")
    assert result.generated_ids == _model_greedy(smollm, prompt, 4)
    _check_rows(smollm, result)
    np.testing.assert_allclose(np.nansum(result.matrix, axis=1), 1.0, atol=1e-5)
    with warnings.catch_warnings():  # rows that did not converge warn (once, for all rows)
        warnings.simplefilter("ignore", RuntimeWarning)
        ig = smollm.attribute_generation(prompt, max_new_tokens=2, method="ig", steps=32)
    assert ig.generated_ids == result.generated_ids[:2]
    _check_rows(smollm, ig)
    for t, row in enumerate(ig.options["rows"]):
        m = ig.prompt_length + t
        change = row["f_x"] - row["f_baseline"]
        error = abs(ig.raw[t, :m].sum() - change) / abs(change)
        assert row["relative_completeness_error"] == pytest.approx(error, rel=1e-6)
        assert row["converged"] == (error <= 0.05)


# ---------------------------------------------------------------------------- the view (no model)
def _hand_result(rows_done=3):
    matrix = np.full((3, 6), np.nan)
    for t in range(rows_done):
        matrix[t, :3 + t] = np.arange(3 + t) - 1.0
    return GenerationResult(tokens=["The", "Ġfilm", "Ġwas", "Ġgood", "Ġand", "Ġfun"], generated=[" good", " and", " fun"],
                            matrix=matrix, generated_ids=[10, 11, 12], prompt_length=3, method="ig",
                            options={"rows_done": rows_done, "mode": "greedy"}, prompt="The film was", model="m")


def test_generation_view_focus_exports_and_bundle(tmp_path):
    from xattr_lab import widgets
    from xattr_lab.constants import MIME_TYPE
    from xattr_lab.widgets.views.generation_view import GenerationView, matrix_data

    result = _hand_result()
    view = widgets.view(result, display=False)
    assert isinstance(view, GenerationView) and view.focus == 2  # the last row done
    data = matrix_data(result, 2.0)
    assert len(data["x"]) == 3 + 4 + 5 and max(x - 3 - y for x, y in zip(data["x"], data["y"])) < 0  # earlier only
    view.widget
    view.select_row(0)
    assert view.strip.result.tokens == ["The", "Ġfilm", "Ġwas"] and view._marker.data["y"] == [0]
    np.testing.assert_array_equal(view.strip.result.scores, [-1.0, 0.0, 1.0])
    view.to_html(tmp_path / "g.html")
    view.to_png(tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000 and "xattr-generation" in (tmp_path / "g.html").read_text()
    bundle = widgets.mime_bundle(result)
    assert Result.from_dict(bundle[MIME_TYPE]).generated == result.generated and "image/png" in bundle


def test_generation_view_streams_rows_and_cancels():
    from xattr_lab.widgets.views.generation_view import GenerationView

    class FakeExplainer:  # calls back like ex.attribute_generation: one partial result per row
        def attribute_generation(self, prompt, callback=None, **kwargs):
            for done in (1, 2, 3):
                if callback(_hand_result(done)) is False:
                    raise type("Cancelled", (RuntimeError,), {})("stopped")
            return _hand_result(3)

    view = GenerationView()
    view.widget
    shown = []
    original = view.update
    view.update = lambda r: (shown.append(r.options["rows_done"]), original(r))
    view.start(FakeExplainer(), "The film was", background=False)
    assert shown == [1, 2, 3, 3] and view.status == "done" and view.focus == 2
    view.select_row(0)
    view.update(_hand_result(3))
    assert view.focus == 0  # the user's focus stays

    class Cancelling(FakeExplainer):
        def attribute_generation(self, prompt, callback=None, **kwargs):
            view.cancel()  # the user presses cancel while the first row runs
            return super().attribute_generation(prompt, callback=callback, **kwargs)

    shown.clear()
    view.start(Cancelling(), "The film was", background=False)
    assert shown == [] and view.status == "cancelled"


def test_generation_view_shows_a_worker_error_handed_to_the_main_thread():
    """The status change runs later on the main thread, after the worker's except block has ended."""
    from xattr_lab.widgets.views.generation_view import GenerationView

    class Failing:
        def attribute_generation(self, prompt, callback=None, **kwargs):
            raise ValueError("no such method")

    queued = []
    view = GenerationView(schedule=queued.append)
    view.widget
    view.start(Failing(), "The film was", background=True)
    view._thread.join(10)
    for drain in queued:  # what the kernel's main loop does
        drain()
    assert view.status == "error: no such method" and view.errors == ["no such method"]


# ---------------------------------------------------------------------------- CLI and magic
def test_generate_and_granularity_parse_in_both_front_ends():
    from xattr_lab import commands

    for front_end in ("cli", "magic"):
        parser = commands.build_parser(front_end)
        args = commands.parse_args(parser, ["generate", "The film was", "--method", "sig", "--max-new-tokens", "3",
                                            "--steps", "8", "--target", " a good one"])
        assert commands.options(args) == {"method": "sig", "max_new_tokens": 3, "target": " a good one",
                                          "stop_at_eos": True, "steps": 8}
        args = commands.parse_args(parser, ["explain", "A film.", "--granularity", "word"])
        assert commands.options(args)["granularity"] == "word"
        with pytest.raises(commands.UsageError):
            commands.options(commands.parse_args(parser, ["generate", "x", "--max-new-tokens", "0"]))
        with pytest.raises(commands.UsageError):
            commands.parse_args(parser, ["generate", "x", "--method", "attention_flow"])


def test_xattr_generate_writes_json(tiny, tmp_path, capsys, monkeypatch):
    from xattr_lab import cli, commands

    monkeypatch.setattr(commands, "explainer", lambda model=None, device=None, cache=True: tiny("gpt2"))
    out = tmp_path / "gen.json"
    assert cli.main(["generate", "The film was", "--method", "attention", "--max-new-tokens", "2", "--html", "",
                     "--json", str(out)]) == 0
    result = Result.from_json(out.read_text())
    assert isinstance(result, GenerationResult) and len(result.generated) == 2
    assert "generated" in capsys.readouterr().out


@pytest.mark.parametrize("call, error, pattern", [
    (lambda ex: ex.attribute_generation("", method="attention"), InputError, "the text is empty"),
    (lambda ex: ex.attribute_generation(" \n ", method="attention"), InputError, "the text is empty"),
    (lambda ex: ex.attribute_generation("word " * 20_000, method="attention"), InputError, "tokens long"),
    (lambda ex: ex.attribute_generation("a \x1bgood film", method="attention"), InputError, "U\\+001B"),
    (lambda ex: ex.attribute_generation(PROMPT, method="ig", steps=8, convergence_tol=float("nan")), InputError,
     "convergence_tol=nan: give a finite number"),
    (lambda ex: ex.attribute_generation(PROMPT, method="ig", bogus=1), InputError, "unknown option 'bogus' for ig"),
    (lambda ex: ex.attribute_generation(42, method="attention"), TypeError, "must be a str"),
    (lambda ex: ex.attribute_generation(PROMPT, max_new_tokens="5"), InputError, "max_new_tokens"),
], ids=["empty", "whitespace", "100k characters", "control/bidi", "NaN", "unknown option", "wrong type", "max type"])
def test_bad_input_is_refused_and_changes_nothing(tiny, call, error, pattern):
    ex = tiny("gpt2")
    before = [(p.requires_grad, p._version) for p in ex.model.parameters()], ex.model.training, torch.is_grad_enabled()
    with pytest.raises(error, match=pattern):
        call(ex)
    after = [(p.requires_grad, p._version) for p in ex.model.parameters()], ex.model.training, torch.is_grad_enabled()
    assert after == before
