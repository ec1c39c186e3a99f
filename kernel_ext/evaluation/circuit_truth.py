"""Ground truth for circuits without a published circuit: path patching, and mean-ablation effects.

:func:`patching_truth` finds a circuit by rounds of path patching (Wang et al. 2022) with bootstrap
intervals (:mod:`.circuit_patching`; the IOI and toy truths, cached, are in :mod:`.circuit_reference`);
:func:`attention_entropy` is a label-free baseline.

:func:`head_ablation_effects` measures the drop in a task metric when one head is mean-ablated
(its ``z`` slice replaced by the mean over negatives at each position); :func:`truth_mask`
thresholds it. Flat head index everywhere: ``l * H + h``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.capture import check_prompts as _check_prompts, encode_batch as _encode_batch
from ..core.capture import equal_lengths as _equal_lengths, progress_bar as _progress
from ..core.capture import projection_inputs_by_batch
from ..core.session import ModelSession
from ..errors import InputError

#: a metric maps a batch of model logits, (R, n, V) or (R, C), and the prompt index of each row
#: (R,) to one number per row (R,), e.g. a logit difference at the last position.
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def logit_difference(correct: Sequence[int], incorrect: Sequence[int], position: int = -1) -> Metric:
    """Metric: logit(correct[i]) - logit(incorrect[i]) at token ``position`` of prompt i."""
    a = torch.as_tensor(list(correct), dtype=torch.long)
    b = torch.as_tensor(list(incorrect), dtype=torch.long)

    def metric(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        row = logits[:, position] if logits.dim() == 3 else logits
        idx = index.to(row.device)
        r = torch.arange(row.shape[0], device=row.device)
        return row[r, a.to(row.device)[idx]] - row[r, b.to(row.device)[idx]]

    return metric


def _as_metric(metric: Any) -> Metric:
    if callable(metric):
        return metric
    if isinstance(metric, (tuple, list)) and len(metric) == 2:
        return logit_difference(*metric)
    raise InputError("metric must be a callable (logits, prompt_index) -> (rows,) or a pair (correct_ids, incorrect_ids)")


def _mean_projection_inputs(ex: ModelSession, ids: torch.Tensor, mask: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Mean over prompts of each layer's output-projection input z at each position: L x (n, H*head_dim)."""
    sums: dict[int, torch.Tensor] = {}
    for batch in projection_inputs_by_batch(ex, ids, mask, batch_size, lambda z: z.sum(dim=0)):
        for layer, total in batch.items():
            sums[layer] = total if layer not in sums else sums[layer] + total
    return [sums[l] / ids.shape[0] for l in range(ex.adapter.n_layers)]


