"""The one list of explanation methods (docs/ARCHITECTURE.md, section "Method registry").

Each entry says what a method is called, which result kind it returns, which family module
implements it, and its options with defaults and help. The CLI, ``%xattr``, the widgets' method
menus, ``xattr_lab.METHODS`` and the method table of docs/guides/methods.md all read this list. The family module
binds its implementation with :func:`implements` when it is imported; :func:`function` imports
it on first use. This module is pure data: no numpy, no torch (the front end reads it).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any, Callable

#: Result kinds and the ``Explainer`` verb that returns each.
KINDS = {"attribution": "attribute", "flow": "flow", "heads": "heads", "circuit": "circuit",
         "generation": "attribute_generation"}


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default and a one-line help."""

    name: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method: ``name`` as users type it, the ``kind`` of result, and the family ``module``."""

    name: str
    kind: str
    module: str
    summary: str
    paper: str = ""
    options: tuple[Option, ...] = ()

    def option_defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


#: GAF's information tensors (the same tuple as ``xattr_lab.graphs.information.INFO_KINDS``; checked by a test)
INFO_KINDS = ("agf", "af", "gf")
_TRUNCATE = Option("truncate", False, "keep the first tokens of a text longer than the model takes (warns)")
_RESIDUAL = Option("residual", 0.5, "weight of the identity added to each attention layer (0.5: the paper's)")
_SOURCES = Option("sources", None, "rows to explain: None = the readout token ([CLS]/first, or the predicting position); 'all'; positions")
_GAF_SOURCES = Option("sources", None, "rows to explain: None = every token for encoder classifiers (the GAF paper), "
                      "the predicting position for LMs; 'cls'/'readout'; 'all'; positions")
_CONVERGENCE_TOL = Option("convergence_tol", 0.05, "relative completeness error under which a result counts as "
                          "converged (and steps='auto' stops)")
_MAX_SECONDS = Option("max_seconds", None, "time cap on steps='auto': the last complete result, marked not "
                      "converged, with a warning")

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("attention", "attribution", "xattr_lab.methods.attention",
               "head-averaged attention row of the readout token in one layer", "",
               (Option("layer", -1, "layer whose attention is read (negative counts from the end)"), _TRUNCATE)),
    MethodSpec("rollout", "attribution", "xattr_lab.methods.flows",
               "attention rollout: product of residual-mixed attention layers", "Abnar & Zuidema (2020)",
               (_RESIDUAL, _SOURCES, _TRUNCATE)),
    MethodSpec("attention_flow", "attribution", "xattr_lab.methods.flows",
               "attention flow: max-flow from the readout token to each input token", "Abnar & Zuidema (2020)",
               (_RESIDUAL, _SOURCES, _TRUNCATE)),
    MethodSpec("gaf", "attribution", "xattr_lab.methods.flows",
               "Generalized Attention Flow: barrier max-flow over an information tensor", "Azarkhalili & Libbrecht (2025)",
               (Option("info", "agf", "information tensor: af (attention), gf (attention gradient) or agf (both)", INFO_KINDS),
                Option("residual", None, "None: no residual edges (the paper); r in [0, 1] mixes them in"),
                _GAF_SOURCES, Option("mu", None, "barrier weight; None lowers it until a cut certifies the value"),
                _TRUNCATE)),
    MethodSpec("ig", "attribution", "xattr_lab.methods.gradients",
               "Integrated Gradients from a baseline token", "Sundararajan et al. (2017)",
               (Option("steps", "auto", "quadrature nodes: 'auto' adds nodes until completeness holds within "
                       "convergence_tol (the paper's check); an int is the paper's fixed rule"),
                Option("baseline", "pad", "baseline token: pad, mask or zero (a zero row on a norm-first model "
                       "falls back to the next token, named in options)"),
                Option("quadrature", None, "None: nested Boole panels for steps='auto' (methods/panels.py), "
                       "gausslegendre for an int; or gausslegendre, riemann_trapezoid"), _CONVERGENCE_TOL,
                Option("max_steps", 1024, "cap on the nodes steps='auto' may use"), _MAX_SECONDS, _TRUNCATE)),
    MethodSpec("sig", "attribution", "xattr_lab.methods.gradients",
               "Sequential Integrated Gradients: each word moved alone from [MASK]", "Enguehard (2023)",
               (Option("steps", "exact", "'exact': the limit of the paper's integral per word, "
                       "F(x) − F(x with the word at the baseline), forward passes only; 'auto' adds nodes until "
                       "convergence_tol holds; an int is the paper's fixed rule"),
                Option("baseline", "mask", "baseline token: mask, pad or zero (a zero row on a norm-first model "
                       "falls back to the next token, named in options)"),
                Option("quadrature", "gausslegendre", "gausslegendre or riemann_trapezoid"), _CONVERGENCE_TOL,
                Option("max_steps", 128, "cap on the nodes per token steps='auto' may use"), _MAX_SECONDS, _TRUNCATE)),
    MethodSpec("grad_x_input", "attribution", "xattr_lab.methods.gradients",
               "gradient times input embedding (one backward pass)", "", (_TRUNCATE,)),
    MethodSpec("flow", "flow", "xattr_lab.methods.flows",
               "the whole flow graph of GAF (capacities, edge flows, certificate)", "Azarkhalili & Libbrecht (2025)",
               (Option("info", "agf", "information tensor: af, gf or agf", INFO_KINDS),
                Option("residual", None, "None: no residual edges; r in [0, 1] mixes them in"), _GAF_SOURCES, _TRUNCATE)),
    MethodSpec("heads", "heads", "xattr_lab.methods.geometry",
               "attention geometry of every head: entropy, cone index, patterns", "",
               (Option("max_map_tokens", 128, "keep the attention maps when the text has at most this many tokens"),
                _TRUNCATE)),
    MethodSpec("circuit", "circuit", "xattr_lab.methods.circuits",
               "SAE circuit codes over per-head outputs of positive and negative prompts", "O'Neill & Bui (2024)",
               (Option("recipe", "paper", "'paper': the authors' SAE and scores; 'xattr': ours (l1 0.1, last token, "
                       "centred heads unless given)", ("paper", "xattr")),
                Option("scoring", "count", "node score: 'count' of codes only in positives (paper) or 'jsd' of the "
                       "code histograms", ("count", "jsd")),
                Option("features", 200, "SAE features"),
                Option("l1", None, "SAE L1 penalty (None: the recipe's, 0.02 paper / 0.1 xattr)"),
                Option("epochs", 500, "SAE training epochs"),
                Option("examples", 10, "prompts per class that train the SAE (the first ones)"),
                Option("score_examples", 250, "prompts per class scored after those, never trained on"),
                Option("position", None, "'mean' over tokens or one token index (None: the recipe's, mean / -1)"),
                Option("center_heads", None, "subtract each head's mean output before the SAE (None: the recipe's, "
                       "off / on)"),
                Option("seed", 0, "random seed"))),
)

#: Every attribution method and ``flow`` take ``granularity``; the Explainer applies it after the method
#: (:mod:`xattr_lab.methods.words`). Not in the method table (docs/guides/methods.md): one line below it says so.
GRANULARITY = Option("granularity", "token", "token: subword tokens; word: tokens merged into whitespace-delimited "
                     "words by the tokenizer's offsets (sum, or max-abs for attention_flow)", ("token", "word"))
SPECS = tuple(replace(s, options=s.options + (GRANULARITY,)) if s.kind in ("attribution", "flow") else s for s in SPECS)
#: ``ex.circuit(method=...)``: the SAE codes (default, the options in SPECS) or an attribution-patching
#: circuit (:mod:`xattr_lab.methods.patching_circuits`). Like GRANULARITY, these options stay out of the docs'
#: method table (a line below it names them).
CIRCUIT_METHODS = ("sae", "atp", "eap", "eap-ig")
PATCHING_OPTIONS = (
    Option("method", "sae", "sae: SAE circuit codes (O'Neill & Bui 2024); atp: attribution patching, node scores "
           "(Nanda 2023; Kramár et al. 2024); eap: edge attribution patching (Syed et al. 2023); eap-ig: EAP with "
           "integrated gradients (Hanna et al. 2024). Patching methods pair positive (clean) and negative "
           "(corrupted) prompts by index", CIRCUIT_METHODS),
    Option("ig_steps", 5, "eap-ig: gradient points between the corrupted and clean input embeddings (5: Hanna et al.)"),
    Option("faithfulness", True, "atp/eap/eap-ig: MIB's faithfulness curve over head-circuit sizes, CPR and CMD"),
)
#: ``ex.attribute_generation``: a verb over the attribution methods, not one of them (kept out of
#: :data:`SPECS`, the method table of docs/guides/methods.md, and :data:`ATTRIBUTION_METHODS`).
GENERATION_METHODS = ("ig", "sig", "attention", "rollout", "gaf")
GENERATE = MethodSpec(
    "generate", "generation", "xattr_lab.methods.generation",
    "attribute every generated token (greedy, or a given target text) to the prompt and the earlier tokens", "",
    (Option("method", "ig", "attribution method run for each generated token", GENERATION_METHODS),
     Option("max_new_tokens", 20, "tokens to generate greedily (ignored when a target text is given)"),
     Option("target", None, "a target text to teacher-force instead of greedy generation"),
     Option("stop_at_eos", True, "stop after the end-of-sequence token")))

_BY_NAME = {spec.name: spec for spec in SPECS + (GENERATE,)}
_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def names(kind: str | None = None) -> tuple[str, ...]:
    """Method names, in registry order; only those returning ``kind`` when given."""
    return tuple(s.name for s in SPECS if kind is None or s.kind == kind)


#: The token-attribution methods (``ex.attribute(text, method=...)``), as ``xattr_lab.METHODS``.
ATTRIBUTION_METHODS = names("attribution")


def spec(name: str) -> MethodSpec:
    """The entry for ``name``; an ``InputError`` listing the choices when there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        from ..errors import InputError

        raise InputError(f"unknown method {name!r}; choose one of {list(ATTRIBUTION_METHODS)}") from None


def implements(*method_names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a family module: bind ``fn`` as the implementation of these methods.

    The function is called as ``fn(explainer, *args, method=name, **options)``.
    """

    def bind(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in method_names:
            if name not in _BY_NAME:
                raise KeyError(f"{name!r} is not in the method registry; add a MethodSpec to SPECS first")
            _FUNCTIONS[name] = fn
        return fn

    return bind


def function(name: str) -> Callable[..., Any]:
    """The implementation of ``name`` (imports its family module on first use)."""
    entry = spec(name)
    if name not in _FUNCTIONS:
        importlib.import_module(entry.module)
    return _FUNCTIONS[name]


def markdown_table() -> str:
    """The method table of docs/guides/methods.md, generated from :data:`SPECS`."""
    rows = ["| method | returns | what it computes | paper | options (default) |", "|---|---|---|---|---|"]
    for s in SPECS:
        opts = ", ".join(f"`{o.name}` ({o.default!r})" for o in s.options if o.name not in ("truncate", "granularity"))
        rows.append(f"| `{s.name}` | {s.kind} | {s.summary} | {s.paper} | {opts} |")
    return "\n".join(rows)
