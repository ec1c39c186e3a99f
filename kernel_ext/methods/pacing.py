"""Time estimate, progress bar and time cap of one IG or SIG run (docs/ARCHITECTURE.md, section "Gradients").

A :class:`Pace` counts the gradient rows (one forward + backward of one interpolant) as the
chunks finish (``run_chunked(..., bar=pace)`` calls :meth:`Pace.update`), measures seconds per
row, and from it estimates the time left of the rows planned so far (``steps="auto"`` plans a
round at a time, so the estimate grows with the rounds).

- Progress bar: ``progress=None`` (default) shows one once the run is estimated to take more than
  ``PROGRESS_MIN_SECONDS`` in all; True always; False never. Its postfix is the estimate.
- Time cap ``max_seconds``: a refinement round that would end past the cap is not started, and
  one under way when the cap passes is dropped (:class:`OutOfTime` from :meth:`update`); the
  result is the last complete quadrature, with ``options["stopped"] = "max_seconds"``, not
  converged, and a warning. The first pass always completes: it is the least result there is.
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from ..errors import InputError

#: show a progress bar by default when a run is estimated to take longer than this (seconds)
PROGRESS_MIN_SECONDS = 5.0


T = TypeVar("T")


class OutOfTime(Exception):
    """Raised inside a refinement round when ``max_seconds`` has passed (caught by the caller)."""


def check_max_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"max_seconds must be a positive number of seconds or None, not {value!r}")
    return float(value)


class Pace:
    """Rows done and planned, seconds per row, the bar and the cap of one run."""

    def __init__(self, desc: str, progress: Any = None, max_seconds: float | None = None) -> None:
        self.desc, self.progress, self.max_seconds = desc, progress, check_max_seconds(max_seconds)
        self.started = time.perf_counter()
        self.done = self.planned = 0
        self.stoppable = False  # True inside a refinement round (the first pass always completes)
        self.bar = None

    # -------------------------------------------------------------- estimates
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def seconds_per_row(self) -> float | None:
        return self.elapsed() / self.done if self.done else None

    def seconds_left(self) -> float | None:
        rate = self.seconds_per_row()
        return None if rate is None else rate * max(self.planned - self.done, 0)

    def fits(self, rows: int) -> bool:
        """Whether ``rows`` more rows are expected to finish within ``max_seconds``."""
        rate = self.seconds_per_row()
        return self.max_seconds is None or rate is None or self.elapsed() + rate * rows <= self.max_seconds

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.elapsed() > self.max_seconds

    def begin_round(self, rows: int, refining: bool) -> bool:
        """Start a quadrature round of ``rows`` gradient rows; False (nothing planned) when it is a refinement
        round (``refining``: the first pass always runs) and ``max_seconds`` is spent or would be overrun."""
        if refining and (self.out_of_time() or not self.fits(rows)):
            return False
        self.plan(rows)
        self.stoppable = refining
        return True

    # -------------------------------------------------------------- the bar protocol (run_chunked)
    def plan(self, rows: int) -> None:
        """``rows`` more gradient rows are about to run."""
        self.planned += int(rows)
        if self.bar is not None:
            self.bar.total = self.planned
            self.bar.refresh()

    def update(self, rows: int) -> None:
        self.done += int(rows)
        left = self.seconds_left() or 0.0
        if self.bar is None and self.progress is not False and (
                self.progress or self.elapsed() + left > PROGRESS_MIN_SECONDS):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=max(self.planned, self.done), initial=self.done, desc=self.desc, unit="row",
                            leave=False)
        if self.bar is not None:
            if self.bar.n < self.done:
                self.bar.update(int(rows))
            self.bar.set_postfix_str(f"about {left:.0f} s left of {self.planned} rows planned", refresh=False)
        if self.stoppable and self.out_of_time():
            raise OutOfTime

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Pace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def timed_round(pace: Pace | None, rows: int, refining: bool, compute: Callable[[], T]) -> tuple[bool, T | None]:
    """Run one quadrature round of ``rows`` gradient rows under ``pace``'s time cap -> (ran, compute()'s value).

    (False, None) when the round is not started (a refinement round, ``refining``, that ``max_seconds`` has no
    room for: :meth:`Pace.begin_round`) or is dropped (:class:`OutOfTime` raised by ``compute`` while the cap
    passed); else (True, value). The first pass (``refining`` False) always runs. Without ``pace`` the round
    simply runs. The round is stoppable only while ``compute`` runs.
    """
    if pace is not None and not pace.begin_round(rows, refining=refining):
        return False, None
    try:
        return True, compute()
    except OutOfTime:
        return False, None
    finally:
        if pace is not None:
            pace.stoppable = False
