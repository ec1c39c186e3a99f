import sys, time, math
sys.path.insert(0, "/work/main")
import torch
from xattr_lab.graphs import barrier
from xattr_lab.graphs.laplacian import newton_direction
torch.set_num_threads(2)
d = torch.load("/tmp/stage1024.pt", weights_only=False)
P, state, mu = d["P"], d["state"], d["mu"]
for k in range(int(sys.argv[1])):
    c = time.process_time()
    step, dec, pot = newton_direction(P, state, mu)
    d1, d2 = barrier._directional(state, step, 0.0, mu)
    ms = barrier._max_step(state, step)
    t = 1.0 if dec < 0.25 else barrier._line_search(P, state, step, mu, dec)
    # which edge limits the step
    worst = []
    for g, ((f, s), dd) in enumerate(zip(state, step)):
        a = float((-dd / f).max()); b = float((dd / s).max())
        worst.append((round(a, 3), round(b, 3)))
    print(f"step {k}: dec={dec:.4g} psi0={d1:.3e} slope0={-mu*dec*dec:.3e} max_step={ms:.3e} t={t:.3e} sigma_src={int(P.sigma.sum())} worst={worst} cpu={time.process_time()-c:.1f}", flush=True)
    state = barrier._take(state, step, t)
