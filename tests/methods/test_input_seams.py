"""Seams between input kinds: one IG and one SIG body (methods/path_methods.py) and one capture class
(core.capture.Capture) for text, image and encoder-decoder inputs, and no visit across kinds.

A text attribution (IG, SIG, grad x input, GAF, a flow) runs with every function and class of the
image and encoder-decoder modules made to raise; an image or encoder-decoder IG/SIG runs with the
text-only code (the embedding path, SIG's prefix-reusing rows, the progress bar and time cap, the
text's method bodies) made to raise. Each trap is shown to fire on a call that does cross.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from tests.support.seq2seq_vision_models import build_bart, build_vit, image

SOURCE, PREFIX = "the cat sat on the mat", "a dog"


class Crossed(AssertionError):
    """A request ran code of another input kind."""


def _trap(monkeypatch, modules, only: tuple[str, ...] = ()) -> list[str]:
    """Make every function and class defined in ``modules`` (or only the names ``only``) raise
    :class:`Crossed` when called -> the trapped names."""
    trapped = []
    for module in modules:
        for name, value in list(vars(module).items()):
            own = (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__
            if own and (not only or name in only):
                def refuse(*args, _where=f"{module.__name__}.{name}", **kwargs):
                    raise Crossed(f"called {_where}")

                monkeypatch.setattr(module, name, refuse)
                trapped.append(f"{module.__name__}.{name}")
    return trapped


def _other_kinds(monkeypatch) -> list[str]:
    from xattr_lab.methods import seq2seq, seq2seq_gradients, seq2seq_input, vision, vision_input

    return _trap(monkeypatch, (vision, vision_input, seq2seq, seq2seq_input, seq2seq_gradients))


def _text_only(monkeypatch) -> list[str]:
    """The text's own code. ``pacing.timed_round`` is the shared hook of the quadrature (a no-op
    without a ``Pace``), so only the ``Pace`` itself and its argument check are trapped there."""
    from xattr_lab.core import capture
    from xattr_lab.methods import embedding_path, gradients, pacing, sig_paths

    return (_trap(monkeypatch, (embedding_path, sig_paths, gradients))
            + _trap(monkeypatch, (pacing,), only=("Pace", "check_max_seconds"))
            + _trap(monkeypatch, (capture,), only=("capture",)))


@pytest.fixture(scope="module")
def vit():
    import xattr_lab as xa

    model, proc = build_vit()
    return xa.load(model, proc, device="cpu", name="tiny-vit")


@pytest.fixture(scope="module")
def bart():
    import xattr_lab as xa

    model, tok = build_bart()
    return xa.load(model, tok, device="cpu", name="tiny-bart")


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_a_text_attribution_never_calls_image_or_encoder_decoder_code(tiny, monkeypatch, arch):
    ex = tiny(arch)
    expected = {m: ex.attribute("A gripping film.", method=m, **o)
                for m, o in (("ig", {}), ("sig", {"steps": 4}), ("grad_x_input", {}), ("gaf", {}))}
    trapped = _other_kinds(monkeypatch)
    assert "xattr_lab.methods.vision._ig" in trapped and "xattr_lab.methods.seq2seq_input.capture" in trapped
    for method, options in (("ig", {}), ("sig", {"steps": 4}), ("grad_x_input", {}), ("gaf", {})):
        result = ex.attribute("A gripping film.", method=method, **options)
        np.testing.assert_allclose(result.scores, expected[method].scores, rtol=1e-6, atol=1e-9)
    assert len(ex.flow("A gripping film.").attributions) == len(expected["ig"].tokens)


def test_the_other_kinds_trap_fires_on_an_image(vit, monkeypatch):
    _other_kinds(monkeypatch)
    with pytest.raises(Crossed):
        vit.attribute(image(), method="ig", steps=4)


@pytest.mark.parametrize("method, options", [("ig", {}), ("ig", {"steps": 4}), ("sig", {}), ("sig", {"steps": 2}),
                                             ("sig", {"steps": "auto"})])
def test_an_image_ig_or_sig_never_calls_text_only_code(vit, monkeypatch, method, options):
    expected = vit.attribute(image(), method=method, **options)
    trapped = _text_only(monkeypatch)
    assert "xattr_lab.methods.pacing.Pace" in trapped and "xattr_lab.methods.sig_paths.sig_rows" in trapped
    result = vit.attribute(image(), method=method, **options)
    np.testing.assert_allclose(result.raw, expected.raw, rtol=1e-6, atol=1e-9)
    assert result.tokens[0] == "[CLS]" and result.options["steps"] == expected.options["steps"]


@pytest.mark.parametrize("method, options", [("ig", {}), ("sig", {}), ("sig", {"steps": 2})])
def test_an_encoder_decoder_ig_or_sig_never_calls_text_only_code(bart, monkeypatch, method, options):
    expected = bart.attribute(SOURCE, method=method, prefix=PREFIX, **options)
    _text_only(monkeypatch)
    result = bart.attribute(SOURCE, method=method, prefix=PREFIX, **options)
    np.testing.assert_allclose(result.raw, expected.raw, rtol=1e-6, atol=1e-9)
    assert result.options == expected.options


def test_the_text_only_trap_fires_on_a_text(tiny, monkeypatch):
    ex = tiny("bert")
    _text_only(monkeypatch)
    for method in ("ig", "sig"):
        with pytest.raises(Crossed):
            ex.attribute("A gripping film.", method=method)


def test_one_ig_and_one_sig_body_serve_every_kind(tiny, vit, bart, monkeypatch):
    """Every kind's IG, SIG and grad x input go through path_methods' bodies (counted; images refuse
    grad x input), and nowhere else integrates."""
    from xattr_lab.methods import path_methods

    calls = []
    for name in ("ig_run", "sig_run", "gradient_times_input"):
        original = getattr(path_methods, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(path_methods, name, counted)
    from xattr_lab.methods import gradients, seq2seq_gradients, vision

    for module in (gradients, vision, seq2seq_gradients):  # the kinds call the drivers through the module
        for name in ("ig_run", "sig_run", "gradient_times_input"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(path_methods, name))
        assert not hasattr(module, "integrate_path") and not hasattr(module, "integrate_tokens")
    tiny("bert").attribute("A gripping film.", method="ig", steps=4)
    tiny("bert").attribute("A gripping film.", method="sig", steps=2)
    vit.attribute(image(), method="ig", steps=4)
    vit.attribute(image(), method="sig", steps=2)
    bart.attribute(SOURCE, method="ig", prefix=PREFIX, steps=4)
    bart.attribute(SOURCE, method="sig", prefix=PREFIX, steps=2)
    tiny("bert").attribute("A gripping film.", method="grad_x_input")
    bart.attribute(SOURCE, method="grad_x_input", prefix=PREFIX)
    assert calls == ["ig_run", "sig_run"] * 3 + ["gradient_times_input"] * 2


def test_one_capture_class_for_every_kind(tiny, vit, bart):
    from xattr_lab.core.capture import Capture
    from xattr_lab.methods import seq2seq_input, vision_input

    text = tiny("bert").capture("A gripping film.")
    picture = vision_input.capture(vit, vision_input.prepare(vit, image()))
    item = seq2seq_input.prepare(bart, SOURCE, PREFIX)
    pair = seq2seq_input.capture(bart, item, attention_grads=True)
    for cap in (text, picture, pair):
        assert type(cap) is Capture and cap.tokens == cap.input.tokens
        assert cap.attentions.shape[-1] == cap.attentions.shape[-2]
    assert text.encoding is text.input and text.decoder_attentions is None and picture.cross_attentions is None
    n_s, n_t = item.n_source, item.n - item.n_source
    assert pair.attentions.shape[-2:] == (n_s, n_s) and pair.decoder_attentions.shape[-2:] == (n_t, n_t)
    assert pair.cross_attentions.shape[-2:] == (n_t, n_s)
    assert pair.cross_attention_grads.shape == pair.cross_attentions.shape
    assert pair.attention_grads.shape == pair.attentions.shape
