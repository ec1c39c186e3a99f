"""The paired robustness experiment: four arms × two permissions per text and method, cached.

For each text and method (docs/ARCHITECTURE.md, section "Robustness"): attribute the original, then
run every arm of :mod:`.search` twice — with permission to replace the original top-k tokens ("any")
and without it ("kept": the top-``max(ks)`` tokens and the tokens of the top-``max(ks)`` words are
protected, so no arm replaces a top-k token or word at any k read) — and keep the perturbed scores.
Arms, with the seed ``seed + text index`` shared by all of them:

    neighbour  one unselected neighbour substitution draw       1 query
    search     random search over the same proposals            budget·queries queries
    attack     gradient-guided search                           budget·queries queries
    noise      dense Gaussian embedding noise with the Frobenius norm of the neighbour arm's
               embedding change on the same text and permission  1 query

A perturbation is kept only when the prediction (argmax label) of its final attribution equals the
original's; otherwise, or when nothing could be substituted, it is dropped with a reason (counted in
the report). Records are cached one JSON file per (config, method, text) under
``cache_dir()/robustness/<key>``, where the key hashes the model, the options and the source of the
modules the numbers depend on: an interrupted run resumes, a changed option or code starts afresh.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...constants import DEFAULT_MODEL
from ...errors import InputError
from . import chance, metrics, perturbations, search, text_edits
from .search import (embedding_change_norm, embedding_noise, gradient_search, neighbour_search, objective_of,
                     predicted_label, protected_positions)

#: what ``xa.robustness`` offers; the cache's parts (:func:`sampled_fingerprint`, :func:`cache_folder`,
#: :func:`record_path`, :func:`store_record`) are public too, for the sharded job in :mod:`.sharded`
__all__ = ["ExperimentConfig", "ARMS", "PERMISSIONS", "run_text", "run_experiment", "word_ids"]

ARMS = ("neighbour", "search", "attack", "noise")
PERMISSIONS = ("any", "kept")


@dataclass
class ExperimentConfig:
    """Options of one experiment. ``queries``: candidates evaluated per greedy step by the two searches."""

    model: str = DEFAULT_MODEL
    methods: tuple[str, ...] = ("ig", "sig", "gaf", "attention")
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    ks: tuple[int, ...] = (1, 2, 3, 5, 8)
    ws: tuple[int, ...] = (1, 3, 5)
    budget: int = 2
    queries: int = 4
    neighbours: int = 16
    surrogate_k: int = 3
    seed: int = 0

    def key(self, fingerprint: str = "") -> str:
        payload = json.dumps({"config": asdict(self), "code": code_version(), "model": fingerprint}, sort_keys=True,
                             default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def code_version() -> str:
    """Hash (16 hex digits) of the source of the modules the records depend on: the experiment's own, the
    metrics, chance levels, perturbations, searches and their text edits, and the four method families."""
    from ...methods import registry

    digest = hashlib.sha256()
    modules = [perturbations, metrics, chance, search, text_edits]
    for name in ("ig", "sig", "gaf", "attention"):
        try:
            modules.append(inspect.getmodule(registry.function(name)))
        except (ImportError, KeyError):
            continue
    for module in modules + [inspect.getmodule(run_text)]:
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def word_ids(ex, text: str) -> list[int | None]:
    """The tokenizer's word index of each token (None for special tokens)."""
    encoding = ex.encode(text)
    ids = ex.tokenizer(text).word_ids()
    if len(ids) != encoding.n:
        raise InputError("word ids do not match the tokens; word-level maps need a fast tokenizer")
    return [None if special else w for w, special in zip(ids, encoding.special_mask)]


def _record_arm(pert, started: float, label: str | None) -> dict[str, Any]:
    info = pert.info
    arm: dict[str, Any] = {"positions": [int(p) for p in pert.positions], "text": pert.text,
                           "queries": int(info.get("queries", 0)), "seconds": time.perf_counter() - started,
                           "kept": False, "reason": info.get("dropped")}
    if not pert.positions:
        arm["reason"] = arm["reason"] or "no substitution kept the prediction"
        return arm
    if info.get("predicted") != label:  # the method's own forward pass on the final input
        arm["reason"] = "the prediction changed"
        return arm
    arm.update(kept=True, reason=None, scores=np.asarray(info["scores"], dtype=np.float64).tolist())
    if "norm" in info:
        arm["norm"] = info["norm"]
    return arm


