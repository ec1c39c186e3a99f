"""Where the front ends find texts and prompts (docs/ARCHITECTURE.md, section "Commands").

``%xattr`` reads a NAME (a list in the user namespace) or the ``%%xattr`` cell body
(:class:`NamespaceInputs`); ``xattr`` reads a FILE, one text or prompt per line (:class:`FileInputs`).
A first argument that is no verb is the text to explain, unless it is a mistyped verb (:func:`mistyped_verb`).
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import UsageError

_LINE_BREAKS = re.compile("\r\n|[\r\u0085\u2028\u2029]")


def normalise(text: str) -> str:
    """Line breaks as \\n: \\r\\n, \\r, U+0085 NEXT LINE and the line/paragraph separators."""
    return _LINE_BREAKS.sub("\n", text)


def _lines(text: str | None) -> list[str]:
    """Non-blank lines, split at line breaks only (not at \\v, \\f, \\x1c-\\x1e as ``str.splitlines``)."""
    return [line.strip() for line in normalise(text or "").split("\n") if line.strip()]


_WORD = re.compile(r"[A-Za-z][A-Za-z_-]*")
#: The rule of :func:`mistyped_verb`, as the front ends' ``--help`` states it ({prog}: the front end).
TYPO_RULE = ("A first argument that is no verb is the text to explain: {prog} \"a fine film\" is {prog} explain "
             "\"a fine film\". Except a typo: a first argument that is one word of ASCII letters (and - or _) "
             "within 1 edit of a verb of up to 4 letters (flow), or 2 edits of a longer verb (evaluate), case "
             "ignored (an edit: a letter inserted, deleted, replaced, or two neighbours swapped), is an error that "
             "names the verb; nothing loads and nothing is written. To explain such a word, name the verb: "
             "{prog} explain flaw.")


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, swaps of neighbours (1 each)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def mistyped_verb(word: str, verbs) -> str | None:
    """The verb that ``word`` (a front end's first argument, not itself a verb) mistypes, or None (:data:`TYPO_RULE`).

    One word of ASCII letters within 1 edit of a verb of up to 4 letters, or 2 of a longer one, case
    ignored; the nearest verb wins (ties: the first in ``verbs``). Texts of several words never match.
    """
    if word in verbs or not _WORD.fullmatch(word):
        return None
    near = [(edit_distance(word.lower(), verb), i, verb) for i, verb in enumerate(verbs)]
    near = [(distance, i, verb) for distance, i, verb in near if distance <= (1 if len(verb) <= 4 else 2)]
    return min(near)[2] if near else None


class Inputs:
    """Where a front end finds texts and prompts; subclasses say how a ``NAME``/``FILE`` is read."""

    source, text_hint, texts_hint, prompts_hint = "NAME", "", "", ""

    def __init__(self, cell: str | None = None):
        self.cell = cell

    def read(self, name: str, what: str) -> list[str]:
        raise NotImplementedError

    def text(self, args) -> str:
        text = normalise(" ".join(args.text) or (self.cell or "").strip())
        if not text:
            raise UsageError(f"{args.command}: give a text{self.text_hint}")
        return text

    def texts(self, args) -> list[str]:
        texts = self.read(args.texts, "texts") if args.texts else _lines(self.cell)
        if not texts:
            raise UsageError(f"evaluate: {self.texts_hint}")
        return texts

    def prompts(self, args) -> tuple[list[str], list[str]]:
        src = self.source
        if args.positive or args.negative:
            if not (args.positive and args.negative):
                raise UsageError(f"circuit: give both --positive {src} and --negative {src}")
            return self.read(args.positive, "positive prompts"), self.read(args.negative, "negative prompts")
        lines = [line.strip() for line in normalise(self.cell or "").split("\n")]
        if "---" not in lines:
            raise UsageError(f"circuit: give --positive {src} --negative {src}{self.prompts_hint}")
        split = lines.index("---")
        return _lines("\n".join(lines[:split])), _lines("\n".join(lines[split + 1:]))


class NamespaceInputs(Inputs):
    """``%xattr``: a NAME is a variable of the user namespace; the ``%%xattr`` cell body is text."""

    text_hint = ", or use %%xattr with the text as the cell body"
    texts_hint = "name a list of texts (e.g. %xattr evaluate TEXTS) or put one per line in a %%xattr evaluate cell"
    prompts_hint = ", or a %%xattr circuit cell with positives, a line '---', then negatives"

    def __init__(self, cell: str | None = None, namespace: dict | None = None):
        super().__init__(cell)
        self.namespace = {} if namespace is None else namespace

    def read(self, name: str, what: str) -> list[str]:
        if name not in self.namespace:
            raise UsageError(f"no variable {name!r} in the namespace (it should hold the {what})")
        value = self.namespace[name]
        texts = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise UsageError(f"{name!r} should hold the {what} as a list of strings, not {type(value).__name__}")
        return [normalise(t) for t in texts]


class FileInputs(Inputs):
    """``xattr``: a FILE holds one text or prompt per line."""

    source = "FILE"
    texts_hint = "give a text file, one text per line (xattr evaluate FILE)"

    def read(self, name: str, what: str) -> list[str]:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot read {name}: {error.strerror}") from error
        lines = _lines(text)
        if not lines:
            raise UsageError(f"{name} holds no {what} (one per line)")
        return lines
