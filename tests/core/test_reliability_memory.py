"""Issue #20: computations that would not fit in memory are refused before they run (or chunked).

Old code: a smollm2 input of 8,192 tokens built ~32 GB of flow arrays and the kernel died; IG/SIG at
4,096 tokens needed ~35 GB for one row's backward pass.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support import REPO_ROOT
from xattr_lab.core import budget
from xattr_lab.core.capture import head_outputs
from xattr_lab.errors import BudgetError, InputError

TEXT = " ".join(["word"] * 100)


class Forwards:
    """Counts forward passes of a model and their rows: started ones, or ``completed`` ones only
    (a hook, removed on exit)."""

    def __init__(self, model, completed: bool = False):
        self.model, self.completed, self.count, self.rows = model, completed, 0, []

    def __enter__(self):
        def hook(module, args, kwargs, *output):
            self.count += 1
            x = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
            self.rows.append(int(x.shape[0]))

        register = self.model.register_forward_hook if self.completed else self.model.register_forward_pre_hook
        self.handle = register(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_a_computation_over_the_limit_is_refused_before_any_forward(tiny, monkeypatch):
    ex = tiny("bert")
    monkeypatch.setenv(budget.ENV, "1M")
    with Forwards(ex.model) as forwards, pytest.raises(BudgetError) as info:
        ex.attribute(TEXT, method="gaf")
    message = str(info.value)
    assert forwards.count == 0
    assert message.startswith("gaf on tiny-bert at 102 tokens needs about ")
    assert "flow solver arrays" in message and f"over the limit of 1.0 MiB ({budget.ENV}=1M)" in message
    assert "use a shorter text (at most " in message and "tokens fit)" in message
    assert info.value.estimate > info.value.limit == 1 << 20 and "shorter text" in info.value.option
    fit = int(message.split("(at most ")[1].split(" tokens")[0])
    assert 0 < fit < 102 and budget.method_estimate(budget.shape_of(ex), "gaf", fit, limit=1 << 20).total <= 1 << 20
    short = " ".join(["word"] * (fit - 2))
    assert ex.attribute(short, method="gaf").scores.shape == (fit,)  # what it says fits, runs


def test_capture_refuses_and_head_outputs_chunk(tiny, monkeypatch):
    ex = tiny("bert")
    prompts = [f"prompt number {i} is here" for i in range(10)]
    full = head_outputs(ex, prompts, progress=False)
    shape = budget.shape_of(ex)
    per_row = budget.forward_bytes(shape, ex.encode(prompts[0]).n, 1, grad=False)
    monkeypatch.setenv(budget.ENV, str(int(3.5 * per_row)))  # three prompts per forward pass fit
    with Forwards(ex.model) as forwards:
        chunked = head_outputs(ex, prompts, progress=False)
    assert forwards.rows == [3, 3, 3, 1]
    torch.testing.assert_close(chunked, full)
    with pytest.raises(BudgetError, match="capturing attention on tiny-bert at 102 tokens"):
        ex.capture(TEXT, attention_grads=True)
    monkeypatch.setenv(budget.ENV, str(per_row // 4))
    with pytest.raises(BudgetError, match="use shorter prompts"):
        head_outputs(ex, prompts, progress=False)


def test_a_batch_too_big_for_memory_is_refused_by_the_forward_guard(tiny, monkeypatch):
    ex = tiny("bert")
    # four rows of 102 tokens fit (IG's passes are lean: SDPA, no attention maps)
    monkeypatch.setenv(budget.ENV, str(budget.forward_bytes(budget.shape_of(ex), 102, 4, grad=True, lean=True)))
    embeds = ex.embed(ex.encode(TEXT).input_ids).detach()
    with ex.restored(), torch.enable_grad():  # even a direct call of the model is guarded there
        with pytest.raises(BudgetError, match=r"a forward and backward pass over 64 row\(s\) of 102 tokens.*lower batch_size"):
            ex.model(inputs_embeds=embeds.expand(64, -1, -1).clone().requires_grad_(True))
    reference = ex.attribute(TEXT, method="ig", steps=8, batch_size=1).scores
    with Forwards(ex.model, completed=True) as forwards:
        try:  # the chunked caller halves a refused chunk (core/batching.run_chunked) or says what to lower
            scores = ex.attribute(TEXT, method="ig", steps=8, batch_size=8).scores
        except BudgetError as error:
            assert "lower batch_size" in str(error)
        else:
            np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-7)
    assert forwards.rows and max(forwards.rows) <= 4  # no pass over what fits ran


def test_the_sae_is_part_of_the_circuit_budget(tiny, monkeypatch):
    ex = tiny("bert")
    monkeypatch.setenv(budget.ENV, "64M")
    with pytest.raises(BudgetError, match=r"SAE weights and Adam state.*fewer SAE features \(features=\)"):
        ex.circuit(["a good film", "a great film"], ["a bad film", "a poor film"], features=1_000_000, epochs=1)


def test_limits():
    assert budget.parse_bytes("8G") == 8 << 30 and budget.parse_bytes("512 MiB") == 512 << 20
    assert budget.parse_bytes("2e9") == 2_000_000_000 and budget.parse_bytes("off") is None
    with pytest.raises(InputError, match="is not a size"):
        budget.parse_bytes("lots")
    assert budget.largest(lambda k: k * k <= 50, 100) == 7 and budget.largest(lambda k: False, 10) == 0


def test_the_limit_can_be_turned_off(tiny, monkeypatch):
    monkeypatch.setenv(budget.ENV, "off")
    assert budget.memory_limit() == (None, f"{budget.ENV}=off (off)")
    budget.check(budget.Estimate("anything", {"part": 1 << 60}))  # no limit: nothing refused


def test_estimates_grow_with_the_text_and_cover_the_parts():
    shape = budget.Shape(layers=30, heads=9, d_model=576, d_ff=1536, vocab=49152)  # smollm2-135m
    gaf = [budget.method_estimate(shape, "gaf", n).total for n in (256, 512, 1024)]
    assert gaf[0] < gaf[1] < gaf[2] and gaf[2] / gaf[1] > 3.5  # quadratic in n once the solver's arrays dominate
    # the capture is freed before the solver: the peak is one phase's, never the sum of both
    capture = sum(budget.capture_parts(shape, 1024, attention_grads=True).values())
    mapped = budget.method_estimate(shape, "gaf", 1024, limit=10 << 30)  # the retained heap would not fit 10 GiB
    assert mapped.total < capture + 39 * budget.Shape.flow_arrays(shape, 1024)
    ig = budget.method_estimate(shape, "ig", 4096)
    assert 30 << 30 < ig.total < 40 << 30  # eager: one row's backward pass: ~1.5 x 18 GiB of maps + activations
    lean = budget.method_estimate(shape, "ig", 4096, lean=True, checkpoint=True, limit=8 << 30)
    assert 6 << 30 < lean.total < 8 << 30 and "(SDPA)" in next(iter(lean.parts))  # #33: no maps, fits 8 GiB
    tight = budget.method_estimate(shape, "ig", 4096, lean=True, checkpoint=True, limit=4 << 30)
    assert tight.total < 4 << 30 and "checkpointed" not in str(lean.parts)  # checkpointed only when needed
    solver = f"flow solver arrays (~{budget.FLOW_SOLVER_ARRAYS} x L·n² float64)"
    assert budget.method_estimate(shape, "gaf", 8192, limit=8 << 30).parts[solver] == (
        budget.FLOW_SOLVER_ARRAYS * 8 * 30 * 8192 ** 2)


def test_the_flow_solver_retains_its_heap_only_where_that_fits():
    shape = budget.Shape(layers=30, heads=9, d_model=576, d_ff=1536, vocab=49152)  # smollm2-135m
    arrays = budget.Shape.flow_arrays(shape, 1024)
    retained = f"flow solver arrays (~{budget.FLOW_SOLVER_ARRAYS_RETAINED} x L·n² float64)"
    mapped = f"flow solver arrays (~{budget.FLOW_SOLVER_ARRAYS} x L·n² float64)"
    roomy, tight = (budget.FLOW_SOLVER_ARRAYS_RETAINED + 1) * arrays, (budget.FLOW_SOLVER_ARRAYS_RETAINED + 1) * arrays - 1
    assert budget.flow_heap_retained(shape, 1024, None) and budget.flow_heap_retained(shape, 1024, roomy)
    assert not budget.flow_heap_retained(shape, 1024, tight)
    assert retained in budget.method_estimate(shape, "gaf", 1024).parts  # no limit: the faster solve
    assert retained in budget.method_estimate(shape, "gaf", 1024, limit=roomy).parts
    estimate = budget.method_estimate(shape, "gaf", 1024, limit=tight)
    assert mapped in estimate.parts and estimate.total <= tight  # fits mapped: runs slower, not refused
    budget.check(estimate, limit=tight)


@pytest.mark.slow
def test_smollm2_gaf_at_8192_tokens_is_refused_and_ig_sig_at_4096_fit_8g(smollm, monkeypatch):
    text = " ".join(["word"] * 8192)
    with Forwards(smollm.model) as forwards:
        with pytest.raises(BudgetError, match=r"gaf on smollm2-135m at 8,192 tokens needs about 5[0-9]{2}\.[0-9] GiB"):
            smollm.attribute(text, method="gaf")
        monkeypatch.setenv(budget.ENV, "8G")
        with pytest.raises(BudgetError, match=r"attention on smollm2-135m at 4,096 tokens.*over the limit of 8.0 GiB"
                                              r".*\(at most [0-9,]+ tokens fit\)"):
            smollm.attribute(" ".join(["word"] * 4096), method="attention")
        for method in ("ig", "sig", "grad_x_input"):  # lean passes (SDPA, checkpointing) fit in 8 GiB
            budget.check_method(smollm, method, 4096)
    assert forwards.count == 0
    result = smollm.attribute(" ".join(["word"] * 64), method="ig", steps=4)  # within the limit: runs
    assert np.isfinite(result.scores).all()


# ---------------------------------------------------------------------------- long inputs, bounded memory
def _eager_only(monkeypatch):
    """Make every pass eager, as before lean passes existed (the reference)."""
    from xattr_lab.core.session import ModelSession

    monkeypatch.setattr(ModelSession, "lean_attention", property(lambda self: "eager"))


class AttentionCalls:
    """Records, for every attention module call: grad mode, the implementation in effect, whether
    it returned attention weights, and whether the session was checkpointing."""

    def __init__(self, ex):
        self.ex, self.calls = ex, []

    def __enter__(self):
        modules = [m for name, m in self.ex.model.named_modules() if name.endswith(("self_attn", "attention.self"))]
        assert modules

        def hook(module, args, output):
            self.calls.append((torch.is_grad_enabled(), self.ex.attention_implementation, output[1] is not None,
                               self.ex.checkpointing))

        self.handles = [m.register_forward_hook(hook) for m in modules]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def graded(self):
        return [call for call in self.calls if call[0]]


@pytest.mark.parametrize("method, options", [("ig", {"steps": 8, "batch_size": 4}), ("sig", {"steps": 4}),
                                             ("grad_x_input", {})])
def test_lean_passes_give_the_eager_gradients(tiny, monkeypatch, method, options):
    ex = tiny("llama")
    text = "the cat sat on the mat because the mat was warm and the cat was cold"
    with AttentionCalls(ex) as calls:
        lean = ex.attribute(text, method=method, **options)
    graded = calls.graded()
    assert graded and all(impl == "sdpa" and not weights for _, impl, weights, _ in graded)  # no maps built
    assert ex.attention_implementation == "eager"  # put back after the call
    _eager_only(monkeypatch)
    with AttentionCalls(ex) as calls:
        eager = ex.attribute(text, method=method, **options)
    assert all(impl == "eager" and weights for _, impl, weights, _ in calls.graded())
    np.testing.assert_allclose(lean.raw, eager.raw, rtol=1e-5, atol=1e-6 * np.abs(eager.raw).max())


def test_sdpa_gradient_equals_eager_on_the_model(tiny):
    from xattr_lab.core import batching

    ex = tiny("llama")
    x = torch.randn(2, 40, ex.adapter.d_model, generator=torch.Generator().manual_seed(0))
    grads = {}
    for impl in ("eager", "sdpa"):
        with ex.restored(), torch.enable_grad(), batching.attention(ex.model, impl):
            x_ = x.clone().requires_grad_(True)
            ex.model(inputs_embeds=x_, use_cache=False).logits[:, -1, :5].sum().backward()
            grads[impl] = x_.grad
    assert ex.attention_implementation == "eager"
    torch.testing.assert_close(grads["sdpa"], grads["eager"], rtol=1e-5, atol=1e-6)


def test_layers_are_checkpointed_when_that_is_what_fits(tiny, monkeypatch):
    from xattr_lab.core import batching

    ex = tiny("bert")  # two logits: the rows, not the logits, decide what fits
    text = " ".join(["word"] * 100)
    n, shape = ex.encode(text).n, budget.shape_of(ex)
    plain = ex.attribute(text, method="ig", steps=4, batch_size=1)
    whole = budget.forward_bytes(shape, n, grad=True, lean=True)
    kept = budget.forward_bytes(shape, n, grad=True, lean=True, checkpoint=True)
    assert kept < whole
    monkeypatch.setenv(budget.ENV, str((kept + whole) // 2))  # one row fits only checkpointed
    with AttentionCalls(ex) as calls:
        checkpointed = ex.attribute(text, method="ig", steps=4, batch_size="auto")
    graded, rows = calls.graded(), checkpointed.options["gradient_rows"]
    assert graded and all(impl == "sdpa" and not weights for _, impl, weights, _ in graded)
    # each layer ran twice per row: in the forward pass (checkpointing) and again in the backward pass
    assert sum(checkpointing for *_, checkpointing in graded) == ex.n_layers * rows
    assert len(graded) == 2 * ex.n_layers * rows
    assert checkpointed.options["batch_size"] == 1 and not ex.checkpointing
    np.testing.assert_allclose(checkpointed.raw, plain.raw, rtol=1e-5, atol=1e-7)
    blocks = batching.blocks(ex.model)
    assert len(blocks) == ex.n_layers and all("forward" not in vars(b) for b in blocks)  # the class's forward is back


def test_too_small_a_limit_refuses_naming_the_largest_length_that_fits(tiny, monkeypatch):
    ex = tiny("llama")
    shape = budget.shape_of(ex)
    lean = budget.pass_options(ex)  # lean, checkpointed, read at the last token (a causal LM)
    limit = budget.method_estimate(shape, "ig", 50, **lean, limit=10**12).total  # an IG at 50 tokens just fits
    monkeypatch.setenv(budget.ENV, str(limit))
    text = " ".join(["word"] * 100)
    with Forwards(ex.model) as forwards, pytest.raises(BudgetError) as info:
        ex.attribute(text, method="ig", steps=2)
    assert forwards.count == 0 and str(info.value).startswith(f"ig on tiny-llama at {ex.encode(text).n} tokens needs")
    fit = int(str(info.value).split("(at most ")[1].split(" tokens")[0])
    assert budget.method_estimate(shape, "ig", fit, **lean, limit=limit).total <= limit
    assert budget.method_estimate(shape, "ig", fit + 1, **lean, limit=limit).total > limit
    assert fit >= 50
    short = ex.tokenizer.decode(ex.encode(text).input_ids[0, :fit], skip_special_tokens=True)
    short_n = ex.encode(short).n
    assert short_n <= fit and np.isfinite(ex.attribute(short, method="ig", steps=2).raw).all()  # what fits runs
    # attention-based methods keep their maps: refused with the largest length that fits, as before
    monkeypatch.setenv(budget.ENV, str(budget.method_estimate(shape, "attention", 40).total))
    with pytest.raises(BudgetError, match=r"attention on tiny-llama at 100 tokens needs about .*\(at most 4\d tokens fit\)"):
        ex.attribute(text, method="attention")


_MEASURE = r'''
import ctypes, json, re, sys
import torch
import transformers as tf
import xattr_lab as xa
from xattr_lab.core import batching, budget

libc = ctypes.CDLL("libc.so.6")

def start():  # resident bytes now, after handing freed memory back, and a fresh high-water mark
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status("VmRSS")

def _status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

torch.manual_seed(0)
torch.set_num_threads(1)
base = xa.load("tiny-llama", device="cpu")
config = tf.LlamaConfig(vocab_size=base.config.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=4096,
                        tie_word_embeddings=False, attn_implementation="eager")
ex = xa.load(tf.LlamaForCausalLM(config).eval(), base.tokenizer, device="cpu")
n = int(sys.argv[1])
shape = budget.shape_of(ex)
out = {"maps": shape.attention(n)}
for name, checkpoint in (("lean", False), ("checkpointed", True)):
    with ex.restored(), torch.enable_grad():
        x = torch.randn(1, n, 64).requires_grad_(True)
        before = start()
        with batching.attention(ex.model, "sdpa"), (batching.checkpointed(ex.model) if checkpoint else torch.enable_grad()):
            logits = ex.model(inputs_embeds=x, logits_to_keep=1, use_cache=False).logits
            logits[0, -1, 0].backward()
        out[name] = [_status("VmHWM") - before,
                     budget.forward_bytes(shape, n, grad=True, lean=True, checkpoint=checkpoint, logit_positions=1)]
text = " ".join(["a"] * (n - 1))
for method, options in (("grad_x_input", {}), ("ig", {"steps": 2, "batch_size": 1})):
    m = ex.encode(text).n
    before = start()
    ex.attribute(text, method=method, **options)
    out[method] = [_status("VmHWM") - before,
                   budget.method_estimate(shape, method, m, lean=True, checkpoint=True, last_token=True, limit=1 << 40).total]
print(json.dumps(out))
'''


def test_the_estimates_bound_the_measured_peak_memory(tmp_path):
    """Peak resident memory of a tiny Llama's passes at 2,048 tokens (a fresh process; large blocks
    mmapped so that freed memory leaves the RSS) is under the estimates, and a lean pass keeps no
    attention maps (it stays well under one float32 copy of them)."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "measure.py"
    script.write_text(_MEASURE)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", XATTR_LAB_MEMORY_LIMIT="off")
    done = subprocess.run([sys.executable, str(script), "2048"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("lean", "checkpointed", "grad_x_input", "ig"):
        measured, estimate = out[name]
        assert 0 < measured <= estimate, (name, measured, estimate)
    assert out["lean"][0] < 0.5 * out["maps"]  # eager attention would keep >= 1.5 x the maps
    assert out["checkpointed"][1] < out["lean"][1]


def test_the_batch_size_comes_from_the_memory_budget(tiny, monkeypatch):
    from xattr_lab.core import batching

    ex, n = tiny("llama"), 100
    shape = budget.shape_of(ex)
    for rows in (1, 3, 7):  # exactly `rows` lean rows fit the limit
        monkeypatch.setenv(budget.ENV, str(budget.forward_bytes(shape, n, rows, grad=True, lean=True, logit_positions=1)))
        assert batching.auto_batch_size(ex, n) == rows
        eager = budget.forward_bytes(shape, n, rows, grad=True, logit_positions=None)
        monkeypatch.setenv(budget.ENV, str(eager))
        assert batching.auto_batch_size(ex, n, lean=False) == rows  # the eager rows (vision, encoder-decoders)
    monkeypatch.setenv(budget.ENV, "1K")
    assert batching.auto_batch_size(ex, n) == 1  # down to one row (checkpointed if need be)


def _lengths_script():
    import importlib.util
    from pathlib import Path

    path = REPO_ROOT / "scripts" / "lengths_table.py"
    spec = importlib.util.spec_from_file_location("lengths_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lengths_table_cuts_prose_exactly_and_resumes(tiny, tmp_path, monkeypatch):
    import json

    script = _lengths_script()
    ex = tiny("llama")
    for n in (20, 64, 101):
        text = script.prose_tokens(ex, n)
        assert ex.encode(text).n == n and "\n" not in text[-2:]
    assert script.prose(10).startswith("It is a truth universally acknowledged")
    out, cache = tmp_path / "table.json", tmp_path / "cells"
    args = ["--model", "tiny-llama", "--lengths", "24", "--methods", "attention,grad_x_input", "--cap", "300",
            "--out", str(out), "--cache", str(cache)]
    script.main(args)  # two fresh subprocesses
    cells = json.loads(out.read_text())["cells"]
    assert [(c["method"], c["tokens"], c["outcome"]) for c in cells] == [("attention", 24, "ok"), ("grad_x_input", 24, "ok")]
    assert all(c["peak_rss_gb"] > 0 and c["cpu_s"] >= 0 and c["commit"] and c["estimate_gb"] > 0 for c in cells)

    def no_runs(*a, **k):
        raise AssertionError("a cached cell ran again")

    monkeypatch.setattr(script, "spawn_cell", no_runs)
    script.main(args)  # resumed: every cell from the cache
    assert json.loads(out.read_text())["cells"] == cells
    monkeypatch.setenv(budget.ENV, "1K")
    refused = script.run_cell("tiny-llama", "attention", 24, {})  # the budget refuses before any forward pass
    assert refused["outcome"].startswith("refused: needs ") and refused["outcome"].endswith(" GB")


def test_lengths_table_cell_under_max_seconds_keeps_its_last_quadrature(tiny):
    script = _lengths_script()
    args = script.parse_args(["--max-seconds", "600"])
    assert script.cell_options(args, "ig") == script.cell_options(args, "sig") == {"max_seconds": 600.0}
    assert script.cell_options(args, "gaf") == {}
    tiny("llama")
    options = {"max_seconds": 1e-6}  # past before the first refinement round: the first pass is what is left
    with pytest.warns(RuntimeWarning, match="stopped by max_seconds"):
        cell = script.run_cell("tiny-llama", "ig", 24, options)
    assert cell["outcome"] == "ok" and cell["stopped"] == "max_seconds" and cell["converged"] is False
    assert cell["gradient_rows"] > 0 and cell["relative_completeness_error"] > 0
    text = script.outcome_text({**cell, "options": options})
    assert text == (f"not converged at max_seconds=0 ({100 * cell['relative_completeness_error']:.2g} %, "
                    f"{cell['gradient_rows']} rows)")
    assert script.outcome_text({**cell, "converged": True, "stopped": None, "options": {}}).startswith("converged (")
