"""Locks across processes and clean-up that an interrupt cannot cut short.

- :class:`FileLock`: an exclusive lock on a file, held by one process (or one open handle) at a
  time: two kernels building the same zoo model take turns (:func:`xattr_lab.core.cache.cached`).
- :func:`complete`: run an idempotent clean-up to the end even when ``KeyboardInterrupt`` lands
  inside it, then raise the interrupt (docs/ARCHITECTURE.md, section "Core").
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Callable

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class FileLock:
    """``with FileLock(path):`` — an exclusive, blocking lock on ``path`` (created if missing).

    The operating system releases it when the process dies, so a killed build never leaves it
    held. Waiting can be interrupted with Ctrl-C.
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        self._handle = None

    def __enter__(self) -> "FileLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows: lock the first byte, retrying until it is free
                while True:
                    try:
                        handle.seek(0)
                        msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                        break
                    except OSError:
                        continue
        except BaseException:
            handle.close()
            raise
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            else:  # pragma: no cover
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        finally:
            handle.close()


def complete(cleanup: Callable[[], None], attempts: int = 100) -> None:
    """Call ``cleanup()`` until one call finishes, then re-raise a ``KeyboardInterrupt`` it met.

    ``cleanup`` must be idempotent (each step safe to repeat): an interrupt that lands inside it
    (Ctrl-C while modes are being put back) restarts it instead of leaving it half done. In the
    main thread, Ctrl-C is also held back while it runs and delivered when it is done.
    """
    interrupted: list[BaseException] = []
    for _ in range(attempts):
        try:
            with _SigintDeferred(interrupted):
                cleanup()
            break
        except KeyboardInterrupt as error:
            interrupted.append(error)
    if interrupted:
        raise interrupted[0]


def _record_sigint(signum, frame) -> None:
    _held.append(KeyboardInterrupt())


_held: list[BaseException] = []


class _SigintDeferred:
    """Hold back SIGINT in the main thread while the block runs; it is raised after the block.

    Only Python's default handler is replaced (custom handlers run as usual); a recorder left
    installed by an interrupted exit is replaced by the default again on the next exit.
    """

    def __init__(self, interrupted: list):
        self.interrupted = interrupted
        self.installed = False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _record_sigint):
                    signal.signal(signal.SIGINT, _record_sigint)
                    self.installed = True
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters without signals
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.installed = False
            self.interrupted.extend(_held)
            _held.clear()