def run_text(ex, text: str, method: str, config: ExperimentConfig, index: int = 0) -> dict[str, Any]:
    """All arms and permissions for one text and method -> a JSON-able record."""
    options = dict(config.method_options.get(method, {}))
    started, cpu = time.perf_counter(), time.process_time()
    original = ex.attribute(text, method=method, **options)
    encoding = ex.encode(text)
    scores = np.asarray(original.scores, dtype=np.float64)
    keep = ~np.asarray(encoding.special_mask)
    words = word_ids(ex, text)
    label = predicted_label(original)
    objective = objective_of(scores, keep, config.ks, config.surrogate_k)
    seed = config.seed + index
    record: dict[str, Any] = {
        "text": text, "method": method, "index": index, "tokens": list(encoding.tokens),
        "special": [bool(s) for s in encoding.special_mask], "word_ids": words, "label": label,
        "original": scores.tolist(), "arms": {},
    }
    common = dict(method_options=options)
    for permission in PERMISSIONS:
        protect = protected_positions(scores, encoding.special_mask, words, max(config.ks)) if permission == "kept" else []
        arms: dict[str, Any] = {}
        t = time.perf_counter()
        pert = neighbour_search(ex, text, method, config.budget, 1, seed, protect=protect,
                                neighbours=config.neighbours, **common)
        arms["neighbour"] = _record_arm(pert, t, label)
        norm = embedding_change_norm(ex, text, pert.text) if pert.positions else None
        t = time.perf_counter()
        pert = neighbour_search(ex, text, method, config.budget, config.queries, seed, protect=protect,
                                objective=objective, neighbours=config.neighbours, **common)
        arms["search"] = _record_arm(pert, t, label)
        t = time.perf_counter()
        pert = gradient_search(ex, text, method, config.budget, config.queries, seed, protect=protect,
                               objective=objective, original=scores, surrogate_k=config.surrogate_k,
                               neighbours=config.neighbours, **common)
        arms["attack"] = _record_arm(pert, t, label)
        t = time.perf_counter()
        if norm is None:
            arms["noise"] = {"kept": False, "reason": "no neighbour substitution to match the norm of",
                             "positions": [], "queries": 0, "seconds": 0.0}
        else:
            pert = embedding_noise(ex, text, method, norm=norm, seed=seed, protect=protect, **common)
            arms["noise"] = _record_arm(pert, t, label)
        record["arms"][permission] = arms
    record["seconds"] = time.perf_counter() - started
    record["cpu_seconds"] = time.process_time() - cpu
    return record


def store_record(path: Path, record: dict) -> None:
    """Write one record as JSON to ``path`` atomically (a temporary file in the same folder, then renamed), so an
    interrupted run never leaves a half-written record that a resumed run would read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle)
    os.replace(tmp, path)


def sampled_fingerprint(ex) -> str:
    """Hash (16 hex digits) of the model's name and the first 4,096 values of its first, middle and last
    parameter tensors: a quick identity of the weights for the record cache's key (unlike
    :func:`xattr_lab.evaluation.provenance.model_fingerprint`, which hashes every parameter)."""
    digest = hashlib.sha256(str(ex.name).encode())
    params = list(ex.model.parameters())
    for p in (params[0], params[len(params) // 2], params[-1]):
        digest.update(p.detach().float().reshape(-1)[:4096].cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_folder(config: ExperimentConfig, fingerprint: str, cache: str | Path | bool = True) -> Path | None:
    """The folder of the cached records: ``cache_dir()/robustness/<config key>`` when ``cache`` is True, the
    folder ``cache`` names otherwise, None when ``cache`` is False (nothing cached)."""
    if not cache:
        return None
    if cache is True:
        from ...core.cache import cache_dir

        return cache_dir() / "robustness" / config.key(fingerprint)
    return Path(cache)


def record_path(folder: Path | None, method: str, text: str) -> Path | None:
    """Where the record of (method, text) is cached under ``folder`` (``<method>/<sha256(text)[:24]>.json``)."""
    return None if folder is None else folder / method / (hashlib.sha256(text.encode()).hexdigest()[:24] + ".json")


def run_experiment(ex, texts: Sequence[str], config: ExperimentConfig, *, methods: Sequence[str] | None = None,
                   limits: dict[str, int] | None = None, cache: str | Path | bool = True,
                   shard: tuple[int, int] = (0, 1), progress: bool = True, compute: bool = True) -> list[dict]:
    """Records for every (method, text) in this shard; cached ones are read, missing ones computed.

    limits: {method: number of texts} to run a costly method on the first texts only.
    shard (i, n): compute only texts with index % n == i (run n processes, then once with
    ``compute=False`` to collect all cached records). Returns the records found or made.
    """
    methods = list(methods or config.methods)
    limits = dict(limits or {})
    folder = cache_folder(config, sampled_fingerprint(ex) if cache is True else "", cache)
    jobs = [(m, i, t) for m in methods for i, t in enumerate(texts[: limits.get(m, len(texts))])]
    iterator: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc=f"robustness {shard[0]}/{shard[1]}")
    records = []
    for method, index, text in iterator:
        path = record_path(folder, method, text)
        if path is not None and path.exists():
            try:
                records.append(json.loads(path.read_text()))
                continue
            except ValueError:
                pass
        if not compute or index % shard[1] != shard[0]:
            continue
        record = run_text(ex, text, method, config, index)
        if path is not None:
            store_record(path, record)
        records.append(record)
    return records
