"""Peak RSS per phase at n tokens on smollm2-135m (issue 33): the plain (eager) forward pass that scores the text,
and one checkpointed lean forward+backward row; VmHWM is reset through /proc/self/clear_refs before each phase, so
"call" = peak - resident before the phase. The first phase also pages the weights in (~0.5 GiB).

    XATTR_LAB_MEMORY_LIMIT=1G .venv/bin/python scripts/peak_memory_phases.py 1024 plain,ckpt

Phases: plain (no grad, eager, every position's logits), ckpt (SDPA, each block checkpointed), lean (SDPA, not
checkpointed; needs a limit it fits). Printed output: results/measured/peak_memory_1024_checkpointed_row.log.
"""
import os, re, sys, time, resource
import torch
torch.set_num_threads(2)
import xattr_lab as xa
from xattr_lab.core import budget, batching
from xattr_lab.methods import integration as I

def rss():
    s = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\s+(\d+)", s).group(1)) / 2**20, int(re.search(r"VmHWM:\s+(\d+)", s).group(1)) / 2**20

def reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

n = int(sys.argv[1]); phases = sys.argv[2].split(",")
ex = xa.load("smollm2-135m", device="cpu")
text = " ".join(["word"] * (n - 1))
sh = budget.shape_of(ex)
with ex.restored():
    enc = ex.encode(text)
    print("n", enc.n, flush=True)
    x = ex.embed(enc.input_ids).detach().float()
    import gc
    for ph in phases:
        gc.collect(); reset(); base = rss()[0]; t = time.time()
        if ph == "plain":
            with torch.no_grad():
                out = ex.forward(inputs_embeds=x, attention_mask=enc.attention_mask)
                f = out.logits[0, -1, 0].item()
            del out
            est = budget.forward_bytes(sh, enc.n, grad=False)
        else:
            ckpt = ph == "ckpt"
            class P: pass
            emb = x.clone().requires_grad_(True)
            ex.checkpointing = ckpt
            with torch.enable_grad(), batching.attention(ex.model, "sdpa"), (batching.checkpointed(ex.model) if ckpt else __import__("contextlib").nullcontext()):
                logits = ex.model(inputs_embeds=emb, attention_mask=enc.attention_mask, use_cache=False, logits_to_keep=1).logits
                (g,) = torch.autograd.grad(logits[0, -1, 0], emb)
            del logits, g
            est = budget.forward_bytes(sh, enc.n, grad=True, logit_positions=1, lean=True, checkpoint=ckpt)
        peak = rss()[1]
        print(f"{ph} n={enc.n} base {base:.3f} GiB peak {peak:.3f} GiB call {peak-base:.3f} GiB estimate {est/2**30:.3f} GiB wall {time.time()-t:.1f}s", flush=True)
