"""Attention-graph methods on a model: ``rollout``, ``attention_flow``, ``gaf`` and ``flow``.

Adapters from a :class:`~xattr_lab.core.session.ModelSession` to the array algorithms of
:mod:`xattr_lab.graphs`: capture the attentions (and their gradients), keep the non-padding
positions, pick the source tokens, build the capacities, solve, and put the answer back over all
positions as an :class:`~xattr_lab.results.Attribution` or :class:`~xattr_lab.results.FlowResult`.
docs/ARCHITECTURE.md, sections "Rollout and attention flow" and "Flows and GAF".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core import budget
from ..core.encoding import Encoding
from ..errors import InputError
from ..graphs.attention_flow import attention_flow
from ..graphs.barrier import barrier_max_flow, cpu_threads
from ..graphs.information import INFO_KINDS, information_tensor
from ..graphs.rollout import mix_residual_capacity, rollout
from ..results import Attribution, FlowResult
from .registry import implements

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

__all__ = ["explain_flow", "attribute"]

_DEFAULT_RESIDUAL = {"rollout": 0.5, "attention_flow": 0.5, "gaf": None}


def _valid_positions(encoding) -> np.ndarray:
    mask = encoding.attention_mask[0].detach().cpu().numpy().astype(bool)
    return np.nonzero(mask)[0]


def _pick_sources(ex: "ModelSession", encoding, sources, valid: np.ndarray) -> list[int]:
    """Source tokens (indices into the valid positions).

    None (GAF's default): every top-level token for encoder classifiers (the GAF paper's
    choice), the readout position (the token that predicts) for causal and masked LMs. "all";
    "cls" / "readout": the readout token only (``ex.source_position``: [CLS]/the first token for
    encoder classifiers, the predicting position for LMs); an int or a list of token positions.
    Rollout and attention flow pass "readout" for None (:func:`attribute`).
    """
    position_of = {int(p): k for k, p in enumerate(valid)}
    if sources is None:
        sources = "all" if (ex.head == "classifier" and not ex.adapter.causal) else "readout"
    if isinstance(sources, str):
        if sources == "all":
            return list(range(len(valid)))
        if sources in ("cls", "readout", "source"):
            return [position_of[int(ex.source_position(encoding))]]
        raise InputError(f"sources must be 'all', 'cls'/'readout', or token positions, not {sources!r}")
    picked = np.atleast_1d(np.asarray(sources))
    if picked.size == 0 or not np.issubdtype(picked.dtype, np.integer):
        raise InputError(f"sources must be 'all', 'cls'/'readout', or token positions (ints), not {sources!r}")
    n = encoding.n
    out = []
    for p in picked.tolist():
        p = p % n if -n <= p < n else p
        if p not in position_of:
            raise InputError(f"source position {p} is not a (non-padding) token position of this {n}-token text")
        out.append(position_of[p])
    return sorted(set(out))


def _edge_mask(ex: "ModelSession", valid: np.ndarray) -> np.ndarray:
    """(m, m) attention mask over the valid positions: query i may attend to key j (j <= i for a
    causal model). Padding is already left out by ``valid``."""
    m = len(valid)
    if ex.adapter.causal:
        return np.tril(np.ones((m, m), dtype=bool))
    return np.ones((m, m), dtype=bool)


def _capacities(ex: "ModelSession", cap, info: str, valid: np.ndarray) -> np.ndarray:
    """The information tensor (L, m, m) float64 over the m valid positions, one layer at a time.

    Layer by layer, the float64 copies of the maps and gradients are one layer's (H·m² each) rather
    than every layer's: at 1,024 tokens on smollm2-135m the whole-stack copies (and the product and
    ReLU temporaries of :func:`information_tensor`) peaked at ~11 GB over the float32 capture.
    """
    mask = _edge_mask(ex, valid)
    index = torch.as_tensor(valid) if len(valid) < cap.attentions.shape[-1] else None

    def pick(maps, layer):  # (L, H, n, n) float32 -> layer's (1, H, m, m) float64
        one = maps[layer : layer + 1]
        if index is not None:
            one = one.index_select(2, index).index_select(3, index)
        return one.double().numpy()

    out = np.empty((cap.attentions.shape[0], len(valid), len(valid)))
    for layer in range(out.shape[0]):
        grad = None if cap.attention_grads is None else pick(cap.attention_grads, layer)
        out[layer] = information_tensor(pick(cap.attentions, layer), grad, info, mask=mask)[0]
    return out


def _embed(values: np.ndarray, valid: np.ndarray, n: int, axes: int) -> np.ndarray:
    """Put arrays over valid positions back into arrays over all n positions (padding = 0)."""
    shape = values.shape[: values.ndim - axes] + (n,) * axes
    out = np.zeros(shape)
    index = (Ellipsis,) + tuple(np.ix_(*([valid] * axes)))
    out[index] = values
    return out


@implements("flow")
def explain_flow(
    ex: "ModelSession",
    text: str,
    info: str = "agf",
    target: Any = None,
    residual: float | None = None,
    sources: Any = None,
    mu: float | None = None,
    **options: Any,
):
    """Generalized Attention Flow for one text -> :class:`xattr_lab.results.FlowResult`.

    info: "af", "gf" or "agf" (:func:`information_tensor`); target: as ``ModelSession.capture``.
    residual: None (no residual edges, the GAF paper) or r in [0, 1] (:func:`mix_residual_capacity`).
    sources: see :func:`_pick_sources` (default: all tokens for encoder classifiers, the
    predicting position for LMs). mu: barrier weight in capacity units, or None to choose it so
    ``value`` is certified within 1e-6 (relative) of the exact max-flow value by a cut.
    options: ``truncate`` (bool), ``rtol`` (for mu=None), ``tol``, ``max_iter``, ``device``
    (default: the model's device), ``threads`` (torch CPU threads for the capture and the
    solver, default 1: :class:`~xattr_lab.graphs.barrier.cpu_threads`). Padding positions are
    left out of the graph and get 0.
    """
    options.pop("method", None)  # the registry passes its name ("flow"); the result says "gaf"
    truncate = bool(options.pop("truncate", False))
    solver_options = {k: options.pop(k) for k in ("rtol", "tol", "max_iter", "device", "threads") if k in options}
    if options:
        raise InputError(f"unknown flow option(s) {sorted(options)}; known: truncate, rtol, tol, max_iter, device, threads")
    if info not in INFO_KINDS:
        raise InputError(f"unknown information kind {info!r}; choose one of {list(INFO_KINDS)}")
    # one torch thread on CPU for the capture too (option ``threads``): under load, OpenMP's
    # spinning threads made the small backward pass 10× slower (see graphs.barrier.cpu_threads)
    with cpu_threads(solver_options.get("threads"), ex.device):
        encoding = text if isinstance(text, Encoding) else ex.encode(text, truncate=truncate)
        budget.check_method(ex, "gaf", encoding.n, {"info": info})  # maps, gradients and ~32 L·n² float64 arrays
        cap = ex.capture(encoding, target, attention_grads=(info != "af"))
        encoding = cap.encoding
        valid = _valid_positions(encoding)
        picked = _pick_sources(ex, encoding, sources, valid)
        C = mix_residual_capacity(_capacities(ex, cap, info, valid), residual)
        tokens, target_of, prediction = list(cap.tokens), cap.target, cap.prediction
        del cap  # the maps and gradients (2·L·H·n² float32) are not needed by the solver: its peak is its own
    device = solver_options.pop("device", ex.device)
    # glibc keeps the solver's freed arrays when that fits the memory limit (faster: graphs.heap)
    retain = budget.flow_heap_retained(budget.shape_of(ex), encoding.n, budget.memory_limit(device)[0])
    sol = barrier_max_flow(C, mu, picked, device=device, retain_heap=retain, **solver_options)
    n = encoding.n
    return FlowResult(
        tokens=tokens,
        attributions=_embed(sol.attributions, valid, n, 1),
        edge_flow=_embed(sol.edge_flow, valid, n, 2),
        value=sol.value,
        node_flow=_embed(sol.node_flow, valid, n, 1),
        capacities=_embed(C, valid, n, 2),
        info=info,
        sources=[int(valid[k]) for k in picked],
        mu=sol.mu,
        target=target_of.public,
        target_label=target_of.label,
        prediction=prediction,
        method="gaf",
        options={"residual": residual, "mu": mu, **{k: v for k, v in solver_options.items()}},
        text=encoding.text,
        model=ex.name,
        upper_bound=sol.upper_bound,
        solver={
            "iterations": sol.iterations,
            "decrement": float(sol.residuals.get("decrement", 0.0)),
            "conservation": float(sol.residuals.get("conservation", 0.0)),
        },
    )


@implements("rollout", "attention_flow", "gaf")
def attribute(ex: "ModelSession", text: str, *, method: str, target: Any = None, **options: Any):
    """Token attributions by an attention-graph method -> :class:`xattr_lab.results.Attribution`.

    method: "rollout" (rolled-out attention of the source rows, averaged over sources),
    "attention_flow" (max-flow value from each source to each input token, averaged over
    sources) or "gaf" (flow reaching each input token in :func:`explain_flow`).
    options: ``residual`` (default 0.5 for rollout / attention flow: Â = 0.5·A + 0.5·I, rows
    renormalised, as in Abnar & Zuidema 2020; None for gaf), ``sources`` ("all",
    "cls"/"readout", positions). The default for rollout and attention flow is the readout
    token, the row the paper explains: [CLS]/the first token for encoder classifiers, the
    predicting position for LMs; for gaf it is all tokens for encoder classifiers and the
    predicting position for LMs (:func:`_pick_sources`). ``truncate``; for gaf also ``info``
    ("agf"), ``mu`` and the solver options of :func:`explain_flow`. Padding positions score 0.
    """
    if method not in _DEFAULT_RESIDUAL:
        raise InputError(f"xattr_lab.flows.attribute knows rollout, attention_flow and gaf, not {method!r}")
    residual = options.pop("residual", _DEFAULT_RESIDUAL[method])
    sources = options.pop("sources", None)
    if method == "gaf":
        info = options.pop("info", "agf")
        flow = explain_flow(ex, text, info=info, target=target, residual=residual, sources=sources, **options)
        used = {"info": info, "residual": residual, "sources": flow.sources, "mu": flow.mu, "value": flow.value}
        return Attribution(
            tokens=flow.tokens, scores=flow.attributions, raw=flow.attributions, target=flow.target,
            target_label=flow.target_label, method=method, options=used, prediction=flow.prediction,
            text=flow.text, model=ex.name,
        )
    truncate = bool(options.pop("truncate", False))
    if options:
        raise InputError(f"unknown {method} option(s) {sorted(options)}; known: residual, sources, truncate")
    encoding = text if isinstance(text, Encoding) else ex.encode(text, truncate=truncate)
    budget.check_method(ex, method, encoding.n)  # the maps and their float64 copies
    cap = ex.capture(encoding, target)
    encoding = cap.encoding
    valid = _valid_positions(encoding)
    # the paper explains one row, the readout token's ([CLS] or the predicting position)
    picked = _pick_sources(ex, encoding, "readout" if sources is None else sources, valid)
    A = _capacities(ex, cap, "af", valid)
    if method == "rollout":
        per_source = rollout(A, residual)[-1][picked]
    else:
        per_source = attention_flow(A, residual, sources=picked)[picked]
    scores = _embed(per_source.mean(axis=0), valid, encoding.n, 1)
    return Attribution(
        tokens=list(cap.tokens), scores=scores, raw=scores.copy(), target=cap.target.public,
        target_label=cap.target.label, method=method,
        options={"residual": residual, "sources": [int(valid[k]) for k in picked]},
        prediction=cap.prediction, text=encoding.text, model=ex.name,
    )
