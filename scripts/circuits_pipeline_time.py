"""Time the whole IOI circuits pipeline on smollm2-135m, as a user runs it (issue 17's speed goal).

    python scripts/circuits_pipeline_time.py [THREADS] [paper|xattr]

Load the model, build 260 + 260 IOI prompts, read the path-patching truth (computed once per model and code
version, then cached: the first run also builds it, ≈ 2 min), train the SAE on 10 prompts per class and score the
next 250 per class. Prints wall and CPU seconds and the node ROC-AUC of this one run (one prompt sample, one seed).
"""
import sys
import time

t0, c0 = time.perf_counter(), time.process_time()
import torch  # noqa: E402

import xattr_lab as xa  # noqa: E402

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
recipe = sys.argv[2] if len(sys.argv) > 2 else "paper"
ex = xa.load("smollm2-135m")
ioi = xa.tasks.ioi_prompts(ex.tokenizer, n=260, seed=0)
truth = xa.circuits.ioi_truth(ex)
r = ex.circuit(ioi.positive, ioi.negative, examples=10, score_examples=250, recipe=recipe, truth=truth, seed=0,
               progress=False)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(f"recipe={recipe} threads={torch.get_num_threads()} wall={wall:.1f}s cpu={cpu:.1f}s "
      f"node_roc_auc={r.metrics.get('node_roc_auc'):.3f}")
