"""The saved-output payload, v2 (``application/vnd.xattr.v2+json``, schema tag ``"xattr.v2"``).

What a notebook keeps of a result: only what the views draw, in compact arrays. The public JSON
(``Result.to_dict()``, v1, full precision) is unchanged; this is the display form. Format:
``data/payload-v2.schema.json`` (JSON Schema 2020-12), mirrored by labextension/src/payload-v2.ts.

Arrays are objects ``{"dtype", "shape", "data", "scale", "precision"}``: ``data`` is base64 of the
little-endian, C-order values; a value is ``stored * scale``. ``precision`` states the error bound:

- float16 (scores, flows, entropies): the array is divided by ``scale``, a power of two >= max |x|,
  so ``|decoded - x| <= rel * |x| + abs`` with ``rel = 2**-11`` and ``abs = 2**-25 * scale``.
- uint8 quantised attention weights: ``scale = 1/255``, ``|decoded - x| <= abs = 1/510``.
- integers (indices, SAE codes): exact.

What each kind keeps (its view draws no more):

- flow: the strongest ``max_edges`` positive edges (layer, from, to, flow), the count and share of
  flow of the edges left out, each node's throughput, the input attributions; the capacity tensor
  only with ``capacities=True``.
- heads: per query its strongest key and the largest other attention weights that fit
  ``attention_bytes``; the share of attention mass kept (mean, min), the largest weight left out
  (``threshold``) and the count of weights left out.
- circuit: node scores, the strongest ``max_pairs`` head pairs, the SAE codes (integers).
- patching-circuit (AtP, EAP, EAP-IG): node scores, per-prompt node scores, the ``max_pairs`` edges of
  largest |score| (signed; the count left out), the per-prompt scores of the stored edges among them,
  the faithfulness curve (plain numbers).
- explorer: the results of its linked views (token strip, flow, heads), each as above.

numpy only (no torch): the front end imports it.
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .constants import SCHEMA_V2
from .results import Attribution, CircuitResult, FlowResult, HeadStats, PatchingCircuitResult, Result, to_plain

__all__ = ["to_payload", "from_payload", "schema", "decode_array", "float16_array", "MAX_EDGES", "MAX_PAIRS",
           "attention_budget"]

#: The display rules shared with the views and the TypeScript renderer (palettes, caps, token labels).
DISPLAY_RULES_PATH = Path(__file__).with_name("data") / "display-rules.json"
#: Flow edges kept (``flow.edges_saved``; the views draw the strongest ``flow.edges_drawn``, clicks follow
#: paths among these).
MAX_EDGES = int(json.loads(DISPLAY_RULES_PATH.read_text(encoding="utf-8"))["flow"]["edges_saved"])
#: Circuit head pairs (and patching-circuit edges) kept (the circuit view lists the top 10).
MAX_PAIRS = 500
#: Attention-map budget, bytes before base64: 4 KB per token (the head view draws an n x n map, so
#: each query keeps about as many keys at every length), at most 1.8 MB (a saved Explorer, with its
#: flow, stays under 3 MB).
ATTENTION_BYTES_PER_TOKEN, ATTENTION_BYTES_MAX = 4_000, 1_800_000
F16_REL, F16_ABS = 2.0 ** -11, 2.0 ** -25
SCHEMA_PATH = Path(__file__).with_name("data") / "payload-v2.schema.json"

_DTYPES = {"float16": "<f2", "float32": "<f4", "uint8": "<u1", "uint16": "<u2", "int32": "<i4", "uint32": "<u4"}


def schema() -> dict:
    """The v2 JSON Schema (``data/payload-v2.schema.json``)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- arrays
def _pack(values: np.ndarray, dtype: str, *, scale: float = 1.0, precision: dict | None = None) -> dict:
    data = np.ascontiguousarray(values, dtype=_DTYPES[dtype]).tobytes()
    return {"dtype": dtype, "shape": [int(s) for s in np.shape(values)], "scale": float(scale),
            "precision": precision or {"abs": 0.0, "rel": 0.0}, "data": base64.b64encode(data).decode("ascii")}


def float16_array(x: Any) -> dict | None:
    """``x`` (any shape, float) as float16 scaled by a power of two >= max |x| (NaN/inf kept); None stays None."""
    if x is None:
        return None
    x = np.asarray(x, dtype=np.float64)
    finite = np.abs(x[np.isfinite(x)])
    peak = float(finite.max()) if finite.size else 0.0
    scale = 2.0 ** math.ceil(math.log2(peak)) if peak > 0 else 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        stored = (x / scale).astype(np.float16)
    return _pack(stored, "float16", scale=scale, precision={"rel": F16_REL, "abs": F16_ABS * scale})


