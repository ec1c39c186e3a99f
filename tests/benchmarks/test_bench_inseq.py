"""IG and SIG side by side with Inseq 0.7.1 on smollm2-135m: the same numbers, and the time ratio.

    .venv/bin/python -m pytest tests/benchmarks/test_bench_inseq.py -o addopts="" -q -s \
        --benchmark-disable-gc [--benchmark-json out.json]

Skipped when ``inseq`` is not installed (``pip install inseq==0.7.1``; it is not a dependency).

Same model object, prompts, baseline, target and quadrature for both: IOI prompts
(``ioi_prompts(tokenizer, n, seed=0).positive``, 14 tokens), the logit of the predicted next token
(Inseq: constrained decoding of that token with ``attributed_fn="logit"``), baseline = the
unknown token <|endoftext|> at every position (Inseq's baseline; ours is ``baseline="mask"``, which
falls back to it: SmolLM2 has no [MASK]), 50 Gauss-Legendre nodes (both Captum's nodes). Inseq's
per-token scores are its attributions summed over the embedding dimension (before its
normalisation), i.e. our ``raw``.

Printed per prompt: max |ours - Inseq| / max |Inseq|, both times, the ratio, and the relative
completeness error (ours reports it in ``options``; the same formula is applied to Inseq's
numbers). ``XATTR_BENCH_PROMPTS`` (default 2) prompts, ``XATTR_BENCH_STEPS`` (default 50) nodes,
``XATTR_BENCH_THREADS`` (default 1) torch threads.
"""
from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch

from xattr_lab import gradients as G
from xattr_lab.methods import integration as I
from xattr_lab.tasks import ioi_prompts

inseq = pytest.importorskip("inseq")

pytestmark = pytest.mark.slow

PROMPTS = int(os.environ.get("XATTR_BENCH_PROMPTS", "2"))
STEPS = int(os.environ.get("XATTR_BENCH_STEPS", "50"))
torch.set_num_threads(int(os.environ.get("XATTR_BENCH_THREADS", "1")))
INSEQ_METHODS = {"ig": "integrated_gradients", "sig": "sequential_integrated_gradients"}
OURS = {"ig": G.integrated_gradients, "sig": G.sequential_integrated_gradients}
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def setup(smollm):
    prompts = ioi_prompts(smollm.tokenizer, n=max(PROMPTS, 1), seed=0).positive[:PROMPTS]
    models = {name: inseq.load_model(smollm.model, method, tokenizer=smollm.tokenizer)
              for name, method in INSEQ_METHODS.items()}
    for name in models:  # warm both up once (first-call set-up is not what is compared)
        _inseq(models[name], smollm, prompts[0], 2)
        _ours(name, smollm, prompts[0], 2)
    return smollm, prompts, models


def _ours(name, ex, text, steps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence is reported in the table
        return OURS[name](ex, text, steps=steps, baseline="mask", progress=False)


def _inseq(model, ex, text, steps):
    """Inseq's per-token attributions (summed over the embedding) of the predicted next token's logit."""
    ids = ex.encode(text).input_ids[0].tolist()
    with torch.no_grad():
        next_id = int(ex.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    generated = ex.tokenizer.decode(ids + [next_id])
    assert ex.tokenizer(generated)["input_ids"] == ids + [next_id]  # the same tokens for both
    out = model.attribute(text, generated_texts=generated, n_steps=steps, attributed_fn="logit", show_progress=False)
    attributions = out.sequence_attributions[0].target_attributions  # (prefix + 1, 1, d)
    return attributions[: len(ids), 0].sum(-1).double().numpy()


@pytest.mark.parametrize("prompt", range(PROMPTS))
@pytest.mark.parametrize("name", ["ig", "sig"])
def test_bench_inseq(benchmark, setup, name, prompt):
    ex, prompts, models = setup
    text = prompts[prompt]
    started = time.perf_counter()
    theirs = _inseq(models[name], ex, text, STEPS)
    inseq_seconds = time.perf_counter() - started
    out = {}
    benchmark.pedantic(lambda: out.setdefault("a", _ours(name, ex, text, STEPS)), rounds=1, iterations=1)
    ours_seconds = benchmark.stats.stats.mean
    a = out["a"]
    o = a.options
    if name == "ig":
        theirs_error = float(I.relative_errors([theirs.sum()], [o["f_x"] - o["f_baseline"]], o["completeness_floor"])[0])
    else:
        change = o["f_x"] - np.array(o["f_without"])
        theirs_error = float(I.relative_errors(theirs, change, o["completeness_floor"]).max())
    difference = float(np.abs(a.raw - theirs).max() / np.abs(theirs).max())
    row = {"method": name, "prompt": prompt, "tokens": len(a.tokens), "steps": STEPS, "max_rel_difference": difference,
           "inseq_s": inseq_seconds, "ours_s": ours_seconds, "speedup": inseq_seconds / ours_seconds,
           "ours_error": o["relative_completeness_error"], "inseq_error": theirs_error, "converged": o["converged"]}
    benchmark.extra_info.update(row)
    RESULTS.append(row)
    print(f"\n{name} prompt {prompt} ({row['tokens']} tokens, {STEPS} nodes): |ours - inseq| / max|inseq| "
          f"{difference:.1e} | inseq {inseq_seconds:.1f} s, ours {ours_seconds:.1f} s, inseq/ours {row['speedup']:.2f}x | "
          f"rel. completeness error ours {row['ours_error']:.3g}, inseq {theirs_error:.3g} (converged: {o['converged']})")
    # the same numbers (float32 forward passes batched differently), and the same verdict on convergence
    assert difference < (1e-4 if name == "ig" else 1e-3)
    assert abs(theirs_error - row["ours_error"]) <= 0.02 * max(1.0, theirs_error)
    assert (theirs_error <= o["convergence_tol"]) == o["converged"]
