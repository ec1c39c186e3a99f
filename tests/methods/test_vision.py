"""Vision transformers: images in, patches as tokens (xattr_lab.methods.vision, the image view).

A tiny random ViT (32x32 images, 8x8 patches, 2 layers) built offline; every method is checked
against a computation written here from the model's own outputs (or captum's IG)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.seq2seq_vision_models import build_vit, image
from xattr_lab.errors import InputError, InputTypeError, ModelError


@pytest.fixture(scope="module")
def vit():
    import xattr_lab as xa

    model, proc = build_vit()
    return xa.load(model, proc, device="cpu", name="tiny-vit")


@pytest.fixture(scope="module")
def pixels(vit):
    from xattr_lab.methods.vision_input import prepare

    return prepare(vit, image()).pixels


def _score(vit, pixels, label):
    with torch.no_grad():
        return vit.model(pixel_values=pixels).logits[:, label]


def test_preprocessing_matches_the_image_processor_and_accepts_pil_and_floats(vit):
    from PIL import Image

    from xattr_lab.methods.vision_input import prepare

    img = image()
    prepared = prepare(vit, img)
    reference = vit.tokenizer(images=img, return_tensors="pt")["pixel_values"]
    assert torch.allclose(prepared.pixels, reference, atol=1e-6)
    assert torch.allclose(prepare(vit, Image.fromarray(img)).pixels, reference, atol=1e-6)
    assert torch.allclose(prepare(vit, img.astype(np.float64) / 255.0).pixels, reference, atol=1e-6)
    assert np.array_equal(prepared.display, img)  # what the model saw, normalisation undone
    assert prepared.tokens[:3] == ["[CLS]", "patch(0,0)", "patch(0,1)"] and prepared.tokens[-1] == "patch(3,3)"
    assert prepared.n == 17 and prepared.special_mask == [True] + [False] * 16


def test_minimal_preprocessing_without_a_processor_is_the_vit_default():
    import xattr_lab as xa
    from xattr_lab.methods.vision_input import prepare

    model, _ = build_vit()
    ex = xa.load(model, lambda *a, **k: None, device="cpu")  # no image processor: resize + (x - 0.5) / 0.5
    img = image(size=(48, 40))
    prepared = prepare(ex, img)
    assert prepared.pixels.shape == (1, 3, 32, 32)
    same = prepare(ex, image())  # already 32x32: no resize, so exactly the normalised pixels
    expected = torch.from_numpy(image().astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2.0 - 1.0
    assert torch.allclose(same.pixels, expected, atol=1e-6)


def test_attention_and_rollout_are_the_cls_rows(vit, pixels):
    r = vit.attribute(image(), method="attention")
    with torch.no_grad():
        out = vit.model(pixel_values=pixels, output_attentions=True)
    A = torch.stack([a[0] for a in out.attentions]).mean(1).double().numpy()  # (L, n, n)
    assert np.allclose(r.scores, A[-1][0], atol=1e-6)
    mixed = 0.5 * A + 0.5 * np.eye(17)[None]
    mixed /= mixed.sum(-1, keepdims=True)
    assert np.allclose(vit.attribute(image(), method="rollout").scores, (mixed[1] @ mixed[0])[0], atol=1e-6)
    flow = vit.attribute(image(), method="attention_flow")
    assert flow.scores.shape == (17,) and np.all(flow.scores >= -1e-9) and flow.scores.max() <= 1 + 1e-6


@pytest.mark.slow
def test_ig_on_pixels_from_black_matches_captum_and_is_complete(vit, pixels):
    from captum.attr import IntegratedGradients

    r = vit.attribute(image(), method="ig", steps=50)
    label = r.target
    black = vit.tokenizer(images=np.zeros((32, 32, 3), np.uint8), return_tensors="pt")["pixel_values"]
    change = float(_score(vit, pixels, label) - _score(vit, black, label))
    assert r.options["baseline"] == "black" and r.options["converged"]
    assert abs(r.raw.sum() - change) <= 0.05 * abs(change)
    assert r.scores[0] == 0.0  # [CLS] is no pixel
    with vit.restored():
        ig = IntegratedGradients(lambda x: vit.model(pixel_values=x).logits)
        attr = ig.attribute(pixels, baselines=black, target=label, n_steps=50, method="gausslegendre")
    per_patch = attr[0].sum(0).reshape(4, 8, 4, 8).sum((1, 3)).reshape(-1).double().numpy()
    assert np.allclose(r.raw[1:], per_patch, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_sig_moves_each_patch_embedding_from_zero(vit, pixels):
    exact = vit.attribute(image(), method="sig", steps="exact")
    label = exact.target
    module = vit.model.vit.embeddings.patch_embeddings
    with torch.no_grad():
        full = float(_score(vit, pixels, label))
        for p in (0, 5, 15):  # F(x) - F(x with patch p's embedding zeroed), by a hook written here
            def zero(mod, args, out, p=p):
                out = out.clone()
                out[:, p] = 0.0
                return out

            handle = module.register_forward_hook(zero)
            try:
                without = float(_score(vit, pixels, label))
            finally:
                handle.remove()
            assert exact.raw[1 + p] == pytest.approx(full - without, abs=1e-5)
    quad = vit.attribute(image(), method="sig", steps=40)
    assert quad.options["converged"] and np.allclose(quad.raw, exact.raw, atol=0.05 * np.abs(exact.raw).max())
    assert np.linalg.norm(quad.scores) == pytest.approx(1.0)


@pytest.mark.slow
def test_gaf_flow_and_heads_over_patches(vit):
    flow = vit.flow(image(), info="agf")
    assert len(flow.tokens) == 17 and flow.edge_flow.shape == (2, 17, 17)
    assert flow.attributions.sum() == pytest.approx(flow.value, rel=1e-6)
    assert flow.value <= flow.upper_bound * (1 + 1e-6)
    gaf = vit.attribute(image(), method="gaf", info="af", residual=0.5)
    assert gaf.scores.sum() == pytest.approx(gaf.options["value"], rel=1e-6)
    heads = vit.heads(image())
    assert heads.entropy.shape == (2, 4) and len(heads.patterns) == 2 and heads.tokens[1] == "patch(0,0)"
    assert np.all(heads.entropy <= np.log(17) + 1e-9)


@pytest.mark.parametrize("call, error, words", [
    (lambda ex: ex.circuit(["a"], ["b"]), InputError, "image"),
    (lambda ex: ex.attribute(image(), method="grad_x_input"), InputError, "pixels"),
    (lambda ex: ex.attribute("a text", method="ig"), InputError, "PIL image"),
    (lambda ex: ex.attribute(np.zeros((8, 8)), method="ig"), InputError, "(H, W, 3)"),
    (lambda ex: ex.attribute(np.full((8, 8, 3), 2.0), method="ig"), InputError, "[0, 1]"),
    (lambda ex: ex.attribute(image(), method="ig", granularity="word"), InputError, "granularity"),
    (lambda ex: ex.attribute(image(), method="ig", baseline="blur"), InputError, "black"),
    (lambda ex: ex.attribute(image(), method="nope"), InputError, "unknown method"),
])
def test_what_does_not_apply_to_images_says_why(vit, call, error, words):
    with pytest.raises(error, match=None) as caught:
        call(vit)
    assert words in str(caught.value)


def test_an_image_given_to_a_text_model_is_refused(tiny):
    with pytest.raises(ModelError, match="takes text"):
        tiny("bert").attribute(image(), method="ig")
    with pytest.raises(InputTypeError):
        from xattr_lab.methods.vision_input import to_rgb

        to_rgb(object())


def test_image_view_draws_the_patch_scores(vit):
    from xattr_lab.results import Result
    from xattr_lab.widgets.select import view_for
    from xattr_lab.widgets.views.image_view import ImageView, patch_grid

    r = vit.attribute(image(), method="rollout")
    back = Result.from_json(r.to_json())
    view = view_for(back)
    assert isinstance(view, ImageView)
    assert np.array_equal(view.pixels, image())
    grid = patch_grid(r.scores, (4, 4))
    assert grid[1, 2] == r.scores[1 + 4 + 2]
    data = view.patch_data()
    assert data["label"][6] == "patch(1,2)" and data["index"][6] == 7 and data["score"][6] == grid[1, 2]
    assert data["y"][0] > data["y"][4]  # row 0 is at the top of the image
    view.select_patch(1, 2)
    assert view.state.token == 7
    assert view.png_bytes()[:4] == b"\x89PNG"
    assert len(view.export_models()) == 2