def index_array(x: Any) -> dict:
    """Non-negative integers in the smallest unsigned dtype (exact); negatives use int32."""
    x = np.asarray(x, dtype=np.int64)
    top = int(x.max()) if x.size else 0
    dtype = "int32" if x.size and int(x.min()) < 0 else "uint8" if top < 2 ** 8 else "uint16" if top < 2 ** 16 \
        else "uint32"
    return _pack(x, dtype)


def _code_array(x: Any) -> dict:
    """SAE codes: exact integers when they are, else float16."""
    x = np.asarray(x, dtype=np.float64)
    if np.all(np.isfinite(x)) and np.all(x == np.round(x)):
        return index_array(x.astype(np.int64))
    return float16_array(x)


def decode_array(desc: dict | None) -> np.ndarray | None:
    """The float64 (or int64, for exact integer arrays) array of a packed descriptor."""
    if desc is None:
        return None
    raw = np.frombuffer(base64.b64decode(desc["data"]), dtype=_DTYPES[desc["dtype"]]).reshape(desc["shape"])
    if desc["dtype"].startswith(("uint", "int")) and desc.get("scale", 1.0) == 1.0:
        return raw.astype(np.int64)
    return raw.astype(np.float64) * float(desc.get("scale", 1.0))


# ---------------------------------------------------------------------------- flow edges
def top_edges(edge_flow: np.ndarray, max_edges: int = MAX_EDGES) -> dict:
    """The strongest positive edges of ``edge_flow`` (L, n, n) (``[l-1][i, j]``: (l, i) -> (l-1, j)).

    Returns arrays ``layer`` (1..L), ``from``, ``to``, ``flow`` (strongest first) and ``total`` (positive
    edges), ``hidden`` (left out), ``hidden_flow`` (their share of the summed edge flow, 0..1).
    """
    E = np.nan_to_num(np.asarray(edge_flow, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    flat = E.ravel()
    positive = np.flatnonzero(flat > 0)
    keep = positive
    if positive.size > max_edges:
        keep = positive[np.argpartition(-flat[positive], max_edges - 1)[:max_edges]]
    keep = keep[np.argsort(-flat[keep], kind="stable")]
    total_flow = float(flat[positive].sum())
    l, i, j = np.unravel_index(keep, E.shape) if E.ndim == 3 else (keep, keep, keep)
    hidden_flow = 1.0 - float(flat[keep].sum()) / total_flow if total_flow > 0 else 0.0
    return {"layer": index_array(l + 1), "from": index_array(i), "to": index_array(j), "flow": float16_array(flat[keep]),
            "total": int(positive.size), "hidden": int(positive.size - keep.size), "hidden_flow": max(0.0, hidden_flow)}


def node_throughput(edge_flow: np.ndarray) -> np.ndarray:
    """(L, n, n) edge flows -> (L+1, n) throughput: each node's inflow from the layer above; the top layer
    (which has none) its outflow. The one definition every view uses (``flow.node_throughput`` in
    data/display-rules.json; the TypeScript renderer's ``throughput``). Inflow, because then layer 0 is
    the flow reaching each input token, the attribution itself, and because it is what a saved payload
    can recompute from the edges it keeps; where flow is conserved, inflow and outflow are equal."""
    E = np.nan_to_num(np.asarray(edge_flow, dtype=np.float64))
    L = E.shape[0]
    out = np.zeros((L + 1, E.shape[2] if E.ndim == 3 else 0))
    if L:
        out[:L] = E.sum(axis=1)
        out[L] = E[L - 1].sum(axis=1)
    return out


# ---------------------------------------------------------------------------- attention maps
def attention_budget(n_tokens: int) -> int:
    """Bytes (before base64) the attention maps of an ``n_tokens`` input may take."""
    return int(min(ATTENTION_BYTES_MAX, ATTENTION_BYTES_PER_TOKEN * max(1, n_tokens)))


def _largest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest of ``values`` (any order)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    if values.size <= count:
        return np.arange(values.size)
    return np.argpartition(-values, count - 1)[:count]


def sparse_attentions(attentions: Any, budget: int | None = None) -> dict | None:
    """(L, H, n, n) attention maps -> each query's strongest key plus the largest other weights that fit
    ``budget`` bytes (weights under half a quantisation step never), uint8-quantised (see module doc)."""
    if attentions is None:
        return None
    A = np.nan_to_num(np.asarray(attentions, dtype=np.float32), nan=0.0)
    if A.ndim != 4 or A.shape[2] != A.shape[3]:
        raise ValueError(f"attentions must be (L, H, n, n), not {A.shape}")
    L, H, n, _ = A.shape
    rows = L * H * n
    flat = A.reshape(rows, n)
    budget = attention_budget(n) if budget is None else budget
    key_bytes = 1 if n <= 256 else 2
    cap = min(n, 255)  # keys per query (counts are uint8)
    mask = np.zeros((rows, n), dtype=bool)
    if n:
        strongest = flat.argmax(axis=1)
        mask[np.arange(rows), strongest] = True
        extra = (budget - rows * (1 + key_bytes + 1)) // (key_bytes + 1)  # after each row's count and strongest key
        others = flat.copy()  # float32, like the maps: the largest input here is (30, 9, 512, 512)
        others[mask] = -1.0
        others = others.ravel()
        candidates = np.flatnonzero(others >= 0.5 / 255)
        mask.ravel()[candidates[_largest(others[candidates], extra)]] = True
        for q in np.flatnonzero(mask.sum(axis=1) > cap):  # rare: long, flat rows with room to spare
            mask[q] = False
            mask[q, _largest(flat[q], cap)] = True
    row, key = np.nonzero(mask)
    values = flat[row, key].astype(np.float64)
    kept = np.bincount(row, weights=values, minlength=rows)
    mass = flat.sum(axis=1, dtype=np.float64)
    share = np.divide(kept, mass, out=np.ones_like(kept), where=mass > 0)
    left = flat[~mask]
    return {"format": "top-weights", "shape": [L, H, n, n], "threshold": float(left.max()) if left.size else 0.0,
            "counts": index_array(mask.sum(axis=1).reshape(L, H, n)), "keys": index_array(key),
            "hidden": int(np.count_nonzero(left)),
            "values": _pack(np.clip(np.round(values * 255), 0, 255), "uint8", scale=1 / 255,
                            precision={"abs": 0.5 / 255, "rel": 0.0}),
            "kept_mass": {"mean": float(share.mean()) if share.size else 1.0,
                          "min": float(share.min()) if share.size else 1.0}}


def dense_attentions(sparse: dict | None) -> np.ndarray | None:
    """(L, H, n, n) from :func:`sparse_attentions` (weights left out are 0)."""
    if sparse is None:
        return None
    L, H, n, _ = sparse["shape"]
    counts = decode_array(sparse["counts"]).ravel()
    rows = np.repeat(np.arange(L * H * n), counts)
    out = np.zeros((L * H * n, n))
    out[rows, decode_array(sparse["keys"])] = decode_array(sparse["values"])
    return out.reshape(L, H, n, n)


# ---------------------------------------------------------------------------- kinds
def _plain(result: Result, names: tuple[str, ...]) -> dict:
    return {name: to_plain(getattr(result, name)) for name in names}


def _attribution(a: Attribution) -> dict:
    same = a.raw is None or np.array_equal(a.raw, a.scores, equal_nan=True)
    return {"tokens": list(a.tokens), "scores": float16_array(a.scores), "raw": None if same else float16_array(a.raw),
            **_plain(a, ("target", "method", "options", "prediction", "text", "model", "target_label"))}


def _flow(f: FlowResult, capacities: bool, max_edges: int) -> dict:
    node_flow = f.node_flow if f.node_flow is not None else node_throughput(f.edge_flow)
    return {"tokens": list(f.tokens), "attributions": float16_array(f.attributions), "value": float(f.value),
            "n_layers": int(np.shape(f.edge_flow)[0]), "edges": top_edges(f.edge_flow, max_edges),
            "node_flow": float16_array(node_flow),
            "capacities": float16_array(f.capacities) if capacities and f.capacities is not None else None,
            **_plain(f, ("info", "sources", "mu", "target", "target_label", "prediction", "method", "options", "text",
                         "model", "upper_bound", "solver"))}


def _heads(s: HeadStats, budget: int | None) -> dict:
    return {"tokens": list(s.tokens), "entropy": float16_array(s.entropy), "cone_index": float16_array(s.cone_index),
            "cone_index_normalised": float16_array(s.cone_index_normalised),
            "attentions": sparse_attentions(s.attentions, budget),
            **_plain(s, ("patterns", "texts", "model", "options"))}


def _pairs(edge_scores: np.ndarray, max_pairs: int) -> dict:
    """The strongest positive pairs a < b of a symmetric (N, N) score matrix, and how many were left out."""
    S = np.nan_to_num(np.asarray(edge_scores, dtype=np.float64))
    a, b = np.triu_indices(S.shape[0], k=1) if S.ndim == 2 else (np.zeros(0, int), np.zeros(0, int))
    v = S[a, b] if S.ndim == 2 else np.zeros(0)
    positive = np.flatnonzero(v > 0)
    keep = positive[np.argsort(-v[positive], kind="stable")[:max_pairs]]
    return {"a": index_array(a[keep]), "b": index_array(b[keep]), "score": float16_array(v[keep]),
            "total": int(positive.size), "hidden": int(positive.size - keep.size)}


def _circuit(c: CircuitResult, max_pairs: int) -> dict:
    return {"node_scores": float16_array(c.node_scores), "pairs": _pairs(c.edge_scores, max_pairs),
            "n_edges": int(np.shape(c.edge_scores)[0]) if np.ndim(c.edge_scores) == 2 else 0,
            "codes_positive": _code_array(c.codes_positive), "codes_negative": _code_array(c.codes_negative),
            "difference_scores": float16_array(c.difference_scores),
            "baseline_scores": None if c.baseline_scores is None else
            {k: float16_array(v) for k, v in c.baseline_scores.items()},
            **_plain(c, ("n_layers", "n_heads", "unique_codes", "positive", "negative", "truth", "metrics", "model",
                         "options"))}


def _signed_edges(edge_scores: np.ndarray, max_pairs: int) -> dict:
    """The ``max_pairs`` non-zero entries of largest |score| of a sender x receiver matrix (strongest
    first), its ``shape``, and how many non-zero entries there are (``total``) and were left out."""
    S = np.nan_to_num(np.asarray(edge_scores, dtype=np.float64))
    s, r = np.nonzero(S) if S.ndim == 2 else (np.zeros(0, int), np.zeros(0, int))
    v = S[s, r] if S.ndim == 2 else np.zeros(0)
    keep = np.argsort(-np.abs(v), kind="stable")[:max_pairs]
    return {"shape": [int(n) for n in np.shape(S)], "sender": index_array(s[keep]), "receiver": index_array(r[keep]),
            "score": float16_array(v[keep]), "total": int(v.size), "hidden": int(v.size - keep.size)}


def _patching(c: PatchingCircuitResult, max_pairs: int) -> dict:
    edges = _signed_edges(c.edge_scores, max_pairs)
    kept = set(zip(decode_array(edges["sender"]).tolist(), decode_array(edges["receiver"]).tolist()))
    stored = [(int(a), int(b), v) for key, v in (c.prompt_edge_scores or {}).items()
              for a, b in [key.split("->")] if (int(a), int(b)) in kept]
    per_edge = np.asarray([t[2] for t in stored], dtype=np.float64).reshape(len(stored), len(c.prompt_node_scores))
    return {"node_scores": float16_array(c.node_scores), "prompt_node_scores": float16_array(c.prompt_node_scores),
            "edges": edges, "prompt_edges": {"sender": index_array([t[0] for t in stored]),
                                             "receiver": index_array([t[1] for t in stored]),
                                             "scores": float16_array(per_edge)},
            **_plain(c, ("faithfulness", "n_layers", "n_heads", "method", "metric", "positive", "negative", "truth",
                         "metrics", "model", "options"))}


def _explorer(ex: Any, capacities: bool, max_edges: int, attention_bytes: int | None) -> dict:
    results = ex.view_results()
    views = {name: to_payload(r, capacities=capacities, max_edges=max_edges, attention_bytes=attention_bytes,
                              model_id=False) for name, r in results.items() if r is not None}
    target = ex.target
    return {"model": ex.model_name, "text": ex.text, "method": ex.method,
            "target": list(target) if isinstance(target, tuple) else to_plain(target), "views": views}


def to_payload(result: Any, *, capacities: bool = False, max_edges: int = MAX_EDGES, max_pairs: int = MAX_PAIRS,
               attention_bytes: int | None = None, model_id: str | None | bool = None) -> dict:
    """The v2 payload of a result (Attribution, FlowResult, HeadStats, CircuitResult, PatchingCircuitResult)
    or of an Explorer (anything with ``view_type == "explorer"`` and ``view_results()``: {"strip"|"flow"|"heads": result}).

    capacities: keep a flow's capacity tensor (float16; large). max_edges / max_pairs: flow edges and
    circuit pairs kept. attention_bytes: the attention-map budget (default :func:`attention_budget`).
    model_id: the live widget's id (None when there is none; False leaves the key out).
    """
    if isinstance(result, Attribution):
        kind, body = "attribution", _attribution(result)
    elif isinstance(result, FlowResult):
        kind, body = "flow", _flow(result, capacities, max_edges)
    elif isinstance(result, HeadStats):
        kind, body = "heads", _heads(result, attention_bytes)
    elif isinstance(result, CircuitResult):
        kind, body = "circuit", _circuit(result, max_pairs)
    elif isinstance(result, PatchingCircuitResult):
        kind, body = "patching-circuit", _patching(result, max_pairs)
    elif getattr(result, "view_type", None) == "explorer":
        kind, body = "explorer", _explorer(result, capacities, max_edges, attention_bytes)
    else:
        raise TypeError(f"no v2 payload for {type(result).__name__}")
    payload = {"schema": SCHEMA_V2, "kind": kind, **body}
    if model_id is not False:
        payload["model_id"] = model_id
    return payload


def _dense_edges(edges: dict, L: int, n: int) -> np.ndarray:
    out = np.zeros((L, n, n))
    out[decode_array(edges["layer"]) - 1, decode_array(edges["from"]), decode_array(edges["to"])] = \
        decode_array(edges["flow"])
    return out


def from_payload(payload: dict) -> Any:
    """The result a v2 payload holds (arrays decoded; what was left out is 0). An explorer gives
    {"strip"|"flow"|"heads": result}. Raises ValueError for another schema or kind."""
    if payload.get("schema") != SCHEMA_V2:
        raise ValueError(f"not a {SCHEMA_V2!r} payload: {payload.get('schema')!r}")
    kind, p = payload.get("kind"), dict(payload)
    keep = {k: v for k, v in p.items() if k not in ("schema", "kind", "model_id")}
    if kind == "attribution":
        keep["scores"] = decode_array(p["scores"])
        keep["raw"] = decode_array(p["raw"])
        return Attribution(**keep)
    if kind == "flow":
        n = len(p["tokens"])
        for name in ("n_layers", "edges"):
            keep.pop(name)
        keep.update(attributions=decode_array(p["attributions"]), node_flow=decode_array(p["node_flow"]),
                    capacities=decode_array(p.get("capacities")), edge_flow=_dense_edges(p["edges"], p["n_layers"], n))
        return FlowResult(**keep)
    if kind == "heads":
        keep.update({k: decode_array(p[k]) for k in ("entropy", "cone_index", "cone_index_normalised")})
        keep["attentions"] = dense_attentions(p["attentions"])
        return HeadStats(**keep)
    if kind == "circuit":
        N, pairs = p["n_edges"], p["pairs"]
        edge = np.zeros((N, N))
        a, b = decode_array(pairs["a"]), decode_array(pairs["b"])
        edge[a, b] = edge[b, a] = decode_array(pairs["score"])
        keep.pop("n_edges"), keep.pop("pairs")
        baseline = p.get("baseline_scores")
        keep.update(node_scores=decode_array(p["node_scores"]), edge_scores=edge,
                    codes_positive=decode_array(p["codes_positive"]).astype(np.float64),
                    codes_negative=decode_array(p["codes_negative"]).astype(np.float64),
                    difference_scores=None if p.get("difference_scores") is None else
                    decode_array(p["difference_scores"]).tolist(),
                    baseline_scores=None if baseline is None else {k: decode_array(v).tolist()
                                                                   for k, v in baseline.items()})
        return CircuitResult(**keep)
    if kind == "patching-circuit":
        e, pe = p["edges"], p["prompt_edges"]
        edge = np.zeros(e["shape"])
        edge[decode_array(e["sender"]), decode_array(e["receiver"])] = decode_array(e["score"])
        keep.pop("edges"), keep.pop("prompt_edges")
        per_edge = decode_array(pe["scores"])
        keep.update(node_scores=decode_array(p["node_scores"]), edge_scores=edge,
                    prompt_node_scores=decode_array(p["prompt_node_scores"]),
                    prompt_edge_scores={f"{a}->{b}": per_edge[i].tolist() for i, (a, b) in
                                        enumerate(zip(decode_array(pe["sender"]), decode_array(pe["receiver"])))})
        return PatchingCircuitResult(**keep)
    if kind == "explorer":
        return {name: from_payload({**view}) for name, view in p["views"].items()}
    raise ValueError(f"unknown v2 payload kind {kind!r}")
