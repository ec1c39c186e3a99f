"""Vision transformers: ``ex.attribute(image, ...)``, ``ex.flow(image)``, ``ex.heads(image)``.

Image patches are the tokens (:mod:`.vision_input`: ``[CLS]``, ``patch(r,c)``). Every result
carries ``options["image"]`` (grid, patch size, the pixels the model saw) for the image view.
docs/ARCHITECTURE.md, sections "Rollout and attention flow" and "Gradients".

- ``attention``: the head-averaged [CLS] row of one layer (default the last).
- ``rollout`` / ``attention_flow``: Abnar & Zuidema (2020) over the patch graph, from [CLS] (the
  token the classifier reads), residual 0.5 as in the paper.
- ``gaf``: Generalized Attention Flow over the patch graph (sources: every token by default, the
  GAF paper's choice for encoder classifiers, as for text).
- ``ig``: Integrated Gradients on the pixels (the input the model takes), from a **black image**
  (0 in every channel before normalisation: the IG paper's baseline for images). A patch's score
  is the sum over its pixels and channels; completeness Σ scores ≈ F(image) − F(black).
- ``sig``: Sequential IG over the **patch embeddings** (the output of the patch projection, before
  [CLS] and position embeddings are added): each patch alone moves from a zero embedding (the
  stand-in for SIG's "[MASK]": images have no mask token) to its own. Per patch,
  raw_p ≈ F(x) − F(x with patch p's embedding zeroed); scores = raw / ‖raw‖₂.
- ``heads``: entropy, cone index and the head taxonomy over the patch sequence.
- ``grad_x_input`` and ``circuit`` do not apply: :class:`~xattr_lab.errors.InputError` says why.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core import budget
from ..core.batching import resolve_batch_size, run_chunked
from ..errors import InputError, ModelError
from ..graphs.information import INFO_KINDS, information_tensor
from ..graphs.rollout import mix_residual_capacity
from ..results import Attribution
from . import layered_methods as lm
from .path_methods import PathProblem, Style, ig_result, ig_run, sig_result, sig_run
from .quadrature import check_tol, quadrature
from .vision_input import ImageInput, capture, is_image, is_vision, prepare

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

__all__ = ["explain", "is_image", "is_vision"]
METHODS = ("attention", "rollout", "attention_flow", "gaf", "ig", "sig")


def _meta(ex, cap_or_target, prediction, image: ImageInput, options: dict) -> dict:
    target = cap_or_target
    return {"target": target.public, "target_label": target.label, "prediction": prediction, "text": "",
            "model": ex.name, "options": {**options, "image": image.image_options()}}


def _attribution(ex, image: ImageInput, method: str, scores, raw, target, prediction, options: dict) -> Attribution:
    return Attribution(tokens=list(image.tokens), scores=np.asarray(scores, dtype=np.float64),
                       raw=np.asarray(raw, dtype=np.float64), method=method,
                       **_meta(ex, target, prediction, image, options))


def graph(ex, image: ImageInput, method: str, target: Any, options: dict):
    """rollout / attention_flow / gaf (Attribution) or flow (FlowResult) over the patch graph of one image."""
    residual = options.pop("residual", lm.DEFAULT_RESIDUAL.get(method))
    sources = options.pop("sources", None)
    info = options.pop("info", "agf") if method in ("gaf", "flow") else "af"
    mu = options.pop("mu", None) if method in ("gaf", "flow") else None
    solver = lm.solver_options(options)
    options.pop("truncate", None)
    if options:
        raise InputError(f"unknown {method} option(s) for an image: {sorted(options)}")
    if info not in INFO_KINDS:
        raise InputError(f"unknown information kind {info!r}; choose one of {list(INFO_KINDS)}")
    cap = capture(ex, image, target, attention_grads=info != "af")
    grads = None if cap.attention_grads is None else cap.attention_grads.double().numpy()
    C = information_tensor(cap.attentions.double().numpy(), grads, info)
    default = "all" if method in ("gaf", "flow") else "readout"
    picked = lm.pick_sources(sources, image.n, 0, default)
    if method in ("rollout", "attention_flow"):
        scores = lm.rollout_or_flow(method, C, residual, picked)
        return _attribution(ex, image, method, scores, scores, cap.target, cap.prediction,
                            {"residual": residual, "sources": picked})
    flow = lm.gaf_flow(mix_residual_capacity(C, residual), mu, picked, tokens=image.tokens, info=info,
                       residual=residual, device=ex.device, solver=solver,
                       meta=_meta(ex, cap.target, cap.prediction, image, {}))
    if method == "flow":
        return flow
    used = {"info": info, "residual": residual, "sources": flow.sources, "mu": flow.mu, "value": flow.value,
            "image": flow.options["image"]}
    return Attribution(tokens=flow.tokens, scores=flow.attributions, raw=flow.attributions, target=flow.target,
                       target_label=flow.target_label, method="gaf", options=used, prediction=flow.prediction,
                       model=ex.name)


def _attention(ex, image: ImageInput, target: Any, layer: int = -1, truncate: bool = False) -> Attribution:
    if not -ex.n_layers <= layer < ex.n_layers:
        raise InputError(f"layer {layer} is out of range for a {ex.n_layers}-layer model")
    cap = capture(ex, image, target)
    row = cap.attentions[layer].mean(dim=0)[0].double().numpy()
    return _attribution(ex, image, "attention", row, row, cap.target, cap.prediction, {"layer": layer, "source": 0})


# ---------------------------------------------------------------------------- gradients
def _patch_sums(values: torch.Tensor, image: ImageInput) -> torch.Tensor:
    """(R, 3, S, S) per-pixel values -> (R, n) per token: [CLS] 0, then each patch's sum (row-major)."""
    (gh, gw), (ph, pw) = image.grid, image.patch
    R = values.shape[0]
    patches = values.reshape(R, values.shape[1], gh, ph, gw, pw).sum(dim=(1, 3, 5)).reshape(R, gh * gw)
    return torch.cat([torch.zeros(R, 1, dtype=patches.dtype, device=patches.device), patches], dim=1)


