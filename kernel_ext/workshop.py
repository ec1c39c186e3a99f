"""``xattr_lab.workshop``: the check functions of the workshop notebooks (examples/0*.ipynb).

Each exercise cell of a notebook ends with a call to one of these functions. A check never raises on a
wrong answer: it returns a :class:`Verdict` whose text (shown as the cell's output) starts with

- ``✅`` the answer is right (and what it shows),
- ``❌`` it is not (and why not: a hint that points at the usual mistake),
- ``⏳`` it is not answered yet (the answer is still ``None``).

The module is pure: NumPy and the standard library only (no torch, no widgets, no model), so the checks
are fast and unit-tested on plain numbers (tests/integration/test_workshop.py). Token strings are compared without
tokenizer markers (``Ġ``, ``▁``, ``##``), case or surrounding spaces.
"""
from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

RIGHT, WRONG, WAITING = "✅", "❌", "⏳"

#: The IOI circuit of ``smollm2-135m`` found by path patching (docs/results.md: ``python
#: scripts/circuits_report.py truth --task ioi``; 32 prompts, seed 1000): 12 of 270 heads as "layer.head".
SMOLLM2_IOI_TRUTH: dict[str, tuple[str, ...]] = {
    "name mover": ("23.3", "29.1", "24.4", "23.0", "29.0", "23.7", "23.1", "23.2", "24.5"),
    "S-inhibition": ("20.0", "19.2"),
    "induction / duplicate-token": ("17.4",),
}

#: Memory one workshop kernel needs (GB): a loaded minilm-rt or smollm2-135m plus the notebook's results.
KERNEL_MEMORY_GB = (1.0, 1.3)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. ``ok``: True (right), False (wrong) or None (not answered yet).

    Its text is the cell's output in a notebook; ``bool(verdict)`` is True only for a right answer.
    """

    ok: bool | None
    message: str

    def __bool__(self) -> bool:
        return self.ok is True

    def __repr__(self) -> str:
        return self.message

    __str__ = __repr__


def _right(text: str) -> Verdict:
    return Verdict(True, f"{RIGHT} Right. {text}".rstrip())


def _wrong(text: str) -> Verdict:
    return Verdict(False, f"{WRONG} Not yet. {text}".rstrip())


def _waiting(what: str) -> Verdict:
    return Verdict(None, f"{WAITING} Not answered yet ({what}): replace None in the cell above by your answer, run "
                         "that cell, then this one.")


def clean_token(token: Any) -> str:
    """A token as a reader writes it: no ``Ġ``/``▁``/``##`` markers, no surrounding spaces, lower case."""
    text = str(token).replace("\u0120", " ").replace("\u2581", " ")
    if text.startswith("##"):
        text = text[2:]
    return text.strip().lower()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- generic checks
def check_number(answer: Any, expected: float, *, name: str = "answer", rtol: float = 1e-3, atol: float = 1e-6,
                 hint: str = "", why: str = "") -> Verdict:
    """Is ``answer`` a number within ``atol + rtol * |expected|`` of ``expected``?

    ``hint``: what to try when it is not; ``why``: what a right answer shows (printed after "Right.").
    """
    if answer is None:
        return _waiting(name)
    if not _is_number(answer) and not (isinstance(answer, np.ndarray) and answer.size == 1):
        return _wrong(f"{name} should be one number, not {type(answer).__name__} {answer!r}. {hint}")
    value, expected = float(np.asarray(answer).ravel()[0]), float(expected)
    if not np.isfinite(value):
        return _wrong(f"{name} is {value}. {hint}")
    if abs(value - expected) <= atol + rtol * abs(expected):
        return _right(f"{name} = {value:.6g}. {why}")
    return _wrong(f"{name} = {value:.6g} is off by {value - expected:+.3g}. {hint}")


def check_choice(answer: Any, correct: str, options: Mapping[str, str]) -> Verdict:
    """A multiple-choice answer: ``options`` maps each letter to the feedback for picking it;
    ``correct`` is the right letter. Case and spaces do not matter."""
    if answer is None:
        return _waiting("one of " + ", ".join(repr(k) for k in options))
    pick = str(answer).strip().lower()
    keys = {k.lower(): k for k in options}
    if pick not in keys:
        return _wrong(f"{answer!r} is not one of the options {sorted(options)}.")
    feedback = options[keys[pick]]
    return _right(feedback) if pick == correct.lower() else _wrong(feedback)


