"""The reference circuits of docs/results.md: IOI on a language model and the toy's induction circuit,
found by path patching (:func:`xattr_lab.evaluation.circuit_truth.patching_truth`) and cached once per
model and options under ``cache_dir()/circuits/`` (docs/ARCHITECTURE.md, section "SAE circuits")."""
from __future__ import annotations

import hashlib
import json
from typing import Callable

from ..core.session import ModelSession
from .circuit_truth import IOI_MODES, IOI_ROUNDS, TRUTH_VERSION, CircuitTruth, patching_truth


def _cached_truth(key: dict, build: Callable[[], CircuitTruth], rebuild: bool = False) -> CircuitTruth:
    from ..core.cache import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "circuits" / f"truth-{key['model']}-{digest}.json"
    if path.exists() and not rebuild:
        return CircuitTruth.from_json(path.read_text())
    truth = build()
    truth.info["key"] = key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(truth.to_json())
    tmp.replace(path)
    return truth


def ioi_truth(ex: ModelSession, n: int = 24, seed: int = 1000, fraction: float = 0.1, batch_size: int = 64,
              progress: bool = True, rebuild: bool = False) -> CircuitTruth:
    """IOI circuit by three rounds of path patching on ``n`` prompts (seed 1000: disjoint from the SAE's
    prompts, which use seeds from 0) vs their ABC negatives; cached per model and options."""
    from .tasks import ioi_prompts

    key = {"version": TRUTH_VERSION, "model": ex.name, "task": "ioi", "n": n, "seed": seed, "fraction": fraction,
           "modes": IOI_MODES}
    task = ioi_prompts(ex.tokenizer, n=n, seed=seed)
    return _cached_truth(key, lambda: patching_truth(ex, task.positive, task.negative, task.metric, IOI_ROUNDS,
                                                      IOI_MODES, fraction, batch_size=batch_size, progress=progress),
                         rebuild)


def toy_truth(ex: ModelSession, n: int = 60, seed: int = 1, fraction: float = 0.1, progress: bool = False,
              rebuild: bool = False) -> CircuitTruth:
    """The toy's induction circuit: path patching "x y" into "x x" prompts, heads into the logits (the copy
    heads), then earlier heads into those (the duplicate-token heads); every position, as the metric reads
    the whole second copy."""
    from ..core.toy import TOY_NAME, TOY_RECIPE
    from .tasks import induction_task

    task = induction_task(ex.tokenizer, n=n, seed=seed)
    names, modes = ("copy (-> logits)", "duplicate-token (-> copy heads)"), (("full", "full"),) * 2
    key = {"version": TRUTH_VERSION, "model": ex.name, "task": "induction", "n": n, "seed": seed,
           "fraction": fraction, "build": TOY_RECIPE if ex.name == TOY_NAME else ex.name, "rounds": names}
    return _cached_truth(key, lambda: patching_truth(ex, task.positive, task.negative, task.metric, names, modes,
                                                      fraction, progress=progress), rebuild)