def _steps(steps: Any, method: str, allowed: tuple[str, ...]) -> None:
    if isinstance(steps, str):
        if steps not in allowed:
            raise InputError(f"steps must be a positive integer or one of {list(allowed)}, not {steps!r}")
        quadrature(4, method)
    else:
        quadrature(steps, method)


def _ig(ex, image: ImageInput, target: Any, steps: Any = "auto", baseline: str = "black", quadrature: str = "gausslegendre",
        convergence_tol: float = 0.05, max_steps: int = 1024, min_steps: int = 8, batch_size: Any = "auto",
        truncate: bool = False) -> Attribution:
    if baseline != "black":
        raise InputError(f"an image's IG baseline is 'black' (the IG paper's for images), not {baseline!r}")
    _steps(steps, quadrature, ("auto",))
    tol = check_tol(convergence_tol)
    with ex.restored():
        problem = _pixel_problem(ex, image, target, resolve_batch_size(ex, image.n, batch_size))
        run = ig_run(problem, steps=steps, method=quadrature, tol=tol, min_steps=min_steps, max_steps=max_steps)
    return ig_result(problem, run, IMAGE_STYLE)


def _pixel_problem(ex, image: ImageInput, target: Any, size: int) -> PathProblem:
    """IG's path problem of an image: pixels from black, a patch's integrand the sum over its pixels."""
    x, x0 = image.pixels, image.black(ex)
    with torch.no_grad():
        out = ex.model(pixel_values=torch.cat([x, x0]))
    resolved = ex.resolve_target(target, out.logits[0], None)
    f_x, f_base = (float(v) for v in resolved.score(out.logits))
    prediction = ex.prediction(out.logits[0])

    def grad(points):
        pixels = points.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = resolved.score(ex.model(pixel_values=pixels).logits)
            (found,) = torch.autograd.grad(scores.sum(), pixels)
        return scores.detach(), found

    def value(points):
        with torch.no_grad():
            return resolved.score(ex.model(pixel_values=points).logits)

    return PathProblem(list(image.tokens), f_x, f_base, _builder(ex, image, resolved, prediction), size, "black",
                       x=x, x_base=x0, grad=grad, value=value, per_unit=lambda values: _patch_sums(values, image))


