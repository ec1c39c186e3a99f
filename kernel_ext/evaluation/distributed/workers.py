"""Workers of the sharded jobs (each beside its one-process code) and :func:`run_job`.

Workers load the model once per process (:func:`session_factory`) the way the driver loaded it
(its :class:`~xattr_lab.core.loading.LoadRecipe`): an alias, a directory (by absolute path) or a hub
id is loaded again by name with the same options (dtype, device_map, from_pretrained options; eager
attention), and no weights travel. A model given as an object travels as a :class:`ModelParcel`
(class, config, weights) and is rebuilt by its class in the worker, its placing options re-applied.
Each worker checks that its model has the driver's fingerprint (:func:`xattr_lab.evaluation.provenance.model_fingerprint`).

Why not pickle the model object: transformers (5.x) registers a model class's output-capture hooks
when an instance is constructed, which unpickling skips, so an unpickled model returns no attention
maps in a fresh process; and a model that has run once holds hooks that cannot be pickled.
"""
from __future__ import annotations

import copy
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ...errors import InputError
from .. import provenance
from .shards import run_sharded

__all__ = ["ModelParcel", "pack_model", "load_session", "session_factory", "default_out", "run_job"]


# ---------------------------------------------------------------------------- shipping a model object
@dataclass(frozen=True)
class ModelParcel:
    """A transformers model as its class, config and CPU weights, with its tokenizer: picklable.

    ``state``: the model's ``state_dict()``, every tensor on the CPU (tied weights share storage).
    """

    model_class: type
    config: Any
    state: Mapping[str, Any]
    tokenizer: Any

    def unpack(self) -> tuple[Any, Any]:
        """(model, tokenizer): the class built from the config (eager attention), the weights assigned as they are."""
        config = copy.deepcopy(self.config)
        config._attn_implementation = "eager"
        model = self.model_class(config)
        model.load_state_dict(dict(self.state), strict=True, assign=True)  # dtypes kept, weights not copied
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        return model.eval(), self.tokenizer


def pack_model(model: Any, tokenizer: Any) -> ModelParcel | tuple[Any, Any]:
    """A :class:`ModelParcel` of a transformers model; any other module (the toy's) as the pair itself."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return model, tokenizer
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    if any(tensor.is_meta for tensor in state.values()):
        raise InputError("this model object has weights offloaded to disk (meta tensors) and cannot be sent to "
                         "workers: save it with save_pretrained and load it by directory")
    return ModelParcel(type(model), model.config, state, tokenizer)


# ---------------------------------------------------------------------------- workers
def load_session(source: Any, session_class: type, fingerprint: str = "", name: str = "",
                 options: Mapping[str, Any] | None = None):
    """A ``session_class`` for ``source`` on this process's device, loaded with ``options``.

    source: an alias, an absolute directory or a hub id (loaded by name), a :class:`ModelParcel` or a
    (model, tokenizer) pair (``options``: the placing ones, dtype/device_map/offload_folder, re-applied).
    """
    from ...core import loading

    options = dict(options or {})
    if isinstance(source, ModelParcel):
        source = source.unpack()
    if isinstance(source, tuple):
        session = loading.load(source, device="auto", session_class=session_class, name=name, **options)
    else:
        if os.path.isabs(source) and not os.path.isdir(source):
            raise InputError(f"the model directory {source} is not on this worker's machine "
                             f"({socket.gethostname()}): copy it to the same path on every machine of the cluster")
        session = loading.load(source, device="auto", session_class=session_class, **options)
        session.name = name or session.name  # the driver's name (it is part of the fingerprint)
    if fingerprint and provenance.model_fingerprint(session) != fingerprint:
        raise InputError(f"the worker's model {name or source!r} is not the driver's (fingerprint differs): was it "
                         "changed after loading, or does another machine hold other weights? Rebuild it the same way "
                         "on every machine, or pass xattr_lab.load(model, tokenizer) to send the model object")
    return session


def session_factory(ex, fingerprint: str = "") -> Callable[[], Any]:
    """A picklable ``make_worker`` that loads ``ex``'s model again in a worker process (same class, same weights).

    By its :class:`~xattr_lab.core.loading.LoadRecipe` when it has a name (alias, directory, hub id):
    only the name and options travel (a session without a recipe named by an alias: that alias);
    otherwise the model travels as a :class:`ModelParcel`.
    """
    from ...core import loading

    recipe = getattr(ex, "load_recipe", None)  # None: a session built without load(), e.g. Explainer(model, tok)
    options = dict(recipe.options) if recipe is not None else {}
    if recipe is not None and recipe.source is not None:
        source = recipe.source
    elif recipe is None and ex.name in loading.ALIASES:
        source = ex.name
    else:
        source = pack_model(ex.model, ex.tokenizer)
    return functools.partial(load_session, source, type(ex), fingerprint, ex.name, options)


def default_out(kind: str, about: Mapping[str, Any], folder: Path | None) -> Path | None:
    """``folder/shards/<kind>-<hash of about>``; None without a cache folder (the run then uses a temporary one)."""
    return None if folder is None else Path(folder) / "shards" / f"{kind}-{provenance.cache_key(**about)}"


def run_job(ex, items, keys, work, schema, about, *, out: Path | None, **options):
    """:func:`run_sharded` with workers that rebuild ``ex`` (``ex`` itself serves the local backend).

    ``out`` None: a temporary folder, deleted afterwards (nothing to resume from).
    """
    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="xattr-shards-") as folder:
            return run_job(ex, items, keys, work, schema, about, out=Path(folder), **options)
    return run_sharded(items, session_factory(ex, about["model"]), work, out=out, schema=schema, provenance=about,
                       keys=keys, worker=ex, **options)
