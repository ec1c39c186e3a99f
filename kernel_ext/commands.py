"""One parser and one dispatcher for ``%xattr`` and the ``xattr`` command (docs/ARCHITECTURE.md, section "Commands").

Both front ends parse with :func:`build_parser` and run with :func:`run`: the same verbs (explain, flow,
heads, circuit, evaluate, generate), options and errors. They differ only where they must. Inputs: ``%xattr`` reads
a NAME (a list in the namespace) or the ``%%xattr`` cell body (:class:`NamespaceInputs`); ``xattr`` a FILE,
one text or prompt per line (:class:`FileInputs`); texts are checked (:func:`core.budget.check_text`)
before any model loads; a first word that is no verb is the text to explain, unless it is a mistyped
verb (:func:`command_inputs.mistyped_verb`: a usage error). Outputs (:mod:`.command_outputs`): ``%xattr``
returns the result (``--out NAME`` stores it); ``xattr`` prints a table and writes ``--html`` by default;
both write ``--html/--png/--json`` (evaluate: ``--csv/--json``, and a resumable run folder ``--out-dir DIR``,
in ``xattr`` also ``--out DIR``). ``xattr`` adds the verbs ``lab`` and ``export``. Method names and option help come from
:mod:`xattr_lab.methods.registry`. This module imports neither torch, numpy nor the widgets.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from .command_outputs import OUT_DIR_HELP, check_out_dir, save_run, write_outputs  # noqa: F401 (commands.*)
from .command_inputs import TYPO_RULE, FileInputs, Inputs, NamespaceInputs, mistyped_verb, normalise  # noqa: F401
from .constants import DEFAULT_MODEL
from .core.budget import check_text
from .core.cache import LRUCache
from .errors import ArgumentsError, HelpRequested, UsageError  # noqa: F401  (commands.* names)
from .methods import registry
from .target_spec import parse_target, token_position

#: Defaults of ``%xattr`` (the JupyterLab settings update this dict); ``xattr`` uses the same.
DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL, "method": "attention", "colour_map": "RdBu", "device": "auto"}
#: The explainers loaded in this process, by (model, device): loaded once per kernel, the least
#: recently used dropped first once their weights pass ``$XATTR_LAB_EXPLAINER_CACHE`` bytes (4 GiB).
EXPLAINERS = LRUCache(int(float(os.environ.get("XATTR_LAB_EXPLAINER_CACHE", 4 << 30))),
                      sizeof=lambda ex: sum(t.numel() * t.element_size() for t in ex.model.state_dict().values()))
#: The verbs both front ends share (the CLI adds ``lab``).
VERBS = ("explain", "flow", "heads", "circuit", "evaluate", "generate")
COMMANDS = VERBS

#: Methods that take ``--steps`` (those whose registry entry has a ``steps`` option).
STEPPED_METHODS = tuple(s.name for s in registry.SPECS if "steps" in s.option_defaults())

_FRONT_ENDS: dict[str, dict[str, Any]] = {
    "magic": {
        "prog": "%xattr", "description": "Explain a Transformer prediction inline (xattr-lab).",
        "epilog": "With %%xattr the cell body is the text. Defaults: xattr_lab.magic.DEFAULTS. " + TYPO_RULE,
        "source": "NAME", "text": "the text (or use %%%%xattr with the text as the cell body)",
        "prompts": "name of a list of {} prompts in the namespace", "html": None,
        "texts": "name of a list of texts in the namespace (or one per line in a %%%%xattr evaluate cell)",
    },
    "cli": {
        "prog": "xattr", "description": "Explain Transformer predictions (xattr-lab).",
        "source": "FILE", "text": "the text to explain", "prompts": "text file: one {} prompt per line",
        "epilog": TYPO_RULE, "out_dir": ("--out", "--out-dir"),
        "texts": "text file: one text per line", "html": "xattr-{}.html",
    },
}


# ---------------------------------------------------------------------------- errors
def describe(error: Exception, prog: str) -> str:
    """What a front end prints for ``error``: the help as is, else ``prog: error: message`` (and the usage)."""
    if isinstance(error, HelpRequested):
        return str(error).rstrip()
    text = f"{getattr(error, 'prog', '') or prog}: error: {error}"
    usage = getattr(error, "usage", "")
    return f"{text}\n\n{usage}".rstrip() if usage else text


class _Parser(argparse.ArgumentParser):
    """Raises :class:`UsageError` instead of printing and exiting, so the magic never ends the kernel."""

    def error(self, message):
        raise ArgumentsError(message, prog=self.prog, usage=self.format_usage())

    def exit(self, status=0, message=None):
        raise ArgumentsError((message or "").strip(), prog=self.prog, usage=self.format_usage())

    def print_help(self, file=None):
        raise HelpRequested(self.format_help())


# ---------------------------------------------------------------------------- the parser
def build_parser(front_end: str = "magic", extra: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """The parser of ``%xattr`` (``front_end="magic"``) or ``xattr`` (``"cli"``).

    ``extra(subparsers)`` may add front-end verbs (the CLI's ``lab``). The parser's ``verbs`` attribute
    maps every verb it knows to its subparser.
    """
    if front_end not in _FRONT_ENDS:
        raise ValueError(f"front_end is 'magic' or 'cli', not {front_end!r}")
    fe = _FRONT_ENDS[front_end]
    parser = _Parser(prog=fe["prog"], description=fe["description"], epilog=fe["epilog"].format(prog=fe["prog"]))
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("explain", help="token attributions for a text", description="token attributions for a text")
    p.add_argument("text", nargs="*", help=fe["text"])
    _model(p)
    p.add_argument("--method", default=None, help=f"one of {', '.join(registry.ATTRIBUTION_METHODS)} "
                                                  f"(default {DEFAULTS['method']})")
    _target(p)
    steps = _option("ig", "steps")
    p.add_argument("--steps", default=None, help=f"{' and '.join(STEPPED_METHODS)} only: {steps.help} "
                                                 f"(default {steps.default})")
    _granularity(p)
    _outputs(p, "explain", front_end)

    p = sub.add_parser("flow", help="generalized attention flow (GAF) through the layers",
                       description=registry.spec("flow").summary)
    p.add_argument("text", nargs="*", help=fe["text"])
    _model(p)
    _target(p)
    info = _option("flow", "info")
    p.add_argument("--info", default=info.default, choices=info.choices,
                   help=f"{info.help} (default {info.default})")
    _granularity(p)
    _outputs(p, "flow", front_end)

    generate = registry.spec("generate")
    p = sub.add_parser("generate", help="explain every generated token", description=generate.summary)
    p.add_argument("text", nargs="*", help=fe["text"].replace("text", "prompt", 1))
    _model(p)
    for option in generate.options:  # --method, --max-new-tokens, --target (a text), --stop-at-eos
        kind = type(option.default) if option.default is not None else str
        p.add_argument("--" + option.name.replace("_", "-"), type=kind if kind is not bool else _yes_no,
                       default=option.default, choices=option.choices, help=f"{option.help} (default {option.default})")
    p.add_argument("--steps", default=None, help=f"ig and sig only: {steps.help}")
    _outputs(p, "generate", front_end)

    p = sub.add_parser("heads", help="attention geometry of every head", description=registry.spec("heads").summary)
    p.add_argument("text", nargs="*", help=fe["text"])
    _model(p)
    _outputs(p, "heads", front_end)

    circuit, _FLAGS, _KINDS = registry.spec("circuit"), {"center_heads"}, {"position": token_position, "l1": number}
    p = sub.add_parser("circuit", help="SAE circuit codes over attention heads", description=circuit.summary)
    _model(p)
    for side in ("positive", "negative"):
        p.add_argument(f"--{side}", default=None, metavar=fe["source"], help=fe["prompts"].format(side))
    for option in circuit.options:
        flag = "--" + option.name.replace("_", "-")
        if option.name in _FLAGS:
            p.add_argument(flag, action="store_true", default=option.default, help=option.help)
        else:
            kind = _KINDS.get(option.name) or (number if isinstance(option.default, float) else type(option.default))
            p.add_argument(flag, type=kind, default=option.default, choices=option.choices,
                           help=f"{option.help} (default {option.default})")
    for option in registry.PATCHING_OPTIONS:  # --method, --ig-steps, --faithfulness yes|no
        kind = {bool: _yes_no, int: int}.get(type(option.default), str)
        p.add_argument("--" + option.name.replace("_", "-"), type=kind, default=None, choices=option.choices,
                       help=f"{option.help} (default {option.default})")
    _outputs(p, "circuit", front_end)

    p = sub.add_parser("evaluate", help="faithfulness of attribution methods over texts",
                       description="faithfulness table (log-odds, comprehensiveness, sufficiency)")
    p.add_argument("texts", nargs="?", default=None, metavar=fe["source"], help=fe["texts"])
    _model(p)
    p.add_argument("--methods", default=None,
                   help=f"comma-separated: {', '.join(registry.ATTRIBUTION_METHODS)} or the paper's labels "
                        "(faithfulness.PAPER_METHODS, e.g. ig[pad]); default: the paper's set")
    p.add_argument("--k", type=number, default=0.2, help="top-k fraction (default 0.2)")
    p.add_argument("--no-cache", action="store_true", help="do not reuse or store per-text results")
    p.add_argument("--backend", choices=("local", "ray"), default=None, help="run the texts as shards written to "
                   "Parquet, here ('local') or on Ray actors ('ray': pip install 'xattr-lab[ray]')")
    p.add_argument("--address", default=None, help="with --backend ray: the cluster (host:port, ray://host:port, auto); "
                   "default a local Ray runtime")
    p.add_argument("--workers", type=int, default=None, help="with --backend ray: actors (default one per GPU or CPU)")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the table as CSV here")
    p.add_argument("--json", default=None, metavar="FILE", help="write the table as JSON (records) here")
    p.add_argument(*fe.get("out_dir", ("--out-dir",)), dest="out_dir", default=None, metavar="DIR", help=OUT_DIR_HELP)
    _namespace_output(p, front_end)

    if extra is not None:
        extra(sub)
    parser.verbs = dict(sub.choices)
    return parser


def number(text: str) -> float:
    """A finite float (argparse type: NaN and infinity are usage errors)."""
    return float(text) if math.isfinite(float(text)) else float("invalid")


def _option(method: str, name: str) -> registry.Option:
    return next(o for o in registry.spec(method).options if o.name == name)


def _model(p) -> None:
    p.add_argument("--model", default=None, help=f"embedded alias, local directory or hub id "
                                                 f"(default {DEFAULTS['model']})")
    p.add_argument("--device", default=None, help=f"auto, cpu or cuda (default {DEFAULTS['device']})")


def _yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError(text)
    return text.lower() in ("yes", "true", "1")


def _granularity(p) -> None:
    option = registry.GRANULARITY
    p.add_argument("--granularity", default=option.default, choices=option.choices,
                   help=f"{option.help} (default {option.default})")


def _target(p) -> None:
    p.add_argument("--target", default=None, help="class index/label, token, or 'a,b' for a logit difference "
                                                  "(default: the predicted class or token)")


def _outputs(p, verb: str, front_end: str) -> None:
    html = (_FRONT_ENDS[front_end]["html"] or "").format(verb) or None
    default = f" (default {html}; '' to skip)" if html else ""
    p.add_argument("--html", default=html, metavar="FILE",
                   help=f"write a self-contained interactive HTML view here{default}")
    p.add_argument("--png", default=None, metavar="FILE", help="write a PNG here")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result's JSON here")
    _namespace_output(p, front_end)


def _namespace_output(p, front_end: str) -> None:
    if front_end == "magic":
        p.add_argument("--out", default=None, metavar="NAME", help="also store the result as NAME in the namespace")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str], cell: str | None = None) -> argparse.Namespace:
    """Parse ``argv``; a first word that is no verb means ``explain`` (``%xattr "text"``, ``xattr "text"``)
    unless it is a mistyped verb (:func:`mistyped_verb`: a usage error that names the verb); no arguments
    (and no cell body) asks for the help. Raises :class:`UsageError`."""
    argv = list(argv)
    if not argv and cell is None:
        raise HelpRequested(parser.format_help(), status=2)
    if not argv or (argv[0] not in parser.verbs and argv[0] not in ("-h", "--help")):
        typo = mistyped_verb(argv[0], tuple(parser.verbs)) if argv else None
        if typo:
            parser.error(f"{argv[0]!r} is not a verb; did you mean {typo!r}? Verbs: {', '.join(parser.verbs)}. "
                         f"(To explain the word as a text: {parser.prog} explain {argv[0]})")
        argv = ["explain"] + argv
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported with the verb's usage, not the top level's
        parser.verbs.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# ---------------------------------------------------------------------------- options
def steps_option(method: str, value) -> dict:
    """{"steps": int | 'auto' | 'exact'} for the methods that take steps; a usage error otherwise."""
    if value is None:
        return {}
    try:
        steps = value if value in ("auto", "exact") else int(value)
    except ValueError:
        raise UsageError(f"--steps takes an integer, 'auto' or 'exact' (sig), not {value!r}") from None
    if method not in STEPPED_METHODS:
        raise UsageError(f"--steps applies to the {' and '.join(STEPPED_METHODS)} methods, not {method!r}")
    return {"steps": steps}


def circuit_kwargs(args) -> dict:
    """The circuit options the user gave, by their registry names (None: the recipe decides). With a patching
    ``--method`` (atp, eap, eap-ig) the SAE options must stay at their defaults and ``--ig-steps`` needs eap-ig."""
    method = getattr(args, "method", None) or "sae"
    sae = registry.spec("circuit").options
    given = {o.name: getattr(args, o.name) for o in sae}
    if method == "sae":
        extra = [o.name for o in registry.PATCHING_OPTIONS[1:] if getattr(args, o.name, None) is not None]
        if extra:
            raise UsageError(f"--{extra[0].replace('_', '-')} applies to --method atp, eap or eap-ig, not sae")
        return {name: value for name, value in given.items() if value is not None}
    changed = [o.name for o in sae if given[o.name] != o.default]
    if changed:
        raise UsageError(f"--{changed[0].replace('_', '-')} is an SAE option; --method {method} does not take it")
    if args.ig_steps is not None and method != "eap-ig":
        raise UsageError(f"--ig-steps applies to --method eap-ig, not {method}")
    if args.ig_steps is not None and args.ig_steps < 1:
        raise UsageError(f"--ig-steps must be at least 1, not {args.ig_steps}")
    kwargs: dict[str, Any] = {"method": method}
    kwargs.update({name: getattr(args, name) for name in ("ig_steps", "faithfulness") if getattr(args, name) is not None})
    return kwargs


def options(args) -> dict:
    """The keyword arguments of the verb, checked before any model loads."""
    verb = args.command
    if verb == "explain":
        method = args.method or DEFAULTS["method"]
        if method not in registry.ATTRIBUTION_METHODS:
            raise UsageError(f"unknown method {method!r}; choose one of {list(registry.ATTRIBUTION_METHODS)}")
        return {"method": method, "target": parse_target(args.target), **steps_option(method, args.steps),
                "granularity": args.granularity}
    if verb == "flow":
        return {"info": args.info, "target": parse_target(args.target), "granularity": args.granularity}
    if verb == "generate":
        if args.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, not {args.max_new_tokens}")
        return {"method": args.method, "max_new_tokens": args.max_new_tokens, "target": args.target or None,
                "stop_at_eos": args.stop_at_eos, **steps_option(args.method, args.steps)}
    if verb == "circuit":
        return circuit_kwargs(args)
    if verb == "evaluate":
        if not 0 < args.k <= 1:
            raise UsageError(f"--k is a fraction of the tokens, in (0, 1], not {args.k}")
        kwargs: dict[str, Any] = {"k": args.k}
        if args.no_cache:
            kwargs["cache"] = False
        if args.methods:
            kwargs["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
        if (args.address or args.workers) and args.backend != "ray":
            raise UsageError("--address and --workers go with --backend ray")
        kwargs.update({name: getattr(args, name) for name in ("backend", "address", "workers") if getattr(args, name)})
        if getattr(args, "out_dir", None):  # the folder is the run's store: resumed from, never the cache
            kwargs.update(out=check_out_dir(args.out_dir), cache=False, backend=args.backend or "local")
        return kwargs
    return {}


# ---------------------------------------------------------------------------- run
def explainer(model: str | None = None, device: str | None = None, cache: bool = True):
    """The Explainer for ``model`` (default ``DEFAULTS['model']``); kept in :data:`EXPLAINERS` unless not ``cache``."""
    from .explainer import load  # xattr_lab.load; the package root would reach back up to the front ends

    model = model or DEFAULTS["model"]
    device = device or DEFAULTS.get("device", "auto")
    if not cache:
        return load(model, device=device)
    key = (model, str(device))
    if key not in EXPLAINERS:
        EXPLAINERS[key] = load(model, device=device)
    return EXPLAINERS[key]


def run(args, inputs: Inputs, cache: bool = True):
    """Run one parsed command: read its inputs, load the explainer, call the verb; returns the result.

    Options and inputs are checked before the model loads. Raises :class:`UsageError` for bad
    arguments and the library's ``XattrError`` for requests it cannot serve.
    """
    verb = args.command
    if verb not in VERBS:
        raise UsageError(f"{verb!r} is not a verb of this front end; choose one of {list(VERBS)}")
    kwargs = options(args)
    if verb == "circuit":
        data: tuple = inputs.prompts(args)
    elif verb == "evaluate":
        data = (inputs.texts(args),)
    else:
        data = (inputs.text(args),)
    for text in (t for group in data for t in ([group] if isinstance(group, str) else group)):
        check_text(text)  # before any model loads
    ex = explainer(args.model, args.device, cache=cache)
    if verb == "evaluate":
        from .evaluation import faithfulness_harness

        if "out" not in kwargs:
            return faithfulness_harness.evaluate(ex, *data, **kwargs)
        table, per_text = faithfulness_harness.evaluate(ex, *data, return_per_text=True, **kwargs)
        save_run(kwargs["out"], table, per_text)
        return table
    call = {"explain": ex.attribute, "flow": ex.flow, "heads": ex.heads, "circuit": ex.circuit,
            "generate": ex.attribute_generation}[verb]
    return call(*data, **kwargs)
