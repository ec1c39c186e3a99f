"""Encoder-decoders (T5, BART): the decoder's next token explained over the source and the target so far.

``ex.attribute(source, method=..., prefix="target so far")`` explains the token the decoder
predicts after ``prefix`` (default: the first target token); ``target`` picks a token as for
causal LMs (None = the argmax). :func:`attribute_generation` explains every token of a generated
(greedy) or given target, one row each. Tokens: source tokens, then the decoder's inputs
(:mod:`.seq2seq_input`). docs/ARCHITECTURE.md, sections "Rollout and attention flow", "Flows and GAF".

- ``attention``: the head-averaged **cross-attention** row of the predicting decoder position in
  one decoder layer (``layer``, default the last; ``layer="mean"`` averages the layers too), over
  the source tokens; decoder tokens score 0 (the cross-attention does not see them). Scores sum to 1.
- ``rollout`` / ``attention_flow`` / ``gaf``: over the encoder-decoder graph of
  :func:`xattr_lab.graphs.seq2seq.seq2seq_graph` (encoder self-attention, then per decoder layer
  its self-attention and its cross-attention sublayers), from the predicting position's top node.
  ``residual`` defaults to 0.5 for all three (for gaf too, unlike text: with r = 0 the
  cross-attention sublayer would cut every path back to the target tokens).
- ``ig`` / ``sig`` / ``grad_x_input``: as for text (:mod:`.seq2seq_gradients`), over the source
  and the decoder input embeddings together; special tokens and the decoder start token stay fixed.
- ``heads``: entropy and patterns of both stacks and the cross-attention. ``circuit``: not
  available (:data:`_NO_CIRCUIT`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..core import budget
from ..errors import InputError
from ..graphs.information import INFO_KINDS, information_tensor
from ..graphs.rollout import mix_residual_capacity
from ..graphs.seq2seq import graph_layer_names, seq2seq_graph
from ..results import Attribution, GenerationResult
from . import layered_methods as lm
from .seq2seq_input import Seq2SeqInput, attribution as _attribution, capture, prepare

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession

METHODS = ("attention", "rollout", "attention_flow", "gaf", "ig", "sig", "grad_x_input")
_RESIDUAL = 0.5
_NO_CIRCUIT = ("circuit discovery is not available for encoder-decoders: its SAE reads one stack's head outputs "
               "at prompt positions, and an encoder-decoder has three kinds of heads (encoder, decoder, cross) "
               "over two token sequences; explain a decoder-only or encoder-only model, or use ex.heads(...)")


def _attention(ex, item: Seq2SeqInput, target: Any, layer: int = -1) -> Attribution:
    cap = capture(ex, item, target)
    Ld = cap.cross_attentions.shape[0]
    if layer != "mean" and (isinstance(layer, bool) or not isinstance(layer, int) or not -Ld <= layer < Ld):
        raise InputError(f"layer must be 'mean' or a decoder layer index in -{Ld}..{Ld - 1}, not {layer!r}")
    maps = cap.cross_attentions.mean(0) if layer == "mean" else cap.cross_attentions[layer]  # (H, n_t, n_s)
    scores = np.zeros(item.n)
    scores[: item.n_source] = maps.mean(0)[-1].double().numpy()
    return _attribution(ex, item, "attention", scores, scores, cap.target, cap.prediction,
                        {"layer": layer, "source": item.readout, "attention": "cross"})


def _capacities(cap, info: str) -> np.ndarray:
    """The encoder-decoder graph (L_e + 2·L_d, n, n) of information ``info`` (GAF's AF/GF/AGF)."""
    nt = cap.decoder_attentions.shape[-1]
    parts = []
    stacks = (cap.attentions, cap.decoder_attentions, cap.cross_attentions)
    for k, (maps, grads) in enumerate(zip(stacks, (cap.attention_grads, cap.decoder_attention_grads,
                                                   cap.cross_attention_grads))):
        mask = np.tril(np.ones((nt, nt), dtype=bool)) if k == 1 else None
        maps, grads = maps.double().numpy(), None if grads is None else grads.double().numpy()
        if k == 2:  # cross-attention (L, H, n_t, n_s): the same definition on its block of a square map
            parts.append(information_tensor(*(_square(a) for a in (maps, grads)), info)[:, :nt, nt:])
        else:
            parts.append(information_tensor(maps, grads, info, mask=mask))
    through = 1.0 if info == "af" else max(float(sum(p.sum() for p in parts)), 1.0)
    return seq2seq_graph(*parts, through=through)


def _square(block: np.ndarray | None) -> np.ndarray | None:
    """(L, H, a, b) -> (L, H, a + b, a + b) with the block at rows :a, columns a: (zeros elsewhere)."""
    if block is None:
        return None
    L, H, a, b = block.shape
    out = np.zeros((L, H, a + b, a + b))
    out[:, :, :a, a:] = block
    return out


def graph(ex, item: Seq2SeqInput, method: str, target: Any, options: dict):
    """rollout / attention_flow / gaf (Attribution) or flow (FlowResult) over the encoder-decoder graph."""
    residual = options.pop("residual", _RESIDUAL)
    residual = _RESIDUAL if residual is None and method in ("gaf", "flow") else residual
    sources = options.pop("sources", None)
    info = options.pop("info", "agf") if method in ("gaf", "flow") else "af"
    mu = options.pop("mu", None) if method in ("gaf", "flow") else None
    solver = lm.solver_options(options)
    if options:
        raise InputError(f"unknown {method} option(s) for an encoder-decoder: {sorted(options)}")
    if info not in INFO_KINDS:
        raise InputError(f"unknown information kind {info!r}; choose one of {list(INFO_KINDS)}")
    cap = capture(ex, item, target, attention_grads=info != "af")
    C = _capacities(cap, info)
    picked = lm.pick_sources(sources, item.n, item.readout, "readout")
    layers = graph_layer_names(cap.attentions.shape[0], cap.decoder_attentions.shape[0])
    if method in ("rollout", "attention_flow"):
        scores = lm.rollout_or_flow(method, C, residual, picked)
        return _attribution(ex, item, method, scores, scores, cap.target, cap.prediction,
                            {"residual": residual, "sources": picked, "graph_layers": layers})
    meta = {"target": cap.target.public, "target_label": cap.target.label, "prediction": cap.prediction,
            "text": item.source, "model": ex.name,
            "options": {"n_source": item.n_source, "graph_layers": layers}}
    flow = lm.gaf_flow(mix_residual_capacity(C, residual), mu, picked, tokens=item.tokens, info=info,
                       residual=residual, device=ex.device, solver=solver, meta=meta)
    if method == "flow":
        return flow
    return _attribution(ex, item, "gaf", flow.attributions, flow.attributions, cap.target, cap.prediction,
                        {"info": info, "residual": residual, "sources": flow.sources, "mu": flow.mu,
                         "value": flow.value, "graph_layers": layers})


def _heads(ex, source: str, prefix: Any = None, max_map_tokens: int = 128, truncate: bool = False, thresholds=None):
    from ..results import HeadStats
    from .geometry import PATTERN_THRESHOLDS, TAXONOMY, attention_entropy, classify_patterns, pattern_scores

    item = prepare(ex, source, prefix, truncate)
    cap = capture(ex, item)
    enc, dec, cross = (m.double().numpy() for m in (cap.attentions, cap.decoder_attentions, cap.cross_attentions))
    if enc.shape[1] != dec.shape[1]:
        raise InputError("heads of an encoder-decoder whose stacks differ in head count are not supported")
    ns = item.n_source
    entropy = np.concatenate([attention_entropy(enc), attention_entropy(dec), _entropy(cross)])
    patterns = []
    if ns >= 2:
        patterns += classify_patterns(pattern_scores(enc, item.tokens[:ns], item.special_mask[:ns], False), thresholds)
    if item.n_target >= 2:
        patterns += classify_patterns(pattern_scores(dec, item.tokens[ns:], item.special_mask[ns:], True), thresholds)
    patterns += [["cross"] * cross.shape[1] for _ in range(cross.shape[0])]
    layers = ([f"enc {k}" for k in range(enc.shape[0])] + [f"dec {d} self" for d in range(dec.shape[0])]
              + [f"dec {d} cross" for d in range(cross.shape[0])])
    return HeadStats(
        tokens=list(item.tokens), entropy=entropy, cone_index=np.full(len(layers) + 1, np.nan),
        patterns=patterns if len(patterns) == len(layers) else [], texts=[source], model=ex.name,
        options={"layers": layers, "max_map_tokens": max_map_tokens, "taxonomy": TAXONOMY, "n_source": ns,
                 "thresholds": dict(PATTERN_THRESHOLDS, **(thresholds or {})),
                 "cone_index": "not computed for encoder-decoders (two token sequences)"})


def _entropy(cross: np.ndarray) -> np.ndarray:
    """(L, H, n_t, n_s) -> (L, H) mean row entropy in nats (0 ln 0 = 0)."""
    from scipy.special import xlogy

    return -xlogy(cross, cross).sum(-1).mean(-1)


def _run(ex, item: Seq2SeqInput, method: str, target: Any, options: dict):
    if method in lm.GRAPH_METHODS or method == "flow":
        return graph(ex, item, method, target, options)
    if method == "attention":
        return _attention(ex, item, target, **options)
    from .seq2seq_gradients import attribute as gradient_attribute

    return gradient_attribute(ex, item, method, target, **options)


def explain(ex: "ModelSession", verb: str, source: Any, method: str = "", target: Any = None, **options: Any):
    """What ``Explainer.attribute/flow/heads/circuit`` call for an encoder-decoder."""
    if verb == "circuit":
        raise InputError(_NO_CIRCUIT)
    if verb == "heads":
        return _heads(ex, source, **options)
    if verb == "attribute" and method not in METHODS:
        raise InputError(f"unknown method {method!r} for an encoder-decoder; choose one of {list(METHODS)}")
    options = dict(options)
    item = prepare(ex, source, options.pop("prefix", None), bool(options.pop("truncate", False)))
    with ex.restored():
        budget.check_method(ex, "gaf" if verb == "flow" else method, item.n, options)
        try:
            return _run(ex, item, "flow" if verb == "flow" else method, target, options)
        except TypeError as error:
            if "unexpected keyword" in str(error):
                raise InputError(f"{method} on an encoder-decoder: {error}") from None
            raise


def attribute_generation(ex: "ModelSession", source: str, max_new_tokens: int = 20, method: str = "ig",
                         target: str | None = None, callback: Callable[[Any], Any] | None = None,
                         truncate: bool = False, **options: Any) -> GenerationResult:
    """Every token of the target (greedy, or ``target`` text teacher-forced) explained over the source
    and the earlier target tokens -> ``GenerationResult``. Its "prompt" is the source tokens and the
    decoder start token; row t is the Attribution of ``ex.attribute(source, method, prefix=first t
    tokens)``. Greedy decoding stops at ``max_new_tokens`` or the end-of-sequence token (included).
    ``callback(partial)`` after each row; False stops the run (``Cancelled``)."""
    from ..errors import Cancelled

    if method not in METHODS:
        raise InputError(f"unknown method {method!r} for an encoder-decoder; choose one of {list(METHODS)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, not {max_new_tokens!r}")
    from .seq2seq_input import prefix_ids

    item = prepare(ex, source, None, truncate)
    forced = None if target is None else prefix_ids(ex, target)
    if forced is not None and not forced:
        raise InputError("target text tokenises to nothing; give a non-empty target or None for greedy decoding")
    steps = len(forced) if forced is not None else max_new_tokens
    eos = getattr(ex.tokenizer, "eos_token_id", None)
    rows, raws, ids = [], [], []
    prompt = item.n
    for t in range(steps):
        with ex.restored():
            result = _run(ex, item, method, None if forced is None else int(forced[t]), dict(options))
        token_id = int(result.target)
        rows.append(result.scores)
        raws.append(result.raw)
        ids.append(token_id)
        with ex.lock:
            token = ex.tokenizer.convert_ids_to_tokens(token_id)
        item = item.with_token(token_id, token)
        partial = _generation(ex, item, prompt, rows, raws, ids, method, source, target, options)
        if callback is not None and callback(partial) is False:
            raise Cancelled(f"generation attribution cancelled after {t + 1} of {steps} tokens")
        if forced is None and eos is not None and token_id == eos:
            break
    return partial


def _generation(ex, item, prompt, rows, raws, ids, method, source, target, options) -> GenerationResult:
    T = len(ids)
    n = prompt + T
    matrix, raw = np.full((T, n), np.nan), np.full((T, n), np.nan)
    for t, (row, r) in enumerate(zip(rows, raws)):
        matrix[t, : len(row)], raw[t, : len(r)] = row, r
    with ex.lock:
        generated = [ex.tokenizer.decode([i]) for i in ids]
    return GenerationResult(tokens=list(item.tokens[:n]), generated=generated, matrix=matrix, raw=raw,
                            generated_ids=ids, prompt_length=prompt, method=method,
                            options={**options, "n_source": item.n_source, "rows_done": T, "encoder_decoder": True},
                            prompt=source, target=target, model=ex.name)