def check_token(answer: Any, expected: str, *, name: str = "answer", tokens: Sequence[str] | None = None,
                hint: str = "", why: str = "") -> Verdict:
    """Is ``answer`` the token ``expected`` (markers, case and spaces ignored)? ``tokens``: the sentence's
    tokens, to tell a typo from a wrong token."""
    if answer is None:
        return _waiting(name)
    if clean_token(answer) == clean_token(expected):
        return _right(f"{name} is {clean_token(expected)!r}. {why}")
    if tokens is not None and clean_token(answer) not in {clean_token(t) for t in tokens}:
        return _wrong(f"{answer!r} is not a token of this text: {[clean_token(t) for t in tokens]}.")
    return _wrong(f"{answer!r} is a token of the text, but not the one asked for. {hint}")


def check_set(answer: Any, expected: Iterable[Any], *, name: str = "answer", hint: str = "", why: str = "") -> Verdict:
    """Is ``answer`` (any iterable of strings or numbers) the set ``expected``? Says what is missing and extra."""
    if answer is None:
        return _waiting(name)
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable):
        return _wrong(f"{name} should be a list or set, not {answer!r}.")
    got, want = {str(a).strip() for a in answer}, {str(e).strip() for e in expected}
    if got == want:
        return _right(f"{name} = {sorted(want)}. {why}")
    missing, extra = sorted(want - got), sorted(got - want)
    parts = ([f"missing {missing}"] if missing else []) + ([f"not in it: {extra}"] if extra else [])
    return _wrong(f"{name}: {'; '.join(parts)}. {hint}")


# ---------------------------------------------------------------------------- notebook checks
def top_token(tokens: Sequence[str], scores: Any) -> str:
    """The token with the largest score (the first one on a tie). ``scores``: (n,) numbers."""
    return str(tokens[int(np.argmax(np.asarray(scores, dtype=float)))])


def check_top_token(answer: Any, tokens: Sequence[str], scores: Any, *, method: str = "the method") -> Verdict:
    """Is ``answer`` the token that ``scores`` (n,) rank first? The check, not the student, computes it."""
    return check_token(answer, top_token(tokens, scores), name=f"{method}'s top token", tokens=tokens,
                       hint="Sort the scores: `result.table()` or `np.argmax(result.scores)`.")


def check_prediction(prediction: Any, tokens: Sequence[str], scores: Any, *, method: str = "GAF") -> Verdict:
    """A prediction made *before* running a method, against its top token. A miss is not a failure of the
    student: the verdict says what the method ranked first and asks why it differs from the guess."""
    actual = top_token(tokens, scores)
    if prediction is None:
        return _waiting("prediction (a token of the text)")
    if clean_token(prediction) not in {clean_token(t) for t in tokens}:
        return _wrong(f"{prediction!r} is not a token of this text: {[clean_token(t) for t in tokens]}.")
    if clean_token(prediction) == clean_token(actual):
        return _right(f"{method} ranks {clean_token(actual)!r} first, as you predicted.")
    return _wrong(f"you predicted {clean_token(prediction)!r}; {method} ranks {clean_token(actual)!r} first. "
                  f"What does {method} measure that your intuition did not?")


def check_ranks(answer: Any, scores: Any) -> Verdict:
    """Ranks of a table: ``answer`` and ``scores`` are (n, m) (DataFrames or arrays) and rank 1 must be the
    largest score of each column; ties may share or split a rank, but a larger score never gets a larger rank."""
    if answer is None:
        return _waiting("ranks")
    ranks, values = np.asarray(answer, dtype=float), np.asarray(scores, dtype=float)
    if ranks.shape != values.shape:
        return _wrong(f"ranks have shape {ranks.shape}, the table has {values.shape}: rank every cell.")
    for j in range(values.shape[1]):
        col, r = values[:, j], ranks[:, j]
        if np.nanmin(r) != 1:
            return _wrong(f"column {j}: the best rank should be 1, got {np.nanmin(r):g}. Rank from the top: "
                          "`table.rank(ascending=False)`.")
        bigger = col[:, None] > col[None, :]
        if np.any(bigger & (r[:, None] >= r[None, :])):
            return _wrong(f"column {j}: a larger score got a rank that is not smaller. Did you rank ascending? "
                          "Rank 1 is the largest score.")
    return _right("Ranks make the order visible even where the scores differ only in the third decimal.")


def check_top_share(answer: Any, scores: Any, total: float, k: int = 3) -> Verdict:
    """The share of ``total`` carried by the ``k`` largest of ``scores`` (n,): a fraction in [0, 1]."""
    values = np.sort(np.asarray(scores, dtype=float))[::-1]
    expected = float(values[:k].sum() / total)
    if _is_number(answer) and abs(float(answer) - 100 * expected) <= 0.5:
        return _wrong(f"{float(answer):.4g} looks like a percentage; give a fraction (0.5 = half).")
    return check_number(answer, expected, name=f"top-{k} share", rtol=1e-2, atol=1e-4,
                        hint=f"Sort the scores, add the {k} largest, divide by the total.",
                        why=f"{k} of {len(values)} tokens carry {expected:.0%} of it.")


