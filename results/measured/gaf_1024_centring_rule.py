import sys, time
sys.path.insert(0, "/work/main")
import torch
from xattr_lab.graphs import barrier
from xattr_lab.graphs.laplacian import newton_direction
torch.set_num_threads(2)
d = torch.load("/tmp/stage1024.pt", weights_only=False)
P, state, mu = d["P"], d["state"], d["mu"]
c0 = time.process_time(); freeze = False; k = 0
while k < 40:
    step, dec, (nu, nus) = newton_direction(P, state, mu, freeze=freeze)
    if not freeze and dec >= 0.25 and barrier._directional(state, step, 0.0, mu)[0] >= 0:
        freeze = True
        print(f"step {k}: ascent direction at dec={dec:.4g}: freeze", flush=True)
        continue
    print(f"step {k}: dec={dec:.4g} freeze={freeze} cpu={time.process_time()-c0:.0f}", flush=True)
    if dec <= 1e-9:
        break
    t = 1.0 if dec < 0.25 else barrier._line_search(P, state, step, mu, dec)
    state = barrier._take(state, step, t); k += 1
value = float(state[3][0]); upper = barrier._certificate(P, nu, nus)
print(f"value={value * P.scale:.12g} upper={upper * P.scale:.12g} rel_gap={(upper - value) / value:.3g} cpu={time.process_time()-c0:.0f}", flush=True)
