"""Result dataclasses and their JSON form (the ``application/vnd.xattr.v1+json`` payload).

Every result is plain data: numpy arrays, lists of strings, numbers, dicts. ``to_json`` gives a
self-describing JSON document with ``"schema": "xattr.v1"`` and a ``"kind"``; ``Result.from_json``
(or the concrete class's ``from_json``) rebuilds it. Arrays are stored as nested lists of floats
(NaN/inf as null) so the browser side can draw the result without a kernel.

This module imports numpy only: the front end may import it without paying for torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .constants import MIME_TYPE, SCHEMA  # noqa: F401  (MIME_TYPE: public name here too)
from .result_base import FRONT_END, KINDS, Result, as_float64, float_array, to_plain  # noqa: F401  (public here too)


def _target_from_plain(target: Any) -> Any:
    if isinstance(target, list):
        return tuple(target)
    return target


@dataclass
class Attribution(Result):
    """Token attribution scores for one text.

    tokens: model tokens incl. special tokens, length n.
    scores: (n,) float64 — what views show (for "sig" the L2-normalised signed scores).
    raw: (n,) float64 before normalisation (for "ig"/"sig": per-token sums over embedding dims,
        in logit units).
    target: class or vocabulary index, or a pair of them for a logit difference.
    """

    kind: ClassVar[str] = "attribution"
    array_fields: ClassVar[tuple[str, ...]] = ("scores", "raw")

    tokens: list[str]
    scores: np.ndarray
    raw: np.ndarray | None = None
    target: Any = None
    method: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    prediction: dict[str, float] = field(default_factory=dict)
    text: str = ""
    model: str = ""
    target_label: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raw is None:
            self.raw = self.scores.copy()
        n = len(self.tokens)
        if self.scores.shape != (n,) or self.raw.shape != (n,):
            raise ValueError(
                f"scores {self.scores.shape} and raw {self.raw.shape} must both be ({n},) for {n} tokens"
            )
        self.target = _target_from_plain(self.target)

    def table(self):
        """A pandas DataFrame: token, score, raw (one row per token)."""
        import pandas as pd

        return pd.DataFrame({"token": self.tokens, "score": self.scores, "raw": self.raw})

    def __repr__(self) -> str:
        top = np.argsort(-np.abs(np.nan_to_num(self.scores)), kind="stable")[:5]
        best = ", ".join(f"{self.tokens[i]!r}:{self.scores[i]:+.3f}" for i in top)
        badge = ""
        if (self.options or {}).get("converged") is False:
            error = self.options.get("relative_completeness_error")
            badge = f", NOT CONVERGED: completeness error {error:.0%}" if isinstance(error, (int, float)) else ", NOT CONVERGED"
        return (
            f"Attribution(method={self.method!r}, target={self.target_label or self.target!r}, "
            f"n={len(self.tokens)}, top=[{best}]{badge})"
        )


@dataclass
class FlowResult(Result):
    """Generalized Attention Flow through the layered attention graph.

    attributions: (n,) flow reaching each input token (sums to ``value``).
    edge_flow: (L, n, n); ``edge_flow[l-1][i, j]`` is the flow on edge (l, i) -> (l-1, j).
    node_flow: (L+1, n) throughput of each node (layer 0 = input tokens, L = top).
    capacities: (L, n, n) the information tensor the flow ran on.
    """

    kind: ClassVar[str] = "flow"
    array_fields: ClassVar[tuple[str, ...]] = ("attributions", "edge_flow", "node_flow", "capacities")

    tokens: list[str]
    attributions: np.ndarray
    edge_flow: np.ndarray
    value: float
    node_flow: np.ndarray | None = None
    capacities: np.ndarray | None = None
    info: str = "agf"
    sources: list[int] = field(default_factory=list)
    mu: float = 0.0
    target: Any = None
    target_label: str = ""
    prediction: dict[str, float] = field(default_factory=dict)
    method: str = "gaf"
    options: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    model: str = ""
    #: capacity of a cut certifying value <= max-flow value <= upper_bound (None if not computed)
    upper_bound: float | None = None
    #: solver report: Newton iterations, final scale-free Newton decrement, relative conservation residual
    solver: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.value = float(self.value)
        if self.upper_bound is not None:
            self.upper_bound = float(self.upper_bound)
        self.target = _target_from_plain(self.target)

    def to_networkx(self):
        """The layered graph (networkx DiGraph) with 'capacity' and 'flow' on every edge.

        Nodes (l, i) for l = 0..L (layer 0 = input tokens) plus "s" and "t"; see
        ``xattr_lab.flows.layered_graph``. Needs ``capacities``.
        """
        if self.capacities is None:
            raise ValueError("this FlowResult holds no capacities; recompute it with ex.flow(...)")
        from .graphs.layered import layered_graph  # lazy: keeps this module numpy-only at import

        return layered_graph(self.capacities, self.edge_flow, tokens=self.tokens, sources=self.sources or None)

    def __repr__(self) -> str:
        L = self.edge_flow.shape[0] if self.edge_flow.ndim == 3 else "?"
        return f"FlowResult(info={self.info!r}, L={L}, n={len(self.tokens)}, value={self.value:.6g})"


@dataclass
class HeadStats(Result):
    """Attention geometry of one text (or the mean over several).

    entropy: (L, H) mean attention entropy of each head, nats.
    cone_index: (L+1,) cone index of each layer's hidden states (raw, in [0, n]).
    cone_index_normalised: (L+1,) the same divided by n.
    patterns: L lists of H pattern names (see ``xattr_lab.geometry``).
    attentions: optional (L, H, n, n) attention maps for the first text (for head-matrix views).
    """

    kind: ClassVar[str] = "heads"
    array_fields: ClassVar[tuple[str, ...]] = ("entropy", "cone_index", "cone_index_normalised", "attentions")

    tokens: list[str]
    entropy: np.ndarray
    cone_index: np.ndarray
    cone_index_normalised: np.ndarray | None = None
    patterns: list[list[str]] = field(default_factory=list)
    attentions: np.ndarray | None = None
    texts: list[str] = field(default_factory=list)
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"HeadStats(L={self.entropy.shape[0]}, H={self.entropy.shape[1]}, texts={len(self.texts) or 1})"


@dataclass
class CircuitResult(Result):
    """SAE circuit discovery over attention heads.

    node_scores: (L, H) number of codes of a head seen only in positives.
    edge_scores: (L*H, L*H) symmetric, zero diagonal.
    codes_positive / codes_negative: (examples, L*H) integer SAE codes (stored as float arrays
        in JSON; ``codes()`` returns ints).
    unique_codes: head index (flat, ``l*H + h``) -> codes seen only in positives.
    difference_scores: (L, H) no-SAE baseline, ``circuits.mean_difference_scores`` (or None).
    baseline_scores: label-free baselines by name ("norm", "variance"), each (L, H) (or None).
    metrics: with a ground truth, ``node_roc_auc``, ``paper_edge_metric`` (the paper's "edge
        ROC-AUC", a node metric), ``edge_roc_auc`` (against an edge truth), ``baselines`` (a dict:
        ``difference_node_roc_auc``, ``norm_roc_auc``, ``variance_roc_auc``); ``seconds``. JSON
        written before these names existed reads back unchanged.
    options: how it was computed (``recipe``, ``scoring``, ``examples``, ``score_examples``,
        ``in_sample``, ...).
    """

    kind: ClassVar[str] = "circuit"
    array_fields: ClassVar[tuple[str, ...]] = ("node_scores", "edge_scores", "codes_positive", "codes_negative")

    node_scores: np.ndarray
    edge_scores: np.ndarray
    codes_positive: np.ndarray
    codes_negative: np.ndarray
    n_layers: int = 0
    n_heads: int = 0
    unique_codes: dict[str, list[int]] = field(default_factory=dict)
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    truth: list[list[int]] | None = None
    difference_scores: list[list[float]] | None = None
    baseline_scores: dict[str, list[list[float]]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def codes(self) -> tuple[np.ndarray, np.ndarray]:
        return self.codes_positive.astype(np.int64), self.codes_negative.astype(np.int64)

    def __repr__(self) -> str:
        top = np.argsort(-self.node_scores.ravel(), kind="stable")[:5]
        H = max(self.n_heads, 1)
        heads = ", ".join(f"{i // H}.{i % H}" for i in top)
        return f"CircuitResult(L={self.n_layers}, H={self.n_heads}, top heads=[{heads}])"


@dataclass
class PatchingCircuitResult(Result):
    """Attribution-patching circuit over attention heads: AtP, EAP or EAP-IG.

    node_scores: (L, H) metric units: mean over prompts of each prompt's score (summed over positions).
    edge_scores: (L*H, L*H + 1) for "eap"/"eap-ig": row = sender head ``l*H + h``, column = receiver
        head ``l*H + h``, last column = logits; 0 where sender layer >= receiver layer. (0, 0) for "atp".
    prompt_node_scores: (P, L, H) the same score per prompt.
    prompt_edge_scores: "s->r" (flat indices, r = L*H for logits) -> per-prompt scores, top 200 edges.
    faithfulness: {"unit": "nodes"|"edges", "sizes": [k...], "faithfulness": [f(k)...], "cpr": float,
        "cmd": float} (MIB's definitions, Mueller et al. 2025); {} when not computed.
    method: "atp", "eap" or "eap-ig"; metric: the metric's name.
    """

    kind: ClassVar[str] = "patching-circuit"
    array_fields: ClassVar[tuple[str, ...]] = ("node_scores", "edge_scores", "prompt_node_scores")

    node_scores: np.ndarray
    edge_scores: np.ndarray
    prompt_node_scores: np.ndarray
    prompt_edge_scores: dict[str, list[float]] = field(default_factory=dict)
    faithfulness: dict[str, Any] = field(default_factory=dict)
    n_layers: int = 0
    n_heads: int = 0
    method: str = "eap-ig"
    metric: str = ""
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    truth: list[list[int]] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        L, H = int(self.n_layers), int(self.n_heads)
        if self.edge_scores.size == 0:
            self.edge_scores = self.edge_scores.reshape(0, 0)
        if self.prompt_node_scores.size == 0:
            self.prompt_node_scores = self.prompt_node_scores.reshape(0, L, H)
        if self.node_scores.shape != (L, H):
            raise ValueError(f"node_scores {self.node_scores.shape} must be (n_layers, n_heads) = ({L}, {H})")
        if self.edge_scores.shape not in ((0, 0), (L * H, L * H + 1)):
            raise ValueError(f"edge_scores {self.edge_scores.shape} must be (0, 0) or ({L * H}, {L * H + 1})")
        if self.prompt_node_scores.shape[1:] != (L, H):
            raise ValueError(f"prompt_node_scores {self.prompt_node_scores.shape} must be (P, {L}, {H})")

    def top_edges(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The ``k`` edges of largest |score| as ("l.h" or "logits", "l.h" or "logits", score)."""
        if self.edge_scores.size == 0:
            return []
        H, n = max(self.n_heads, 1), self.n_layers * self.n_heads
        flat = np.nan_to_num(self.edge_scores).ravel()
        order = np.argsort(-np.abs(flat), kind="stable")[:k]
        name = lambda i: "logits" if i == n else f"{i // H}.{i % H}"  # noqa: E731
        return [(name(i // (n + 1)), name(i % (n + 1)), float(flat[i])) for i in order]

    def __repr__(self) -> str:
        top = np.argsort(-np.abs(np.nan_to_num(self.node_scores)).ravel(), kind="stable")[:5]
        H = max(self.n_heads, 1)
        heads = ", ".join(f"{i // H}.{i % H}" for i in top)
        return (f"PatchingCircuitResult(method={self.method!r}, L={self.n_layers}, H={self.n_heads}, "
                f"prompts={self.prompt_node_scores.shape[0]}, top heads=[{heads}])")


@dataclass
class GenerationResult(Result):
    """Attributions of every generated token to the prompt and the earlier tokens.

    tokens: (n,) all tokens, prompt (incl. BOS) then generated, n = prompt_length + T.
    generated: (T,) the generated tokens as text (``tokenizer.decode([id])``); generated_ids: (T,).
    matrix: (T, n) scores; row t explains the token at position ``prompt_length + t`` (read from the
        logits one position earlier) over columns ``0 .. prompt_length + t - 1``; the columns from
        ``prompt_length + t`` on are NaN (not inputs of that prediction); rows not computed yet
        (a streaming partial result, ``options["rows_done"]``) are NaN.
    raw: (T, n) the method's raw scores the same way (IG/SIG: logit units).
    target: the teacher-forced text, or None for greedy generation.
    """

    kind: ClassVar[str] = "generation"
    array_fields: ClassVar[tuple[str, ...]] = ("matrix", "raw")

    tokens: list[str]
    generated: list[str]
    matrix: np.ndarray
    raw: np.ndarray | None = None
    generated_ids: list[int] = field(default_factory=list)
    prompt_length: int = 0
    method: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    prompt: str = ""
    target: str | None = None
    model: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.raw is None:
            self.raw = self.matrix.copy()
        n, T = len(self.tokens), len(self.generated)
        if self.matrix.shape != (T, n) or self.raw.shape != (T, n) or self.prompt_length + T != n:
            raise ValueError(f"matrix {self.matrix.shape} and raw {self.raw.shape} must be (T, n) = ({T}, {n}) "
                             f"with prompt_length ({self.prompt_length}) + T = n")
        self.prompt_length = int(self.prompt_length)

    def row(self, t: int) -> Attribution:
        """Generated token ``t``'s attribution over its inputs (``tokens[:prompt_length + t]``)."""
        T = len(self.generated)
        if not -T <= t < T:
            raise IndexError(f"generated token {t} out of range 0..{T - 1}")
        t %= T
        m = self.prompt_length + t
        ids = self.generated_ids[t] if t < len(self.generated_ids) else None
        rows = self.options.get("rows") or []
        return Attribution(tokens=self.tokens[:m], scores=self.matrix[t, :m], raw=self.raw[t, :m], target=ids,
                           method=self.method, options={**(rows[t] if t < len(rows) else {}), "generated_index": t},
                           text=self.prompt + "".join(self.generated[:t]), model=self.model,
                           target_label=self.generated[t])

    def __repr__(self) -> str:
        text = "".join(self.generated)
        return (f"GenerationResult(method={self.method!r}, prompt tokens={self.prompt_length}, "
                f"generated={len(self.generated)} {text[:40]!r}, rows done={self.options.get('rows_done', '?')})")
