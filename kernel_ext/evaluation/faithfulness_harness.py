"""The faithfulness harness: many methods over many texts, cached, with paired bootstrap intervals.

:func:`evaluate` scores every (method, text) with :func:`faithfulness_metrics.text_record` and
returns a tidy table: per method and metric the mean over texts and its 95% paired-bootstrap
interval (:mod:`xattr_lab.evaluation.bootstrap`). :func:`compare` gives every pair of methods'
paired difference with its interval, p-value and Holm-adjusted p-value.

Cache: one JSON file per (method spec, k) holding one record per text, under
``cache_dir()/eval`` by default. Its name is :func:`provenance.cache_key` of

- ``code``: the code version of the method's module and of the metrics module, i.e. a hash of
  their source and of every ``xattr_lab`` module they import (:func:`provenance.code_version`);
- ``model``: the model fingerprint (class, config, every parameter value);
- ``spec``: the method and its options exactly as passed (defaults of the method are covered by
  the code version); ``k``.

Changing any of them writes a new file; nothing stale is read. Texts are keyed by their sha256.
Records are saved every few texts, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import bootstrap, provenance
from .distributed import shards
from .distributed.workers import default_out, run_job
from .faithfulness_metrics import BETTER, METRICS, text_record

#: labels with options: the SIG paper's comparison (both baselines for IG and SIG), the GAF
#: paper's information tensors, and the floor
PAPER_METHODS: dict[str, dict[str, Any]] = {
    "ig[pad]": {"method": "ig", "baseline": "pad"},
    "ig[mask]": {"method": "ig", "baseline": "mask"},
    "sig[pad]": {"method": "sig", "baseline": "pad"},
    "sig[mask]": {"method": "sig", "baseline": "mask"},
    "gaf[af]": {"method": "gaf", "info": "af"},
    "gaf[gf]": {"method": "gaf", "info": "gf"},
    "gaf[agf]": {"method": "gaf", "info": "agf"},
    "grad_x_input": {"method": "grad_x_input"},
    "random": {"method": "random"},
}
DEFAULT_METHODS = ("ig[pad]", "ig[mask]", "sig[mask]", "grad_x_input")
METRICS_MODULE = "xattr_lab.evaluation.faithfulness_metrics"
SAVE_EVERY = 5


def _error(message: str):
    from ..errors import InputError

    return InputError(message)


def method_specs(methods: Sequence[str], method_options: Mapping[str, Mapping[str, Any]] | None = None):
    """label -> {"method": name, **options}: ``PAPER_METHODS`` entries, overridden by ``method_options``."""
    method_options = dict(method_options or {})
    specs: dict[str, dict[str, Any]] = {}
    for label in methods:
        spec = dict(PAPER_METHODS.get(label, {}))
        spec.update(method_options.get(label, {}))
        spec.setdefault("method", label)
        specs[label] = spec
    unknown = set(method_options) - set(specs)
    if unknown:
        raise _error(f"method_options names methods not in `methods`: {sorted(unknown)}")
    return specs


def spec_code_version(spec: Mapping[str, Any]) -> str:
    """Code version of one spec's records: its method's module, the metrics module, their imports."""
    return provenance.code_version((*provenance.method_modules(spec["method"]), METRICS_MODULE))


def spec_key(spec: Mapping[str, Any], fingerprint: str, k: float, code: str | None = None) -> str:
    """The cache file name (without .json) of one spec's records."""
    return provenance.cache_key(code=code if code is not None else spec_code_version(spec), model=fingerprint,
                                spec=dict(spec), k=k)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]  # a lone surrogate: refused later, clearly


