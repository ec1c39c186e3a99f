"""Why attribution patching misses the toy's duplicate-token heads: every attention weight of the hand-built
toy is saturated (1.0), so the gradient through attention patterns, and with it the AtP / EAP / EAP-IG score of the
layer-0 heads, is exactly zero, while exact activation patching of the same heads moves the metric.

    python scripts/patching_toy_saturation.py

Prompts: the held-out prompts of run 0 of the SAE and patching tables (sample seed 100, pairs 10..41).
"""
import numpy as np
import torch

import xattr_lab as xa
from xattr_lab.evaluation import tasks
from xattr_lab.methods.attribution_patching import encode_pairs
from xattr_lab.core.capture import projection_inputs
from xattr_lab.methods.patching_faithfulness import patched_metric

torch.set_num_threads(1)  # a shared 2-core box
ex = xa.load("toy-induction", device="cpu")
t = tasks.induction_task(ex.tokenizer, n=42, seed=100)
pos, neg = t.positive[10:42], t.negative[10:42]


def metric(logits, idx):
    return t.metric(logits, idx + 10)


for m, kw in [("atp", {}), ("eap-ig", {"ig_steps": 5}), ("eap-ig", {"ig_steps": 50})]:
    r = ex.circuit(pos, neg, method=m, metric=metric, faithfulness=False, progress=False, **kw)
    print(m, kw, "node scores (L, H):", np.round(r.node_scores, 4).tolist())
ids, mask, bad = encode_pairs(ex, pos, neg)
zb = projection_inputs(ex, bad, mask)
idx = torch.arange(len(pos))
clean = patched_metric(ex, ids, mask, zb, np.ones((2, 4), bool), metric, idx).mean()
exact = np.zeros((2, 4))
for l in range(2):
    for h in range(4):
        keep = np.ones((2, 4), bool); keep[l, h] = False
        exact[l, h] = float(patched_metric(ex, ids, mask, zb, keep, metric, idx).mean() - clean)
print("exact activation patching (one head from the corrupted run, every position):", np.round(exact, 4).tolist())
with torch.no_grad():
    att = ex.forward(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
print("largest attention weight per layer/head, min over query rows:",
      [[round(float(a[:, h].max(-1).values.min()), 6) for h in range(4)] for a in att])
