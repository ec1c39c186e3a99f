"""Peak memory of one smollm2-135m attribution at a given length, as measured for the README.

    XATTR_LAB_MEMORY_LIMIT=8G /usr/bin/time -v .venv/bin/python scripts/peak_memory.py 4096 ig 2

Arguments: tokens, method (ig | sig | grad_x_input), optional fixed steps. Prints the load time, the budget
estimate (GiB), then wall and CPU seconds and the peak RSS (GiB) of the whole process. The text is "word"
repeated; SIG explains one position. Raw outputs of the README's runs: results/measured/peak_memory_*.log.
"""
import sys, time, resource, os
if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
    sys.exit(__doc__)
import xattr_lab as xa
from xattr_lab.core import budget
n = int(sys.argv[1]); method = sys.argv[2]
t = time.time()
ex = xa.load("smollm2-135m", device="cpu")
print("load", time.time() - t, "rss MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
text = " ".join(["word"] * (n - 1))
enc = ex.encode(text); print("n", enc.n)
sh = budget.shape_of(ex)
est = budget.method_estimate(sh, method, enc.n, ex.name, **budget.pass_options(ex), limit=budget.memory_limit()[0])
print("estimate", est.parts, est.total / 2**30, flush=True)
t = time.time(); c = time.process_time()
kw = {"steps": int(sys.argv[3])} if len(sys.argv) > 3 else {}
if method == "sig": kw["positions"] = [enc.n - 2]
r = ex.attribute(text, method=method, **kw)
print("wall", time.time() - t, "cpu", time.process_time() - c, "peak rss GB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, r.options.get("batch_size"), flush=True)
