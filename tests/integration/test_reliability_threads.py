"""Issue #20: one Explainer shared by threads (widget callbacks, the magic, user code).

Every verb, forward, capture and ``restored()`` block of one session is serialised by its lock;
results equal a serial run and no hook is left behind. Bounded loops only, no timing.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

TEXTS = ["a fine film", "a truly terrible and long movie about nothing", "ok then", "the best of the year by far"]


def hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def model_state(ex):
    return ([m.training for m in ex.model.modules()], [p.requires_grad for p in ex.model.parameters()],
            hooks(ex.model), torch.is_grad_enabled(), torch.get_num_threads())


def run_threads(target, count: int):
    errors: list[BaseException] = []

    def guarded(i):
        try:
            target(i)
        except BaseException as error:  # noqa: BLE001 - collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert not errors, errors


def _tasks(ex):
    pos, neg = ["a good film", "a great film"], ["a bad film", "a poor film"]
    return {
        "attention": lambda: ex.attribute(TEXTS[1], method="attention").scores,
        "rollout": lambda: ex.attribute(TEXTS[1], method="rollout").scores,
        "ig": lambda: ex.attribute(TEXTS[0], method="ig", steps=4).scores,
        "sig": lambda: ex.attribute(TEXTS[3], method="sig", steps=3).scores,
        "gaf": lambda: ex.attribute(TEXTS[2], method="gaf").scores,
        "heads": lambda: ex.heads(TEXTS[1]).entropy,
        "circuit": lambda: ex.circuit(pos, neg, epochs=15, features=8, examples=2, progress=False).node_scores,
        "capture": lambda: ex.capture(TEXTS[3], attention_grads=True, head_outputs=True).attention_grads.numpy(),
    }


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_eight_threads_of_mixed_methods_equal_a_serial_run(tiny, arch):
    """Old code: KeyError / "only 0 of 2 attention output projections ran" / stacked tensors of other texts."""
    ex = tiny(arch)
    tasks = _tasks(ex)
    serial = {name: np.asarray(task()) for name, task in tasks.items()}  # also warms transformers' own hooks up
    before = model_state(ex)
    names = sorted(tasks)
    results: dict[tuple[int, int], tuple[str, np.ndarray]] = {}

    def work(i):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            results[i, k] = (name, np.asarray(tasks[name]()))

    run_threads(work, 8)
    assert len(results) == 8 * len(names)
    for name, value in results.values():
        np.testing.assert_allclose(value, serial[name], rtol=1e-12, atol=1e-12, err_msg=name)
    assert model_state(ex) == before  # no hook left, modes and grad flags as they were


def test_restored_blocks_of_two_threads_see_only_their_own_hooks(tiny):
    """Old code: the second thread joined the first one's block (its hooks ran in the other's forwards,
    and were removed under it)."""
    ex = tiny("gpt2")
    enc = ex.encode("the cat sat on the mat")
    calls = {0: 0, 1: 0}
    barrier = threading.Barrier(2)

    def work(i):
        for _ in range(5):
            with ex.restored():
                ex.add_hook(ex.adapter.out_projections[0], lambda *a, i=i: calls.__setitem__(i, calls[i] + 1), pre=True)
                try:
                    barrier.wait(timeout=0.2)  # try to overlap the two blocks (the lock forbids it)
                except threading.BrokenBarrierError:
                    pass
                with torch.no_grad():
                    ex.forward(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
            barrier.reset()

    run_threads(work, 2)
    assert calls == {0: 5, 1: 5}  # each hook ran in its own thread's forwards only
    assert ex._state is None


def test_add_hook_outside_this_threads_block_is_refused(tiny):
    ex = tiny("bert")
    inside = threading.Event()
    release = threading.Event()
    refused = []

    def holder():
        with ex.restored():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert inside.wait(10)
    try:
        ex.add_hook(ex.model, lambda *a: None)
    except RuntimeError as error:
        refused.append(str(error))
    finally:
        release.set()
        thread.join(10)
    assert refused and "inside" in refused[0]


def test_concurrent_encode_forward_and_capture(tiny):
    """Fast tokenizers are not thread-safe ("Already borrowed") and captures stacked other texts' maps."""
    ex = tiny("bert")
    reference = {t: ex.capture(t, head_outputs=True) for t in TEXTS}

    def work(i):
        for k in range(12):
            text = TEXTS[(i + k) % len(TEXTS)]
            enc = ex.encode(text, truncate=True)
            assert enc.tokens == reference[text].tokens
            cap = ex.capture(text, head_outputs=k % 2 == 0)
            torch.testing.assert_close(cap.attentions, reference[text].attentions)

    run_threads(work, 8)
    assert ex._state is None


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_concurrent_encodes_and_forwards_without_hooks(tiny, arch):
    """Old code: a truncating encode changed the shared tokenizer's truncation under another thread's
    encode ("The expanded size of the tensor (302) must match the existing size (128)")."""
    ex = tiny(arch)
    texts = [" ".join(["long"] * 300), "a truly terrible and long movie about nothing", "ok then", "the best of the year"]

    def run(text):
        enc = ex.encode(text, truncate=True)
        with torch.no_grad():
            out = ex.forward(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_attentions=True,
                             output_hidden_states=True)
        return enc, out

    reference = {t: run(t)[1].logits for t in texts}

    def work(i):
        for k in range(40):
            text = texts[(i + k) % len(texts)]
            enc, out = run(text)
            assert len(out.attentions) == 2 and len(out.hidden_states) == 3
            torch.testing.assert_close(out.logits, reference[text])

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "text truncated to 128 tokens"
        run_threads(work, 8)