def _builder(ex, image: ImageInput, resolved, prediction):
    return lambda method, scores, raw, options: _attribution(ex, image, method, scores, raw, resolved, prediction,
                                                             options)


def patch_module(ex) -> torch.nn.Module:
    for name, module in ex.model.named_modules():
        if type(module).__name__.endswith("PatchEmbeddings"):
            return module
    raise ModelError(f"{ex.name}: no patch-embedding module (…PatchEmbeddings) to run SIG on")


def _sig(ex, image: ImageInput, target: Any, steps: Any = "exact", baseline: str = "zero", quadrature: str = "gausslegendre",
         convergence_tol: float = 0.05, max_steps: int = 128, min_steps: int = 4, batch_size: Any = "auto",
         truncate: bool = False) -> Attribution:
    if baseline not in ("zero", "mask"):
        raise InputError(f"an image's SIG baseline is a zero patch embedding ('zero'; 'mask' means the same), "
                         f"not {baseline!r}")
    _steps(steps, quadrature, ("auto", "exact"))
    tol = check_tol(convergence_tol)
    module = patch_module(ex)
    replaced: list[torch.Tensor] = []
    with ex.restored():
        ex.add_hook(module, lambda mod, args, out: replaced[0] if replaced else out)
        problem = _patch_problem(ex, image, target, module, replaced, resolve_batch_size(ex, image.n, batch_size))
        run = sig_run(problem, IMAGE_STYLE, steps=steps, method=quadrature, tol=tol, min_steps=min_steps,
                      max_steps=max_steps)
    return sig_result(problem, run, IMAGE_STYLE)


def _patch_problem(ex, image: ImageInput, target: Any, module, replaced: list, size: int) -> PathProblem:
    """SIG's path problem of an image: patch p alone moves from a zero patch embedding (``replaced``
    is what the hook on the patch embedding returns instead of its output)."""
    with torch.no_grad():
        embedded = module(image.pixels).detach()  # (1, P, d)
        out = ex.model(pixel_values=image.pixels)
    resolved = ex.resolve_target(target, out.logits[0], None)
    f_x = float(resolved.score(out.logits)[0])
    P = embedded.shape[1]
    if P != image.n - 1:
        raise ModelError(f"{ex.name}: {P} patch embeddings for {image.n - 1} patches")

    def run(patches, alphas, grad: bool):
        rows = embedded.expand(len(patches), -1, -1).clone()
        index, at = torch.arange(len(patches)), torch.as_tensor(patches)
        a = torch.tensor(alphas, dtype=rows.dtype, device=rows.device)[:, None]
        rows[index, at] = a * embedded[0, at]
        rows.requires_grad_(grad)
        replaced[:] = [rows]
        try:
            with torch.enable_grad() if grad else torch.no_grad():
                scores = resolved.score(ex.model(pixel_values=image.pixels.expand(len(patches), -1, -1, -1)).logits)
                if not grad:
                    return scores.double().cpu().numpy()
                (g,) = torch.autograd.grad(scores.sum(), rows)
            return (g[index, at].double() * embedded[0, at].double()).sum(-1).cpu().numpy()
        finally:
            replaced.clear()

    def chunked(units, alphas, grad):  # unit p >= 1 is patch p - 1 ([CLS] is unit 0)
        found = np.zeros(len(units))

        def work(start, stop):
            found[start:stop] = run(units[start:stop] - 1, alphas[start:stop], grad)

        run_chunked(len(units), size, work)
        return found

    return PathProblem(list(image.tokens), f_x, None, _builder(ex, image, resolved, ex.prediction(out.logits[0])),
                       size, "zero patch embedding", moving=list(range(1, P + 1)),
                       unit_values=lambda units, alphas: chunked(units, alphas, False),
                       unit_rows=lambda units, alphas: chunked(units, alphas, True))


