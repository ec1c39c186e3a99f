"""Time a fresh clone's `make demo NO_BROWSER=1` until it prints the JupyterLab URL, then stop it by its PID.

    git clone <repo> /tmp/clone && python scripts/demo_time.py /tmp/clone demo.log [XATTR_LAB_CACHE]

Each output line is written to LOG with the seconds since start; the last line gives the wall time to
the URL and the CPU time (user + sys) of everything `make` ran and waited for (pip, npm, xattr), so a
run on a loaded machine can be read beside one on a quiet machine. A third argument points
XATTR_LAB_CACHE at that folder (empty: the demo classifier's one-time fine-tune is timed too).
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time


def main(clone: str, log: str, cache: str | None = None) -> int:
    env = dict(os.environ, XATTR_LAB_CACHE=cache) if cache else dict(os.environ)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    make = subprocess.Popen(["make", "demo", "NO_BROWSER=1"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    url_at = None
    with open(log, "w", encoding="utf-8") as out:
        for line in make.stdout:
            seconds = time.perf_counter() - start
            out.write(f"[{seconds:7.1f}s] {line}")
            out.flush()
            if "JupyterLab: http" in line:
                url_at = seconds
                break
    os.killpg(make.pid, signal.SIGTERM)  # the session started above: make, xattr lab and its server
    try:
        make.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    summary = (f"URL after {url_at:.1f} s wall" if url_at is not None else "no URL") + \
        f"; CPU (user+sys of the processes make waited for) {cpu:.1f} s; load average {os.getloadavg()}\n"
    with open(log, "a", encoding="utf-8") as out:
        out.write(summary)
    print(summary, end="")
    return 0 if url_at is not None else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
