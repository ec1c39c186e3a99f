"""Run smollm2 GAF at 1,024 tokens up to the first primal centring below mu=1e-10; save (P, state, mu)."""
import sys, time, pickle
sys.path.insert(0, "/work/main")
sys.path.insert(0, "/work/main/scripts")
import numpy as np, torch
import xattr_lab as xa
from xattr_lab.graphs import barrier
from xattr_lab.methods import flows as method_flows
from lengths_table import prose_tokens
ex = xa.load("smollm2-135m", device="cpu")
text = prose_tokens(ex, 1024)
c0 = time.process_time()
with barrier.cpu_threads(2, "cpu"):
    cap = ex.capture(ex.encode(text), None, attention_grads=True)
valid = method_flows._valid_positions(cap.encoding)
C = method_flows._capacities(ex, cap, "agf", valid)
src = method_flows._pick_sources(ex, cap.encoding, None, valid)
del cap
np.savez("/tmp/C1024.npz", C=C, src=np.asarray(src))
print("capacities", C.shape, "cpu", time.process_time() - c0, flush=True)
orig = barrier.newton_direction
class Grabbed(Exception):
    pass
def grab(P, state, mu, *a, **k):
    if mu < 1e-10:
        torch.save({"P": P, "state": state, "mu": mu}, "/tmp/stage1024.pt", pickle_protocol=4)
        raise Grabbed()
    return orig(P, state, mu, *a, **k)
barrier.newton_direction = grab
try:
    barrier.barrier_max_flow(C, None, src, threads=1)
except Grabbed:
    print("grabbed at cpu", time.process_time() - c0, flush=True)