#: what an image's IG / SIG results record and say (:class:`.path_methods.Style`)
IMAGE_STYLE = Style(ig_keys=("steps", "quadrature", "baseline", "f_x", "f_baseline", "nodes", "gradient_rows"),
                    sig_keys=("steps", "quadrature", "baseline", "f_x", "f_without", "nodes"),
                    ig_change="F(image) - F(black)", sig_detail=lambda run: "on its worst patch")


# ---------------------------------------------------------------------------- heads and dispatch
def _heads(ex, image: ImageInput, max_map_tokens: int = 128, truncate: bool = False, thresholds=None):
    from ..results import HeadStats
    from .geometry import (PATTERN_THRESHOLDS, TAXONOMY, attention_entropy, classify_patterns, cone_index_floor,
                           cone_indices, pattern_scores)

    cap = capture(ex, image, hidden_states=True)
    attn, hidden = cap.attentions.double().numpy(), cap.hidden_states.double().numpy()
    scores = pattern_scores(attn, image.tokens, image.special_mask, causal=False)
    return HeadStats(
        tokens=list(image.tokens), entropy=attention_entropy(attn), cone_index=cone_indices(hidden),
        cone_index_normalised=cone_indices(hidden, normalise=True), patterns=classify_patterns(scores, thresholds),
        attentions=attn if image.n <= max_map_tokens else None, texts=[], model=ex.name,
        options={"max_map_tokens": max_map_tokens, "thresholds": dict(PATTERN_THRESHOLDS, **(thresholds or {})),
                 "taxonomy": TAXONOMY, "tokens_per_text": [image.n], "cone_index_floor": float(cone_index_floor(image.n)),
                 "image": image.image_options()})


_NOT_FOR_IMAGES = {
    "grad_x_input": "grad_x_input multiplies word embeddings by their gradient; for an image use method='ig' "
                    "(pixels, black baseline) or 'sig' (patch embeddings)",
    "circuit": "circuit discovery compares SAE codes of positive and negative text prompts; a vision "
               "transformer takes images, and xattr-lab has no image prompt sets to contrast",
}


def explain(ex: "ModelSession", verb: str, image: Any, method: str = "", target: Any = None, **options: Any):
    """What ``Explainer.attribute/flow/heads/circuit`` call for an image or a vision model.

    verb: "attribute" (``method`` one of :data:`METHODS`), "flow", "heads" or "circuit"."""
    if verb == "circuit" or method in _NOT_FOR_IMAGES:
        raise InputError(_NOT_FOR_IMAGES[method if method in _NOT_FOR_IMAGES else "circuit"])
    if not is_vision(ex):
        raise ModelError(f"{ex.name} takes text, not images; load a vision transformer (ViT) to explain images")
    if isinstance(image, str):
        raise InputError(f"{ex.name} is a vision transformer: give a PIL image or an (H, W, 3) array, not text")
    if verb == "attribute" and method not in METHODS:
        raise InputError(f"unknown method {method!r} for an image; choose one of {list(METHODS)}")
    prepared = prepare(ex, image)
    name = {"flow": "gaf", "heads": "heads"}.get(verb, method)
    with ex.restored():
        budget.check_method(ex, name if name != "heads" else "attention", prepared.n, options)
        if verb == "heads":
            return _heads(ex, prepared, **options)
        if verb == "flow" or method in lm.GRAPH_METHODS:
            return graph(ex, prepared, "flow" if verb == "flow" else method, target, dict(options))
        call = {"attention": _attention, "ig": _ig, "sig": _sig}[method]
        try:
            return call(ex, prepared, target, **options)
        except TypeError as error:
            if "unexpected keyword" in str(error):
                raise InputError(f"{method} on an image: {error}") from None
            raise
