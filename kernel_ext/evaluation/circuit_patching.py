"""Ground truth by path patching, in the manner of Wang et al. (2022), with bootstrap intervals.

Path patching of a sender head s into receivers R (docs/ARCHITECTURE.md, section "SAE circuits"),
on prompts x and their corrupted twins x' (same template, the information the circuit uses removed):

- pass A: run x with s's output (its slice of the output-projection input z) taken from x', every
  other head frozen at its output on x (MLPs and norms recomputed, as in Wang et al.); record the
  output each receiver computes from that residual stream;
- pass B: run x with only the receivers' outputs replaced by the recorded ones, everything else
  recomputed; the effect is metric(pass B) − metric(x).

With no receivers ("logits"), pass A alone is the measurement: s's paths to the output that do
not run through another head. Rows (sender, prompt) run in big batches. When the metric reads only
the last token and the model takes a key/value cache, a pass that changes only the last position
runs that token alone on the clean prompt's cached prefix (``mode="last"``): receivers then see the
patch through their query at the last token (Wang et al. patch the name movers' queries), and the
pass costs one token instead of the whole prompt. ``mode="full"`` patches every position.

:func:`select_heads` keeps a head when its mean effect is at least ``fraction`` of the largest and
a percentile bootstrap 95% interval over prompts excludes zero.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..core.capture import encode_batch, equal_lengths, progress_bar
from ..core.capture import projection_inputs
from ..core.session import ModelSession
from ..errors import InputError


class _StopPatching(Exception):
    """Raised by the sender pass's hook at the last receiver layer: the layers above it are not needed."""


Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PatchRuns:
    """Clean and corrupted runs of one prompt set: z of every layer, L x (P, n, H*head_dim)."""

    ids: torch.Tensor
    mask: torch.Tensor
    z_clean: list[torch.Tensor]
    z_corrupt: list[torch.Tensor]
    metric: Metric
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # clean key/value cache of all but the last token
    clean: dict[str, torch.Tensor] = field(default_factory=dict)  # clean metric per prompt, by mode


def _cache_keyword(model: torch.nn.Module) -> str | None:
    names = inspect.signature(model.forward).parameters
    return next((k for k in ("past_key_values", "cache") if k in names), None)


def _prefix_cache(ex: ModelSession, ids: torch.Tensor, mask: torch.Tensor) -> list | None:
    """The clean key/value cache of every prompt but its last token, or None when the model keeps none."""
    if _cache_keyword(ex.model) is None:
        return None
    with ex.restored(), torch.no_grad():
        out = ex.model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
    cache = getattr(out, "past_key_values", None)
    layers = getattr(cache, "layers", None)
    if not layers or getattr(layers[0], "keys", None) is None:
        return None
    return [(layer.keys, layer.values) for layer in layers]


def prepare_runs(ex: ModelSession, prompts: Sequence[str], corrupted: Sequence[str], metric: Metric,
                 batch_size: int = 64) -> PatchRuns:
    """Record z on the prompts and their corrupted twins (equal token lengths, paired by index)."""
    if len(prompts) != len(corrupted) or not prompts:
        raise InputError("path patching needs as many corrupted prompts as prompts, paired by index")
    ids, mask = encode_batch(ex, list(prompts))
    bad_ids, bad_mask = encode_batch(ex, list(corrupted))
    n = equal_lengths(mask, "path patching")
    if equal_lengths(bad_mask, "path patching") != n:
        raise InputError(f"corrupted prompts must have the prompts' {n} tokens; build both from one template")
    return PatchRuns(ids, mask, projection_inputs(ex, ids, mask, batch_size, to_cpu=True),
                     projection_inputs(ex, bad_ids, bad_mask, batch_size, to_cpu=True),
                     metric, _prefix_cache(ex, ids, mask))


def _forward(ex: ModelSession, runs: PatchRuns, prompts: torch.Tensor, mode: str):
    ids, mask = runs.ids[prompts], runs.mask[prompts]
    if mode == "full":
        return ex.forward(input_ids=ids, attention_mask=mask)
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(k[prompts.to(k.device)], v[prompts.to(v.device)]) for k, v in runs.prefix])
    return ex.model(input_ids=ids[:, -1:], attention_mask=mask, use_cache=True, **{_cache_keyword(ex.model): cache})


def _clean_metric(ex: ModelSession, runs: PatchRuns, mode: str, batch_size: int) -> torch.Tensor:
    if mode not in runs.clean:
        P = runs.ids.shape[0]
        with ex.restored(), torch.no_grad():
            runs.clean[mode] = torch.cat([
                runs.metric(_forward(ex, runs, torch.arange(s, min(s + batch_size, P)), mode).logits,
                            torch.arange(s, min(s + batch_size, P))).float().cpu()
                for s in range(0, P, batch_size)])
    return runs.clean[mode]


