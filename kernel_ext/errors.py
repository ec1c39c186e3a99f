"""The one error hierarchy of xattr-lab (docs/ARCHITECTURE.md, section "Errors").

Every request the package cannot serve raises a subclass of :class:`XattrError`, whose message
says what was wrong and how to fix it. ``XattrError`` stays a ``ValueError`` so code written
against the first releases (``except ValueError``) keeps working.
"""
from __future__ import annotations


class XattrError(ValueError):
    """A request xattr-lab cannot serve; the message says how to fix it."""


class ModelError(XattrError):
    """The model cannot be loaded or explained (unknown alias, unsupported architecture, no head)."""


class InputError(XattrError):
    """The input is unusable: empty or too long text, unknown target, bad option or array shape."""


class SolverError(XattrError, RuntimeError):
    """A numerical solver (the barrier max-flow) did not reach its stated accuracy."""


class BudgetError(XattrError):
    """A computation would exceed a memory or time budget; the message names the option that lowers it."""


class UsageError(XattrError):
    """Bad command-line or ``%xattr`` arguments: print the message and the usage, not a traceback."""


class ArgumentsError(UsageError):
    """argparse rejected the arguments: ``str()`` is its message (the same from both front ends)."""

    def __init__(self, message: str, prog: str = "", usage: str = ""):
        super().__init__(message)
        self.prog, self.usage = prog, usage


class HelpRequested(UsageError):
    """``-h`` (status 0) or no command at all (status 2): ``str()`` is the help text."""

    def __init__(self, text: str, status: int = 0):
        super().__init__(text)
        self.status = status


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a number where a text goes, ...); also a ``TypeError``."""


class BackendError(XattrError):
    """The backend cannot run the job: Ray is not installed, the cluster is unreachable, a shard keeps failing."""


class Cancelled(RuntimeError):
    """A streaming computation (SIG with a callback, generation attribution) was stopped by its callback."""


class InSampleWarning(UserWarning):
    """SAE circuit scores computed on the prompts the SAE was trained on (too few prompts to hold any out)."""


#: The flow solver's error under its first name (kept for user code that catches it).
FlowSolverError = SolverError

__all__ = ["XattrError", "ModelError", "InputError", "SolverError", "BudgetError", "UsageError", "FlowSolverError",
           "InputTypeError", "ArgumentsError", "HelpRequested", "BackendError", "Cancelled",
           "InSampleWarning"]