def head_ablation_effects(
    ex: ModelSession,
    prompts: Sequence[str],
    metric: Any,
    negatives: Sequence[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
    logit_positions: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> np.ndarray:
    """Mean-ablation effect of every head: (L, H) float64, in metric units.

    effect[l, h] = mean over prompts of metric(clean) − metric(head (l, h) ablated). Ablating
    replaces that head's slice of the output-projection input z, at each position, by its mean over
    ``negatives`` (default: over ``prompts``) — so every prompt and negative must have the same
    token length. ``metric``: callable (logits, prompt_index) -> (rows,), or a pair of token-id
    lists (correct, incorrect) for a logit difference at the last position. All (head, prompt)
    pairs run as rows of big batches (``batch_size`` rows per forward pass).

    ``logit_positions``: when the metric reads only some positions (e.g. ``[-1]``), a language
    model computes logits only there (the metric then sees (R, len(logit_positions), V)); on
    smollm2-135m this skips about a fifth of the compute (the 49k-word unembedding).

    ``heads``: flat indices ``l * H + h`` to ablate (default all; the others are NaN) — a shard of
    the dataset-scale run, :func:`xattr_lab.evaluation.circuit_truth_sharded.ablation_effects` (``backend=``).
    """
    prompts = _check_prompts(prompts, "ablation", 1)
    negatives = prompts if negatives is None else _check_prompts(negatives, "negative", 1)
    metric = _as_metric(metric)
    adapter = ex.adapter
    L, H, k = adapter.n_layers, adapter.n_heads, adapter.head_dim
    ids, mask = _encode_batch(ex, prompts)
    neg_ids, neg_mask = _encode_batch(ex, negatives)
    n = _equal_lengths(mask, "mean ablation")
    if _equal_lengths(neg_mask, "mean ablation") != n:
        raise InputError(
            f"mean ablation needs negatives as long as the prompts ({n} tokens), but they have {neg_ids.shape[1]}; "
            "build both from the same templates"
        )
    means = _mean_projection_inputs(ex, neg_ids, neg_mask, batch_size)  # L x (n, H*k)
    with ex.restored(), torch.no_grad():
        unembed = ex.model.get_output_embeddings() if hasattr(ex.model, "get_output_embeddings") else None
        if logit_positions is not None and unembed is not None:
            keep = torch.as_tensor(list(logit_positions), dtype=torch.long)

            def only_positions(module, args):
                return (args[0][:, keep.to(args[0].device)],) + tuple(args[1:])

            ex.add_hook(unembed, only_positions, pre=True)
        # clean metric, then every (head, prompt) row with that head's z slice replaced
        clean = torch.cat([
            metric(ex.forward(input_ids=ids[s : s + batch_size], attention_mask=mask[s : s + batch_size]).logits,
                   torch.arange(s, min(s + batch_size, len(prompts)))).float().cpu()
            for s in range(0, len(prompts), batch_size)
        ])
        chosen = torch.arange(L * H) if heads is None else torch.as_tensor([int(h) for h in heads], dtype=torch.long)
        rows_head = chosen.repeat_interleave(len(prompts))  # flat head of each row
        rows_prompt = torch.arange(len(prompts)).repeat(len(chosen))
        feature_head = torch.arange(H * k) // k  # which head each z feature belongs to
        current: dict[str, torch.Tensor] = {}

        for layer, proj in enumerate(adapter.out_projections):
            def ablate(module, args, layer=layer):
                z = args[0]
                heads = current["heads"]  # (R,) flat head per row
                hit = (heads // H == layer)
                if not bool(hit.any()):
                    return None
                replace = hit[:, None] & (feature_head[None, :].to(z.device) == (heads % H)[:, None])  # (R, H*k)
                z = torch.where(replace[:, None, :], means[layer].to(z.dtype)[None], z)
                return (z,) + tuple(args[1:])

            ex.add_hook(proj, ablate, pre=True)
        ablated = torch.empty(rows_head.numel())
        starts = range(0, rows_head.numel(), batch_size)
        for start in _progress(starts, len(starts), "head ablations", progress):
            sl = slice(start, start + batch_size)
            current["heads"] = rows_head[sl].to(ex.device)
            p = rows_prompt[sl]
            logits = ex.forward(input_ids=ids[p.to(ids.device)], attention_mask=mask[p.to(mask.device)]).logits
            ablated[sl] = metric(logits, p).float().cpu()
    values = torch.cat([clean, ablated])
    if float(values.max() - values.min()) <= 1e-9 * max(1.0, float(values.abs().max())):
        raise InputError("the metric is constant: no prompt and no ablation changes it; check the metric and answer tokens")
    drop = clean.repeat(len(chosen)) - ablated
    effects = torch.full((L * H,), float("nan"), dtype=torch.float64)
    effects[chosen] = drop.reshape(len(chosen), len(prompts)).mean(dim=1).double()
    return effects.reshape(L, H).numpy()


def truth_mask(effects: Any, fraction: float = 0.1, top: int | None = None, absolute: bool = True) -> np.ndarray:
    """Boolean (L, H) ground-truth circuit from ablation effects.

    A head is in the circuit when its effect (its absolute value when ``absolute``; heads that
    help the task when ablated, such as negative name movers, count too) is at least
    ``fraction`` of the largest; or, when ``top`` is given, the ``top`` largest.
    """
    e = np.asarray(effects, dtype=np.float64)
    v = np.abs(e) if absolute else e
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        raise InputError("the ablation effects are constant: no head stands out, so there is no ground truth")
    if top is not None:
        order = np.argsort(-v.ravel(), kind="stable")[:top]
        mask = np.zeros(v.size, dtype=bool)
        mask[order] = True
        return mask.reshape(v.shape)
    return v >= fraction * v.max()




# ---------------------------------------------------------------------------- path-patching truth
TRUTH_VERSION = 2
_SHARDING: contextvars.ContextVar = contextvars.ContextVar("xattr_patching_sharding", default=None)


@contextlib.contextmanager
def sharding(backend: str = "local", address: str | None = None, workers: int | None = None, out: str | None = None):
    """Inside the block, :func:`patching_truth` calls that pass no ``backend`` (e.g. the cached IOI and toy
    truths of :mod:`.circuit_reference`) shard their rounds with these options."""
    token = _SHARDING.set({"backend": backend, "address": address, "workers": workers, "out": out})
    try:
        yield
    finally:
        _SHARDING.reset(token)


IOI_ROUNDS = ("name movers (-> logits)", "S-inhibition (-> name movers)", "induction / duplicate-token (-> S-inhibition)")
#: (pass A, pass B) modes per round for IOI (xattr_lab.evaluation.circuit_patching): the name
#: movers and S-inhibition heads act at the last token; induction and duplicate-token heads act at
#: S2, so their round patches every position.
IOI_MODES = (("last", "last"), ("last", "last"), ("full", "last"))


@dataclass
class CircuitTruth:
    """A ground-truth circuit: ``nodes`` (L, H) bool, ``edges`` (L*H, L*H) bool (sender -> receiver),
    the heads of each round (``classes``), and each round's effects and bootstrap intervals."""

    nodes: np.ndarray
    edges: np.ndarray
    classes: dict[str, list[int]] = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        L, H = self.nodes.shape
        return json.dumps({"shape": [L, H], "nodes": np.flatnonzero(self.nodes).tolist(),
                           "edges": np.argwhere(self.edges).tolist(), "classes": self.classes,
                           "rounds": self.rounds, "info": self.info})

    @classmethod
    def from_json(cls, text: str) -> "CircuitTruth":
        d = json.loads(text)
        L, H = d["shape"]
        nodes = np.zeros(L * H, bool)
        nodes[d["nodes"]] = True
        edges = np.zeros((L * H, L * H), bool)
        for a, b in d["edges"]:
            edges[a, b] = True
        return cls(nodes.reshape(L, H), edges, d["classes"], d["rounds"], d["info"])


def patching_truth(ex: ModelSession, prompts: Sequence[str], corrupted: Sequence[str], metric: Any,
                   names: Sequence[str] = IOI_ROUNDS, modes: Sequence[tuple[str, str]] = IOI_MODES,
                   fraction: float = 0.1, n_boot: int = 2000, batch_size: int = 64, progress: bool = True, *,
                   backend: str | None = None, address: str | None = None, workers: int | None = None,
                   out: str | None = None) -> CircuitTruth:
    """Rounds of path patching (Wang et al. 2022): round 1 patches every head into the logits; round
    r + 1 patches every earlier head not yet found into the heads found in round r. A round keeps a
    head when its |mean effect| is >= ``fraction`` of the largest in round 1 (every round is measured
    on the same metric, so a round of tiny effects keeps nothing) and its bootstrap 95% CI over
    prompts excludes zero (:func:`~xattr_lab.evaluation.circuit_patching.select_heads`). Edges: a
    head found in round r + 1 -> each head of round r in a later layer.

    ``backend`` None (default): every round runs here. ``"local"`` or ``"ray"`` (``address``, ``workers``):
    each round's senders are sharded (:func:`xattr_lab.evaluation.circuit_patching_sharded.patching_effects`; ``out``
    a folder to resume from), same effects up to batch composition; None also takes the options of an
    enclosing :func:`sharding` block."""
    from .circuit_patching import path_patch, prepare_runs, select_heads

    start = time.perf_counter()
    shard = dict(_SHARDING.get() or {}) if backend is None else {"backend": backend, "address": address,
                                                                  "workers": workers, "out": out}
    runs = None if shard else prepare_runs(ex, prompts, corrupted, _as_metric(metric), batch_size)
    L, H = ex.n_layers, ex.n_heads
    nodes, edges = np.zeros(L * H, bool), np.zeros((L * H, L * H), bool)
    classes, rounds, receivers, scale = {}, [], None, None
    for name, (mode_a, mode_b) in zip(names, modes):
        senders = list(range(L * H)) if receivers is None else [
            h for h in range(L * H) if h // H < max(r // H for r in receivers) and not nodes[h]]
        if not senders:
            break
        if shard:
            from .circuit_patching_sharded import patching_effects

            effects = patching_effects(ex, prompts, corrupted, _as_metric(metric), senders, receivers, mode_a, mode_b,
                                       batch_size, progress=progress, **shard)
        else:
            effects = path_patch(ex, runs, senders, receivers, mode_a, mode_b, batch_size, progress)
        chosen = select_heads(senders, effects, fraction, n_boot, scale=scale)
        scale = scale if scale is not None else float(np.abs(chosen["mean"]).max())
        chosen.update(name=name, receivers=receivers, modes=[mode_a, mode_b])
        rounds.append(chosen)
        classes[name] = chosen["heads"]
        for s in chosen["heads"]:
            nodes[s] = True
            for r in receivers or []:
                edges[s, r] = s // H < r // H
        if not chosen["heads"]:
            break
        receivers = chosen["heads"]
    return CircuitTruth(nodes.reshape(L, H), edges, classes, rounds,
                        {"prompts": len(prompts), "fraction": fraction, "seconds": time.perf_counter() - start})


def attention_entropy(ex: ModelSession, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """Label-free baseline: mean attention entropy (nats) of each head over the valid query rows after the
    first, over ``prompts``: (L, H) float64."""
    prompts = _check_prompts(prompts, "entropy", 1)
    total, count = None, 0.0
    with ex.restored(), torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            ids, mask = _encode_batch(ex, prompts[s : s + batch_size])
            attn = torch.stack(ex.forward(input_ids=ids, attention_mask=mask, output_attentions=True).attentions, 1)
            ent = -(attn.float().clamp_min(1e-12).log() * attn.float()).sum(-1)  # (B, L, H, n)
            rows = mask.float().clone()
            rows[:, 0] = 0
            part = (ent * rows[:, None, None, :]).sum(dim=(0, 3))
            total = part if total is None else total + part
            count += float(rows.sum())
    return (total / count).double().cpu().numpy()