def path_patch(ex: ModelSession, runs: PatchRuns, senders: Sequence[int], receivers: Sequence[int] | None = None,
               mode_a: str = "last", mode_b: str = "last", batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Effects (len(senders), P): metric after patching each sender (into ``receivers``) minus clean.

    Flat head indices ``l * H + h``. ``mode_a`` / ``mode_b``: "last" or "full" for passes A and B
    (module docstring); "last" falls back to "full" when the model keeps no key/value cache.
    """
    adapter = ex.adapter
    H, k = adapter.n_heads, adapter.head_dim
    if runs.prefix is None:
        mode_a = mode_b = "full"
    for mode in (mode_a, mode_b):
        if mode not in ("last", "full"):
            raise InputError(f"mode must be 'last' or 'full', not {mode!r}")
    P = runs.ids.shape[0]
    senders = torch.as_tensor(list(senders), dtype=torch.long)
    recv = sorted(set(receivers or []))
    by_layer: dict[int, torch.Tensor] = {}
    for head in recv:
        by_layer.setdefault(head // H, []).append(head % H)
    cols = {l: torch.cat([torch.arange(h * k, (h + 1) * k) for h in hs]) for l, hs in by_layer.items()}
    stop = max(by_layer) if recv else None
    feature_head = torch.arange(H * k) // k
    rows_sender, rows_prompt = senders.repeat_interleave(P), torch.arange(P).repeat(len(senders))
    state: dict[str, Any] = {}

    def hook_a(module, args, layer):
        z = args[0]
        m, p = z.shape[1], state["p"]
        clean = runs.z_clean[layer][p][:, -m:].to(z)
        if layer in cols:
            state["recorded"][layer] = z[..., cols[layer].to(z.device)].detach().clone()
        hit = (state["s"] // H == layer)[:, None] & (feature_head[None, :] == (state["s"] % H)[:, None])
        new = torch.where(hit[:, None, :].to(z.device), runs.z_corrupt[layer][p][:, -m:].to(z), clean)
        if stop is not None and layer == stop:
            raise _StopPatching
        return (new,) + tuple(args[1:])

    def hook_b(module, args, layer):
        if layer not in cols:
            return None
        z = args[0].clone()
        z[..., cols[layer].to(z.device)] = state["recorded"][layer][:, -z.shape[1]:].to(z)
        return (z,) + tuple(args[1:])

    out = torch.empty(rows_sender.numel())
    starts = range(0, rows_sender.numel(), batch_size)
    for start in progress_bar(starts, len(starts), f"path patching {len(senders)} heads", progress):
        sl = slice(start, start + batch_size)
        state.update(s=rows_sender[sl], p=rows_prompt[sl], recorded={})
        with ex.restored(), torch.no_grad():
            for layer, proj in enumerate(adapter.out_projections):
                ex.add_hook(proj, lambda m, a, layer=layer: hook_a(m, a, layer), pre=True)
            try:
                logits = _forward(ex, runs, state["p"], mode_a).logits
            except _StopPatching:
                logits = None
        if not recv:
            out[sl] = runs.metric(logits, state["p"]).float().cpu()
            continue
        with ex.restored(), torch.no_grad():
            for layer, proj in enumerate(adapter.out_projections):
                ex.add_hook(proj, lambda m, a, layer=layer: hook_b(m, a, layer), pre=True)
            out[sl] = runs.metric(_forward(ex, runs, state["p"], mode_b).logits, state["p"]).float().cpu()
    clean = _clean_metric(ex, runs, mode_a if not recv else mode_b, batch_size)
    return (out.reshape(len(senders), P) - clean[None, :]).double().numpy()


def bootstrap_ci(effects: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval of the mean over prompts: effects (S, P) -> (S, 2)."""
    effects = np.asarray(effects, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, effects.shape[1], size=(n_boot, effects.shape[1]))
    means = effects[:, idx].mean(axis=2)  # (S, n_boot)
    alpha = (1 - level) / 2
    return np.stack([np.quantile(means, alpha, axis=1), np.quantile(means, 1 - alpha, axis=1)], axis=1)


def select_heads(senders: Sequence[int], effects: np.ndarray, fraction: float = 0.1, n_boot: int = 2000,
                 seed: int = 0, scale: float | None = None) -> dict[str, Any]:
    """Heads whose |mean effect| >= fraction * ``scale`` (default: the largest |mean effect| here) and
    whose bootstrap 95% CI excludes zero."""
    mean = effects.mean(axis=1)
    ci = bootstrap_ci(effects, n_boot, seed)
    scale = float(np.abs(mean).max()) if scale is None else float(scale)
    big = np.abs(mean) >= fraction * scale if scale > 0 else np.zeros(len(mean), bool)
    keep = big & ((ci[:, 0] > 0) | (ci[:, 1] < 0))
    return {"heads": [int(s) for s, kept in zip(senders, keep) if kept], "senders": [int(s) for s in senders],
            "mean": mean.tolist(), "ci": ci.tolist()}