def _load(path: Path) -> dict[str, dict]:
    try:
        return json.loads(path.read_text())["records"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _save(path: Path, records: dict, about: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump({"about": about, "records": records}, handle)
    os.replace(tmp, path)


def cache_folder(cache: bool | str | Path) -> Path | None:
    if not cache:
        return None
    if cache is True:
        from ..core.cache import cache_dir

        return cache_dir() / "eval"
    return Path(cache)


def evaluate(
    ex,
    texts: Iterable[str | tuple[str, Any]],
    methods: Sequence[str] = DEFAULT_METHODS,
    k: float = 0.2,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    cache: bool | str | Path = True,
    progress: bool = True,
    metrics: Sequence[str] = ("log_odds", "comprehensiveness", "sufficiency"),
    return_per_text: bool = False,
    replicates: int = bootstrap.REPLICATES,
    seed: int = bootstrap.SEED,
    backend: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    out: str | Path | None = None,
):
    """Faithfulness of several attribution methods over many texts -> tidy pandas DataFrame.

    texts: strings, or (text, label) pairs (labels are ignored: metrics use the predicted class).
    methods: labels; a label in ``PAPER_METHODS`` ("ig[pad]", "sig[mask]", "gaf[gf]", "random",
        ...) carries its options, any other label is a method name for ``ex.attribute``.
    method_options: label -> options for ``ex.attribute`` (may override "method"), e.g.
        ``{"sig[mask]": {"steps": "exact"}}``.
    cache: True (``cache_dir()/eval``), a folder, or False; see the module docstring for the key.
    metrics: subset of ``METRICS`` reported (every record holds all four).
    replicates, seed: of the paired bootstrap.
    backend: None (this loop), "local" or "ray": the missing records run as sharded items
        (:func:`faithfulness_row` on :func:`xattr_lab.evaluation.distributed.workers.run_job`), written shard
        by shard to Parquet in ``out`` (default: keyed under the cache folder) and then into the cache;
        "ray" runs them on ``workers`` Ray actors, a local runtime or the cluster at ``address``.

    Returns columns method, metric, mean, ci_low, ci_high (95% percentile interval of the paired
    bootstrap over texts), std, n, better ("higher"/"lower"), seconds (mean attribution seconds
    per text, as first computed). With ``return_per_text=True`` returns ``(table, per_text)``,
    per_text holding one row per (method, text): method, item (the text's position), text, seconds,
    cpu_seconds, m, top, every metric.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise _error(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        from ..errors import InputTypeError

        raise InputTypeError(f"texts must be a list of texts (or (text, label) pairs), not {type(texts).__name__}")
    texts = [t[0] if isinstance(t, (tuple, list)) else t for t in texts]
    if not texts:
        raise _error("evaluate needs at least one text")
    specs = method_specs(methods, method_options)
    folder = cache_folder(cache)
    fingerprint = provenance.model_fingerprint(ex) if folder else ""
    paths, stored, about = {}, {}, {}
    for label, spec in specs.items():
        code = spec_code_version(spec) if folder else ""
        about[label] = {"code": code, "model": fingerprint, "model_name": ex.name, "spec": spec, "k": k}
        paths[label] = folder / f"{spec_key(spec, fingerprint, k, code)}.json" if folder else None
        stored[label] = _load(paths[label]) if folder else {}
    dirty = dict.fromkeys(specs, 0)
    if backend is not None:
        def save(labels) -> None:
            for label in labels:
                if paths[label]:
                    _save(paths[label], stored[label], about[label])

        faithfulness_records(ex, texts, specs, k, stored, about, backend=backend, address=address, workers=workers,
                             out=out, folder=folder, progress=progress, on_rows=save)
    rows = []
    # texts outside, methods inside: an interrupted run leaves every method with the same texts done
    with tqdm(total=len(texts) * len(specs), desc="faithfulness", disable=not progress, smoothing=0.05) as bar:
        for count, text in enumerate(texts, 1):
            key = text_key(text)
            for label, spec in specs.items():
                record = stored[label].get(key)
                if record is None:
                    record = stored[label][key] = text_record(ex, text, spec, k)
                    dirty[label] += 1
                rows.append({"method": label, "item": count - 1, "text": text, "seconds": record.get("seconds"),
                             "cpu_seconds": record.get("cpu_seconds"), "m": record.get("m"),
                             "top": record.get("top"), **{m: record[m] for m in METRICS}})
                bar.update(1)
            if count % SAVE_EVERY == 0 or count == len(texts):
                for label, path in paths.items():
                    if path and dirty[label]:
                        _save(path, stored[label], about[label])
                        dirty[label] = 0

    per_text = pd.DataFrame(rows)
    table = summarise(per_text, list(specs), metrics, replicates, seed)
    return (table, per_text) if return_per_text else table


# ---------------------------------------------------------------------------- sharded runs (backend=)
def faithfulness_schema():
    """Parquet columns of one (method, text) record of :func:`faithfulness_row`."""
    import pyarrow as pa

    return {"method": pa.string(), "text_key": pa.string(), **{m: pa.float64() for m in METRICS},
            "seconds": pa.float64(), "cpu_seconds": pa.float64(), "m": pa.int64(), "top": pa.int64(),
            "used": pa.string()}


def faithfulness_row(ex, item) -> dict[str, Any]:
    """(label, spec, text, k) -> one Parquet row: the harness's record of that method on that text."""
    label, spec, text, k = item
    record = text_record(ex, text, spec, k)
    return {"method": label, "text_key": text_key(text), **{name: record[name] for name in record if name != "used"},
            "used": json.dumps(record.get("used", {}), sort_keys=True)}


def faithfulness_records(ex, texts: Sequence[str], specs: Mapping[str, Mapping[str, Any]], k: float,
                         stored: dict[str, dict], about: Mapping[str, Mapping[str, Any]], *, backend: str = "local",
                         address: str | None = None, workers: int | None = None, out: str | Path | None = None,
                         folder: Path | None = None, progress: bool = True, on_rows: Callable | None = None) -> int:
    """Compute the (method, text) records missing from ``stored`` ({label: {text key: record}}) in place.

    Returns how many records were added. ``about``: the harness's provenance of each label (code version,
    model fingerprint, spec, k); the run's Parquet folder is ``out`` or one keyed by ``about`` under
    ``folder``. ``on_rows(labels)`` is called after each shard (the harness saves its JSON cache then).
    """
    fingerprint = next(iter(about.values()))["model"] if about else ""
    fingerprint = fingerprint or provenance.model_fingerprint(ex)
    run_about = {"job": "faithfulness", "model": fingerprint, "model_name": ex.name, "k": k,
                 "specs": {label: {"spec": dict(spec), "code": about[label]["code"] or spec_code_version(spec)}
                           for label, spec in specs.items()}}
    items, keys = [], []
    for text in dict.fromkeys(texts):
        for label, spec in specs.items():
            if text_key(text) not in stored[label]:
                items.append((label, dict(spec), text, k))
                keys.append(f"{label}/{text_key(text)}")
    if not items:
        return 0

    def merge(rows) -> None:
        for row in shards.strip(rows):
            record = {name: value for name, value in row.items() if name not in ("method", "text_key")}
            record["used"] = json.loads(record["used"])
            stored[row["method"]][row["text_key"]] = record
        if on_rows is not None:
            on_rows({row["method"] for row in rows})

    out = Path(out) if out is not None else default_out("faithfulness", run_about, folder)
    rows = run_job(ex, items, keys, faithfulness_row, faithfulness_schema(), run_about, backend=backend,
                   address=address, workers=workers, out=out, progress=progress, desc="faithfulness shards",
                   on_rows=merge)
    merge(rows)  # rows read back from an earlier, interrupted run
    return len(rows)


def _matrix(per_text, labels: Sequence[str], metric: str) -> np.ndarray:
    """(methods, texts) values of one metric (columns: the texts' positions, "item")."""
    frame = per_text.pivot(index="method", columns="item", values=metric)
    values = frame.reindex(index=list(labels)).to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise _error(f"every method needs a {metric} value on every text to be compared paired")
    return values


def summarise(per_text, labels: Sequence[str], metrics: Sequence[str], replicates: int = bootstrap.REPLICATES,
              seed: int = bootstrap.SEED):
    """Tidy table of means and paired-bootstrap intervals from per-text rows."""
    import pandas as pd

    summary = []
    for metric in metrics:
        values = _matrix(per_text, labels, metric)
        for label, row, stats in zip(labels, values, bootstrap.mean_intervals(values, replicates, seed)):
            part = per_text[per_text["method"] == label]
            summary.append({"method": label, "metric": metric, "mean": stats["mean"], "ci_low": stats["ci_low"],
                            "ci_high": stats["ci_high"], "std": float(np.std(row, ddof=1)) if row.size > 1 else
                            float("nan"), "n": stats["n"], "better": "higher" if BETTER[metric] > 0 else "lower",
                            "seconds": float(part["seconds"].astype(float).mean())})
    order = {label: i for i, label in enumerate(labels)}
    table = pd.DataFrame(summary)
    return table.sort_values("method", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def compare(per_text, labels: Sequence[str] | None = None, metrics: Sequence[str] = METRICS,
            replicates: int = bootstrap.REPLICATES, seed: int = bootstrap.SEED, alpha: float = 0.05):
    """Every pair of methods on every metric -> DataFrame: metric, a, b, difference (mean a − mean b),
    ci_low, ci_high (paired bootstrap), p, p_holm (Holm over the pairs of that metric), significant,
    better ("a", "b" or "" when not significant; by the metric's direction), n."""
    import pandas as pd

    labels = list(dict.fromkeys(per_text["method"])) if labels is None else list(labels)
    rows = []
    for metric in metrics:
        for row in bootstrap.pairwise(_matrix(per_text, labels, metric), labels, replicates, seed, alpha=alpha):
            winner = ("a" if row["difference"] * BETTER[metric] > 0 else "b") if row["significant"] else ""
            rows.append({"metric": metric, **row, "better": winner})
    return pd.DataFrame(rows)


def wide_table(table, digits: int = 3):
    """The tidy table as method x metric cells "mean [low, high]" (for READMEs and notes)."""
    def cell(m, lo, hi):
        return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    cells = table.assign(cell=[cell(m, lo, hi) for m, lo, hi in zip(table["mean"], table["ci_low"], table["ci_high"])])
    wide = cells.pivot(index="method", columns="metric", values="cell")
    return wide.reindex(index=list(dict.fromkeys(table["method"])),
                        columns=[m for m in METRICS if m in set(table["metric"])])