def check_count(answer: Any, flags: Any, *, name: str = "count", hint: str = "") -> Verdict:
    """Is ``answer`` the number of True values in ``flags`` (a boolean column or array)?"""
    return check_number(answer, int(np.sum(np.asarray(flags, dtype=bool))), name=name, rtol=0.0, atol=0.0, hint=hint)


def check_completeness(f_baseline: Any, f_x: float, f_baseline_measured: float, attribution_sum: float) -> Verdict:
    """IG completeness, checked by the student: ``f_baseline`` is their F(baseline) (the target logit with
    every non-special token replaced by the baseline token); the verdict prints F(x) − F(baseline), the
    attribution sum and the completeness error."""
    name = "F(baseline)"
    if f_baseline is None:
        return _waiting(name)
    if not _is_number(f_baseline):
        return _wrong(f"{name} should be one number (a float), not {f_baseline!r}.")
    value = float(f_baseline)
    if abs(value - f_baseline_measured) <= 1e-3 * max(1.0, abs(f_baseline_measured)):
        change = f_x - value
        error = attribution_sum - change
        return _right(f"F(x) = {f_x:.4f}, F(baseline) = {value:.4f}, F(x) − F(baseline) = {change:.4f}; the IG scores "
                      f"sum to {attribution_sum:.4f}: completeness error {error:+.2g} "
                      f"({abs(error) / max(abs(change), 1e-12):.2%} of the change).")
    if abs(value - f_x) <= 1e-3 * max(1.0, abs(f_x)):
        return _wrong(f"{value:.4f} is F(x), the score of the text itself. Replace the words by the baseline token.")
    return _wrong(f"{value:.4f} is not F(baseline). Keep the special tokens ([CLS], [SEP]), replace every other "
                  "input id by the baseline token's id, and read the target class's logit (not a probability).")


def check_chance_corrected(answer: Any, observed: float, chance: float) -> Verdict:
    """The chance-corrected agreement (observed − chance) / (1 − chance), computed by the student."""
    expected = (observed - chance) / (1.0 - chance)
    return check_number(answer, expected, name="chance-corrected value", rtol=1e-2, atol=1e-3,
                        hint=f"(observed − chance) / (1 − chance) with observed {observed:g} and chance {chance:.4g}.",
                        why=f"The denominator 1 − chance = {1 - chance:.3g}: the closer chance is to 1, the more a small "
                            "shortfall below chance is magnified.")


def head_names(flat: Iterable[int], n_heads: int) -> list[str]:
    """Flat head indices (layer * n_heads + head) as "layer.head" strings."""
    return [f"{int(i) // n_heads}.{int(i) % n_heads}" for i in flat]


def check_overlap(answer: Any, found: Iterable[str], truth: Iterable[str]) -> Verdict:
    """How many heads of ``found`` are in ``truth`` ("layer.head" strings): ``answer`` is that count."""
    hits = sorted(set(map(str, found)) & set(map(str, truth)))
    return check_number(answer, len(hits), name="heads in the truth", atol=0.0, rtol=0.0,
                        hint="Intersect the two sets of 'layer.head' names and count.",
                        why=f"Found in the truth: {hits}.")


# ---------------------------------------------------------------------------- the instructor's kit
def versions(packages: Sequence[str] = ("xattr-lab", "torch", "transformers", "numpy", "pandas", "bokeh",
                                         "jupyterlab", "ipywidgets", "jupyter_bokeh")) -> dict[str, str]:
    """Installed versions of ``packages`` (and Python); "missing" for one that is not installed."""
    found = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def memory_gb() -> float:
    """This process's resident memory now in GB (Linux ``/proc``; elsewhere its peak from ``getrusage``)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
        return peak / (1e9 if sys.platform == "darwin" else 1e6)


def memory_advice(used_gb: float, kernels: int = 1) -> str:
    """What a student should do with ``used_gb`` in this kernel and ``kernels`` notebooks open."""
    low, high = KERNEL_MEMORY_GB
    text = (f"This kernel uses {used_gb:.2f} GB (a workshop kernel needs about {low:g}–{high:g} GB). ")
    if used_gb > 2 * high or kernels > 1:
        text += ("Close the other notebooks' kernels (Kernel > Shut Down Kernel) and restart this one "
                 "(Kernel > Restart Kernel), then run the notebook from the top.")
    else:
        text += "That is fine. Before opening the next notebook, shut this kernel down (Kernel > Shut Down Kernel)."
    return text
