"""Solve one GAF capacity file (npz with C (L, n, n) and src) by barrier_max_flow on 1 CPU thread.

Prints wall and CPU seconds (time.process_time), Newton + primal-dual iterations, the primal-dual steps of the
first μ stage, the certified value and upper bound, and scipy's exact bracket (tests/gaf_length_cases.py).
``.venv/bin/python results/measured/gaf_first_stage_measure.py FILE.npz [--plain]``; --plain: no
centrality correctors, steps to 0.99 of the boundary (the solver before them)."""
import sys, time, resource
sys.path.insert(0, "tests")
import numpy as np
from xattr_lab.graphs import barrier_max_flow, primal_dual
from gaf_length_cases import max_flow_bracket
f = sys.argv[1]
if "--plain" in sys.argv[2:]:  # the Mehrotra steps as before the centrality correctors
    primal_dual.CORRECTORS, primal_dual.STEP_FRACTION = 0, 0.99
d = np.load(f); C, src = d["C"], d["src"].tolist()
first = {}
orig = primal_dual.PrimalDual.advance
def counted(self, mu, **kw):
    b = self.iterations
    r = orig(self, mu, **kw)
    first.setdefault("n", self.iterations - b)
    return r
primal_dual.PrimalDual.advance = counted
t0, c0 = time.time(), time.process_time()
sol = barrier_max_flow(C, None, src, threads=1)
w, c = time.time()-t0, time.process_time()-c0
lo, up = max_flow_bracket(C, src)
print(f, C.shape, "wall_s %.1f cpu_s %.1f" % (w, c), "iterations", sol.iterations, "primal_dual", sol.residuals["primal_dual_iterations"],
      "first_stage_pd", first.get("n"), "mu %.4g" % sol.mu, "value %.10g" % sol.value, "upper %.10g" % sol.upper_bound,
      "gap %.3g" % (sol.gap/sol.value), "scipy [%.10g, %.10g]" % (lo, up), "in_bracket", lo*(1-1e-6) <= sol.value <= up and sol.upper_bound >= lo,
      "maxrss_GB %.2f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6))
