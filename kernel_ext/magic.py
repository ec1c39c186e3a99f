"""IPython magics: ``%load_ext xattr_lab``, then ``%xattr`` / ``%%xattr``.

    %xattr explain "A gripping, beautifully acted film." --method sig --steps 16 --out a
    %xattr flow "When Mary and John went to the store, John gave a drink to" --model smollm2-135m
    %xattr heads "The film was a delight." --html heads.html
    %xattr circuit --positive POS --negative NEG        # POS/NEG: lists of prompts in the namespace
    %xattr evaluate TEXTS --methods ig,sig --k 0.2       # TEXTS: a list of texts in the namespace
    %xattr evaluate TEXTS --backend ray --workers 2      # shards on Ray actors (or --address host:port)
    %xattr evaluate TEXTS --out-dir runs/faith           # records as Parquet + table.csv; a rerun resumes
    %xattr generate "The capital of France is" --model smollm2-135m --method ig --max-new-tokens 8
    %xattr explain "An unbelievably good film." --method ig --granularity word

    %%xattr explain --method ig
    The cell body is the text.

In ``%%xattr circuit`` the body holds positives, a line ``---``, then negatives (one per line);
in ``%%xattr evaluate`` one text per line. The line is taken as typed: IPython does not expand
``{expr}`` or ``$name`` in it (a text may hold braces and dollars), except that an argument that is
exactly ``$name`` reads the text held by the variable ``name`` (first, it is the text to explain). A first
word that is no verb is the text to explain, unless it mistypes a verb (``%xattr evalute``: a usage error
naming ``evaluate``; the rule is in ``%xattr -h``). The parser and the dispatcher are those of the ``xattr``
command (:mod:`xattr_lab.commands`; docs/ARCHITECTURE.md, section "Commands"): this module reads
the line, the cell body and the namespace, and returns the result for IPython to display.
Explainers are cached per kernel (``EXPLAINERS``); ``DEFAULTS`` holds the default model, method and
colour map (the JupyterLab settings may set it). Neither torch nor the widgets load until a command runs.
"""
from __future__ import annotations

import keyword
import re
import shlex

from . import commands
from .commands import COMMANDS, DEFAULTS, EXPLAINERS, UsageError, explainer
from .target_spec import parse_target, token_position

_loaded_shells: set[int] = set()


def build_parser():
    """The ``%xattr`` parser (:func:`xattr_lab.commands.build_parser` for the magic)."""
    return commands.build_parser("magic")


def usage() -> str:
    return build_parser().format_help()


def run(line: str, cell: str | None = None, namespace: dict | None = None):
    """Run one ``%xattr`` command; returns the result (or raises UsageError)."""
    namespace = {} if namespace is None else namespace
    parser = build_parser()
    try:
        argv = shlex.split(line, posix=True)
    except ValueError as error:
        raise commands.ArgumentsError(f"cannot parse the line ({error})", prog=parser.prog,
                                      usage=parser.format_usage()) from None
    if argv and _VARIABLE.fullmatch(argv[0]):  # a text, never a verb (nor a mistyped one)
        argv.insert(0, "explain")
    args = commands.parse_args(parser, _variables(argv, namespace), cell)
    if args.out is not None and (not args.out.isidentifier() or keyword.iskeyword(args.out)):
        raise UsageError(f"--out needs a Python name, not {args.out!r}")
    _apply_colour_map()
    result = commands.run(args, commands.NamespaceInputs(cell, namespace))
    commands.write_outputs(result, args)
    if args.out:
        namespace[args.out] = result
    return result


_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def _variables(argv: list[str], namespace: dict) -> list[str]:
    """An argument that is exactly ``$name`` becomes the text in the variable ``name``."""
    out = []
    for arg in argv:
        match = _VARIABLE.fullmatch(arg)
        if match is None:
            out.append(arg)
            continue
        name = match.group(1)
        if name not in namespace:
            raise UsageError(f"no variable {name!r} in the namespace for {arg}; to explain {arg!r} as it is, "
                             "put it in a %%xattr cell body")
        if not isinstance(namespace[name], str):
            raise UsageError(f"{arg} holds a {type(namespace[name]).__name__}, not a text")
        out.append(namespace[name])
    return out


def _apply_colour_map() -> None:
    name = DEFAULTS.get("colour_map")
    if name:
        from .widgets import core

        core.set_diverging(name)


def _make_magics_class():
    from IPython.core.magic import Magics, line_cell_magic, magics_class, needs_local_scope, no_var_expand

    @magics_class
    class XattrMagics(Magics):
        """``%xattr`` and ``%%xattr`` (see :mod:`xattr_lab.magic`)."""

        @line_cell_magic
        @needs_local_scope
        @no_var_expand  # the text is the user's: "{1+1}" and "$x" stay as typed (see _variables)
        def xattr(self, line, cell=None, local_ns=None):
            namespace = self.shell.user_ns
            lookup = dict(namespace)
            if local_ns:
                lookup.update(local_ns)
            try:
                return run(line, cell, _Namespace(namespace, lookup))
            except ValueError as error:  # UsageError and the other XattrErrors: the message names the fix
                print(commands.describe(error, "%xattr"))
                return None

    return XattrMagics


class _Namespace(dict):
    """Reads from the merged local/user namespace, writes into the user namespace."""

    def __init__(self, target: dict, lookup: dict):
        super().__init__(lookup)
        self._target = target

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._target[key] = value


def load_ipython_extension(ipython) -> None:
    """Register ``%xattr``/``%%xattr``; loading twice is harmless."""
    if id(ipython) in _loaded_shells:
        return
    ipython.register_magics(_make_magics_class())
    _loaded_shells.add(id(ipython))


def unload_ipython_extension(ipython) -> None:
    _loaded_shells.discard(id(ipython))


__all__ = ["DEFAULTS", "EXPLAINERS", "COMMANDS", "UsageError", "build_parser", "usage", "run", "explainer",
           "parse_target", "token_position", "load_ipython_extension", "unload_ipython_extension"]
