"""One path per input kind: the kind is resolved once at load, and a request only runs its kind's code.

A text for a text model never imports or calls image or encoder-decoder code (checked in a fresh
interpreter whose import system refuses those modules); an image never reaches the text path.
The quadrature is pure numpy, apart from the torch embedding path.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.seq2seq_vision_models import build_t5, build_vit, image

#: modules that belong to other input kinds than text
OTHER_KINDS = ("xattr_lab.methods.vision", "xattr_lab.methods.vision_input", "xattr_lab.methods.seq2seq",
               "xattr_lab.methods.seq2seq_input", "xattr_lab.methods.seq2seq_gradients", "xattr_lab.graphs.seq2seq")

_BLOCKED_RUN = """
import sys, warnings
BLOCKED = {blocked!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ImportError("the text path imported " + name)
        return None

sys.meta_path.insert(0, Refuse())
warnings.simplefilter("ignore")
import xattr_lab as xa
for name in {models!r}:
    ex = xa.load(name, device="cpu")
    assert ex.input_kind == "text", ex.input_kind
    for method, options in (("ig", dict(steps=4)), ("sig", dict(steps=2)), ("grad_x_input", {{}}),
                            ("rollout", {{}}), ("attention", {{}})):
        result = ex.attribute("A gripping film.", method=method, **options)
        assert len(result.tokens) == len(result.scores) > 0
    ex.attribute("A gripping film.", method="ig", granularity="word", steps=4)
    ex.heads("A gripping film.")
    print(name, "ok")
loaded = sorted(m for m in BLOCKED if m in sys.modules)
print("loaded:", loaded)
assert not loaded
"""


def _run_blocked(models: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = _BLOCKED_RUN.format(blocked=OTHER_KINDS, models=models)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=900)


def test_a_text_on_tiny_text_models_never_imports_another_kinds_code():
    done = _run_blocked(("tiny-bert", "tiny-gpt2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiny-bert ok" in done.stdout and "tiny-gpt2 ok" in done.stdout and "loaded: []" in done.stdout


@pytest.mark.slow
def test_a_text_on_the_embedded_models_never_imports_another_kinds_code():
    done = _run_blocked(("minilm-rt", "smollm2-135m"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "minilm-rt ok" in done.stdout and "smollm2-135m ok" in done.stdout and "loaded: []" in done.stdout


def test_the_blocker_would_see_an_import_of_another_kind():
    """The check above can fail: the same interpreter set-up refuses a vision import when one happens."""
    code = _BLOCKED_RUN.split("import xattr_lab as xa")[0].format(blocked=OTHER_KINDS) + \
        "import xattr_lab.methods.vision_input\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "the text path imported xattr_lab.methods.vision_input" in done.stderr


def test_a_text_never_calls_the_image_or_encoder_decoder_adapters(tiny, monkeypatch):
    from xattr_lab.methods import modalities, seq2seq, vision

    def refuse(*args, **kwargs):
        raise AssertionError("a text reached another input kind's code")

    for module in (vision, seq2seq):
        monkeypatch.setattr(module, "explain", refuse)
        monkeypatch.setattr(module, "graph", refuse)
    ex = tiny("bert")
    assert modalities.adapter(ex, "A gripping film.").kind == "text"
    for method in ("ig", "sig", "grad_x_input", "gaf"):
        assert ex.attribute("A gripping film.", method=method).method == method
    ex.flow("A gripping film.")


def test_an_image_never_reaches_the_text_path(monkeypatch):
    import xattr_lab as xa
    from xattr_lab.core import capture
    from xattr_lab.methods import embedding_path, flows, gradients, registry

    model, proc = build_vit()
    ex = xa.load(model, proc, device="cpu", name="tiny-vit")
    assert ex.input_kind == "image"

    def refuse(*args, **kwargs):
        raise AssertionError("an image reached the text path")

    for module, name in ((embedding_path, "prepare"), (gradients, "integrated_gradients"), (capture, "capture"),
                         (gradients, "sequential_integrated_gradients"), (registry, "function"),
                         (flows, "explain_flow"), (type(ex), "encode")):
        monkeypatch.setattr(module, name, refuse)
    picture = image()
    for method, options in (("ig", dict(steps=4)), ("sig", {}), ("rollout", {}), ("gaf", {})):
        result = ex.attribute(picture, method=method, **options)
        assert result.method == method and result.tokens[0] == "[CLS]"


def test_the_input_kind_is_resolved_at_load_and_every_adapter_step_exists(tiny):
    import xattr_lab as xa
    from xattr_lab.core.inputs import INPUT_KINDS, input_kind, is_image
    from xattr_lab.methods import modalities

    t5, tok = build_t5()
    assert xa.load(t5, tok, device="cpu").input_kind == "encoder_decoder"
    assert input_kind(build_vit(processor=False)[0]) == "image"
    assert tiny("gpt2").input_kind == tiny("bert").input_kind == "text"
    assert set(modalities.ADAPTERS) == set(INPUT_KINDS)
    for adapter in modalities.ADAPTERS.values():
        for step in ("prepare", "embed", "capture", "graph") + (("explain",) if adapter.explain else ()):
            assert callable(adapter.function(step)), (adapter.kind, step)
    assert is_image(image()) and not is_image("a text") and not is_image(["a", "list"])
    # an image given to a text model goes to the image adapter, which refuses it with the reason
    assert modalities.adapter(tiny("bert"), image()).kind == "image"
    with pytest.raises(xa.errors.ModelError, match="takes text, not images"):
        tiny("bert").attribute(image(), method="ig")


def test_the_quadrature_is_pure_numpy_and_cancelled_lives_in_errors():
    code = ("import sys; import xattr_lab.methods.quadrature, xattr_lab.methods.panels; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    import xattr_lab as xa
    from xattr_lab.methods import generation, gradients, integration, quadrature

    assert gradients.Cancelled is xa.errors.Cancelled is generation.Cancelled
    assert issubclass(xa.errors.Cancelled, RuntimeError)
    assert integration.integrate_panels is quadrature.integrate_panels is gradients.integrate_panels
    assert xa.gradients.quadrature(3)[1].sum() == pytest.approx(1.0)
