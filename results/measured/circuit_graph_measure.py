"""Saved size and build time of the circuit graph for a smollm2-135m-sized patching circuit (30 x 9 heads, 32 prompts)."""
import json, time
import numpy as np
from xattr_lab.results import PatchingCircuitResult
from xattr_lab.payload import to_payload
from xattr_lab.widgets.select import view_for

L, H, P = 30, 9, 32
rng = np.random.default_rng(0)
flat = np.arange(L * H)
valid = (flat[:, None] // H) < np.append(flat // H, L)[None, :]
E = rng.normal(size=(L * H, L * H + 1)) * valid
order = np.argsort(-np.abs(E).ravel())[:200]
pe = {f"{i // (L * H + 1)}->{i % (L * H + 1)}": rng.normal(size=P).tolist() for i in order}
r = PatchingCircuitResult(node_scores=rng.normal(size=(L, H)), edge_scores=E, prompt_node_scores=rng.normal(size=(P, L, H)),
                          prompt_edge_scores=pe, n_layers=L, n_heads=H, method="eap-ig", positive=["x" * 60] * P,
                          negative=["y" * 60] * P, faithfulness={"unit": "edges", "sizes": [10, 50, 100, 400],
                          "faithfulness": [0.2, 0.5, 0.8, 0.9], "cpr": 0.6, "cmd": 0.3})
print(f"valid edges: {int(valid.sum())}")
for label, fn in (("to_payload", lambda: to_payload(r)),
                  ("view widget build", lambda: view_for(r).widget),
                  ("view set_size(400) after build", None)):
    if fn is None:
        v = view_for(r); v.widget
        c, t = time.process_time(), time.perf_counter(); v.set_size(400)
    else:
        c, t = time.process_time(), time.perf_counter(); out = fn()
    print(f"{label}: cpu {time.process_time() - c:.3f} s, wall {time.perf_counter() - t:.3f} s")
p = to_payload(r)
print(f"payload bytes (JSON): {len(json.dumps(p)):,}; edges stored {p['edges']['total'] - p['edges']['hidden']:,} of {p['edges']['total']:,} (hidden {p['edges']['hidden']:,})")
