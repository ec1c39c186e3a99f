"""Attribution patching circuits (issue 31): AtP, EAP, EAP-IG and their result class."""
from __future__ import annotations

import numpy as np
import pytest

import xattr_lab as xa
from xattr_lab.results import PatchingCircuitResult, Result


def _result(method: str = "eap") -> PatchingCircuitResult:
    L, H, P = 2, 3, 4
    rng = np.random.default_rng(0)
    edges = rng.normal(size=(L * H, L * H + 1)) if method != "atp" else np.zeros((0, 0))
    return PatchingCircuitResult(
        node_scores=rng.normal(size=(L, H)), edge_scores=edges, prompt_node_scores=rng.normal(size=(P, L, H)),
        prompt_edge_scores={"0->6": [1.0, 2.0, 3.0, 4.0]} if method != "atp" else {},
        faithfulness={"unit": "edges", "sizes": [1, 2], "faithfulness": [0.5, 0.9], "cpr": 0.7, "cmd": 0.2},
        n_layers=L, n_heads=H, method=method, metric="logit_difference", positive=["a"] * P, negative=["b"] * P,
        truth=[[1, 0, 0], [0, 1, 0]], metrics={"node_roc_auc": 0.9}, model="tiny", options={"ig_steps": 5})


@pytest.mark.parametrize("method", ["atp", "eap", "eap-ig"])
def test_patching_circuit_result_round_trips_through_json(method):
    result = _result(method)
    back = Result.from_json(result.to_json())
    assert type(back) is PatchingCircuitResult and back.kind == "patching-circuit"
    np.testing.assert_allclose(back.node_scores, result.node_scores)
    np.testing.assert_allclose(back.prompt_node_scores, result.prompt_node_scores)
    assert back.edge_scores.shape == result.edge_scores.shape
    np.testing.assert_allclose(back.edge_scores, result.edge_scores)
    assert back.prompt_edge_scores == result.prompt_edge_scores and back.faithfulness == result.faithfulness
    assert back.truth == result.truth and back.method == method and back.options == {"ig_steps": 5}
    assert xa.PatchingCircuitResult is PatchingCircuitResult


def test_patching_circuit_result_checks_its_shapes():
    with pytest.raises(ValueError, match="edge_scores"):
        PatchingCircuitResult(node_scores=np.zeros((2, 3)), edge_scores=np.zeros((6, 6)),
                              prompt_node_scores=np.zeros((1, 2, 3)), n_layers=2, n_heads=3)
    with pytest.raises(ValueError, match="node_scores"):
        PatchingCircuitResult(node_scores=np.zeros((3, 2)), edge_scores=np.zeros((0, 0)),
                              prompt_node_scores=np.zeros((1, 2, 3)), n_layers=2, n_heads=3)


def test_top_edges_names_heads_and_logits():
    result = _result("eap")
    result.edge_scores[:] = 0
    result.edge_scores[4, 6] = -5.0  # head 1.1 -> logits
    result.edge_scores[0, 4] = 2.0  # head 0.0 -> head 1.1
    assert result.top_edges(2) == [("1.1", "logits", -5.0), ("0.0", "1.1", 2.0)]


# ---------------------------------------------------------------------------- independent checks on tiny models
import torch  # noqa: E402

from xattr_lab.methods import patching_circuits as pc  # noqa: E402

PAIRS = (["When Mary and John went to the store, John gave a drink to",
          "When Tom and Anna went to the park, Tom gave a ball to",
          "After Kate and Paul went to the school, Paul gave a book to"],
         ["When Mary and John went to the store, Lisa gave a drink to",
          "When Tom and Anna went to the park, Mark gave a ball to",
          "After Kate and Paul went to the school, Emma gave a book to"])


@pytest.fixture(scope="module")
def llama():
    from xattr_lab.core import zoo

    model, tokenizer = zoo.tiny_model("llama", seed=3)
    return xa.load(model, tokenizer, device="cpu")


@pytest.fixture(scope="module")
def gpt2():
    from xattr_lab.core import zoo

    model, tokenizer = zoo.tiny_model("gpt2", seed=3)
    return xa.load(model, tokenizer, device="cpu")


@pytest.fixture(scope="module")
def toy():
    return xa.load("toy-induction", device="cpu")


def _ids(ex, texts):
    enc = ex.tokenizer(list(texts), return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def _last_logit_metric(a: int, b: int):
    def metric(logits, index):
        return logits[:, -1, a] - logits[:, -1, b]

    return metric


def _o_projs(model):
    return [m for name, m in model.named_modules() if name.endswith(("self_attn.o_proj", "attn.c_proj"))]


def _plain_atp(model, ids, mask, bad, metric, H):
    """AtP by hand: plain torch hooks on the output projections' inputs, autograd on the clean run."""
    projs = _o_projs(model)
    store: dict[int, torch.Tensor] = {}
    handles = [p.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0])) for i, p in enumerate(projs)]
    try:
        with torch.no_grad():
            model(input_ids=bad, attention_mask=mask)
        corrupt = {i: z.clone() for i, z in store.items()}
        with torch.enable_grad():
            value = metric(model(input_ids=ids, attention_mask=mask).logits, torch.arange(ids.shape[0])).sum()
            grads = torch.autograd.grad(value, [store[i] for i in range(len(projs))])
    finally:
        for h in handles:
            h.remove()
    B, n, HK = grads[0].shape
    return np.stack([((corrupt[i] - store[i].detach()) * grads[i]).reshape(B, n, H, HK // H).sum(dim=(1, 3)).numpy()
                     for i in range(len(projs))], axis=1)  # (B, L, H)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_atp_node_scores_equal_an_independent_hook_computation(arch, llama, gpt2):
    ex = {"llama": llama, "gpt2": gpt2}[arch]
    ids, mask = _ids(ex, PAIRS[0])
    bad, _ = _ids(ex, PAIRS[1])
    metric = _last_logit_metric(5, 7)
    result = ex.circuit(*PAIRS, method="atp", metric=metric, faithfulness=False, progress=False)
    expected = _plain_atp(ex.model, ids, mask, bad, metric, ex.n_heads)
    assert result.prompt_node_scores.shape == expected.shape
    np.testing.assert_allclose(result.prompt_node_scores, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(result.node_scores, expected.mean(axis=0), rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert np.abs(expected).max() > 0
    assert result.edge_scores.shape == (0, 0) and result.method == "atp"


def _exact_head_patching(ex, ids, mask, bad, metric):
    """Exact activation patching: each head's z from the corrupted run (every position), metric change (L, H)."""
    projs = _o_projs(ex.model)
    H = ex.n_heads
    store: dict[int, torch.Tensor] = {}
    handles = [p.register_forward_pre_hook(lambda m, a, i=i: store.__setitem__(i, a[0].clone())) for i, p in enumerate(projs)]
    with torch.no_grad():
        ex.model(input_ids=bad, attention_mask=mask)
        corrupt = dict(store)
        clean = metric(ex.model(input_ids=ids, attention_mask=mask).logits, None).mean()
    for h in handles:
        h.remove()
    k = corrupt[0].shape[-1] // H
    effects = np.zeros((len(projs), H))
    for layer, proj in enumerate(projs):
        for head in range(H):
            def patch(m, a, layer=layer, head=head):
                z = a[0].clone()
                z[..., head * k:(head + 1) * k] = corrupt[layer][..., head * k:(head + 1) * k]
                return (z,)
            handle = proj.register_forward_pre_hook(patch)
            with torch.no_grad():
                effects[layer, head] = float(metric(ex.model(input_ids=ids, attention_mask=mask).logits, None).mean() - clean)
            handle.remove()
    return effects


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_atp_top_heads_agree_with_exact_activation_patching(arch, llama, gpt2):
    from scipy.stats import spearmanr

    ex = {"llama": llama, "gpt2": gpt2}[arch]
    ids, mask = _ids(ex, PAIRS[0])
    bad, _ = _ids(ex, PAIRS[1])
    metric = _last_logit_metric(5, 7)
    atp = ex.circuit(*PAIRS, method="atp", metric=metric, faithfulness=False, progress=False).node_scores
    exact = _exact_head_patching(ex, ids, mask, bad, metric)
    rho = spearmanr(atp.ravel(), exact.ravel()).statistic
    assert rho >= 0.9, (rho, atp, exact)
    assert np.argmax(np.abs(atp)) == np.argmax(np.abs(exact))


def _z_delta(ex, ids, bad, mask, layer, head):
    """Sender (layer, head)'s output written to the residual, corrupt − clean: (B, n, d), by plain hooks."""
    proj = _o_projs(ex.model)[layer]
    store = {}
    handle = proj.register_forward_pre_hook(lambda m, a: store.__setitem__(len(store), a[0].clone()))
    with torch.no_grad():
        ex.model(input_ids=ids, attention_mask=mask)
        ex.model(input_ids=bad, attention_mask=mask)
    handle.remove()
    k = store[0].shape[-1] // ex.n_heads
    dz = (store[1] - store[0])[..., head * k:(head + 1) * k]
    W = proj.weight  # Linear (d, H*k); GPT-2 Conv1D (H*k, d)
    rows = W.t() if isinstance(proj, torch.nn.Linear) else W
    return dz @ rows[head * k:(head + 1) * k]


def _derivative(ex, ids, mask, metric, install) -> float:
    """d/dε of Σ_prompts metric at ε = 0, with ``install(eps)`` returning hook handles that add ε·(a perturbation)."""
    eps = torch.zeros((), requires_grad=True)
    handles = install(eps)
    try:
        with torch.enable_grad():
            value = metric(ex.model(input_ids=ids, attention_mask=mask).logits, torch.arange(ids.shape[0])).sum()
            return float(torch.autograd.grad(value, eps)[0])
    finally:
        for h in handles:
            h.remove()


def test_eap_edge_into_one_head_is_the_derivative_along_the_senders_output_gpt2(gpt2):
    """GPT-2 (fused c_attn, no grouped heads): edge (0.h -> 1.r) = d metric / dε when only head r's q, k and v
    read layer 1's residual plus ε·(sender's output change), everything else clean — built here by hand."""
    ex = gpt2
    ids, mask = _ids(ex, PAIRS[0])
    bad, _ = _ids(ex, PAIRS[1])
    metric = _last_logit_metric(5, 7)
    result = ex.circuit(*PAIRS, method="eap", metric=metric, faithfulness=False, progress=False)
    H, d = ex.n_heads, ex.adapter.d_model
    k = d // H
    block = ex.model.transformer.h[1]
    for sender, receiver in [(0, 2), (3, 1)]:
        delta = _z_delta(ex, ids, bad, mask, 0, sender)
        cols = torch.zeros(3 * d, dtype=torch.bool)
        for third in range(3):
            cols[third * d + receiver * k: third * d + (receiver + 1) * k] = True

        def install(eps, delta=delta, cols=cols):
            seen = {}
            ln, attn = block.ln_1, block.attn.c_attn

            def keep(m, a):
                seen["x"] = a[0]

            def swap(m, a, out):
                y = torch.nn.functional.layer_norm(seen["x"] + eps * delta, ln.normalized_shape, ln.weight, ln.bias,
                                                   ln.eps)
                return torch.where(cols, y @ attn.weight + attn.bias, out)

            return [ln.register_forward_pre_hook(keep), attn.register_forward_hook(swap)]

        expected = _derivative(ex, ids, mask, metric, install) / ids.shape[0]
        got = result.edge_scores[sender, H + receiver]
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-7), (sender, receiver)
    assert result.edge_scores[H:, :H].any() == False  # noqa: E712  (no edge from layer 1 back into layer 0)


def test_eap_edges_into_a_layer_sum_to_the_derivative_through_its_attention_llama(llama):
    """Llama with grouped KV heads (4 query heads, 2 KV heads; each query head gets half its KV head's k/v
    gradient): the edges from one sender into the heads of layer 1 sum to d metric / dε when layer 1's attention
    reads norm(x + ε·(sender's output change)) — exact whatever the split within a group."""
    ex = llama
    ids, mask = _ids(ex, PAIRS[0])
    bad, _ = _ids(ex, PAIRS[1])
    metric = _last_logit_metric(5, 7)
    result = ex.circuit(*PAIRS, method="eap", metric=metric, faithfulness=False, progress=False)
    H = ex.n_heads
    norm = ex.model.model.layers[1].input_layernorm
    for sender in range(H):
        delta = _z_delta(ex, ids, bad, mask, 0, sender)

        def install(eps, delta=delta):
            def swap(m, a, out):
                y = a[0] + eps * delta
                return m.weight * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))

            return [norm.register_forward_hook(swap)]

        expected = _derivative(ex, ids, mask, metric, install) / ids.shape[0]
        got = result.edge_scores[sender, H:2 * H].sum()
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-7), sender


def test_eap_ig_with_one_step_is_eap(llama):
    metric = _last_logit_metric(5, 7)
    eap = ex_eap = llama.circuit(*PAIRS, method="eap", metric=metric, faithfulness=False, progress=False)
    ig = llama.circuit(*PAIRS, method="eap-ig", ig_steps=1, metric=metric, faithfulness=False, progress=False)
    np.testing.assert_allclose(ig.edge_scores, eap.edge_scores, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ig.node_scores, ex_eap.node_scores, rtol=1e-6, atol=1e-9)
    five = llama.circuit(*PAIRS, method="eap-ig", metric=metric, faithfulness=False, progress=False)
    assert five.options["ig_steps"] == 5 and not np.allclose(five.edge_scores, eap.edge_scores)


@pytest.fixture(scope="module")
def toy_task(toy):
    from xattr_lab.evaluation import tasks

    return tasks.induction_task(toy.tokenizer, n=6, seed=3)


def test_toy_eap_node_scores_are_the_sums_of_their_edges(toy, toy_task):
    """Attention-only, no norm: a head's gradient is the sum of the later heads' input gradients and the logits',
    so each node score (AtP) equals the sum of its outgoing edges (EAP) exactly."""
    r = toy.circuit(toy_task.positive, toy_task.negative, method="eap", metric=toy_task.metric, faithfulness=False,
                    progress=False)
    sums = r.edge_scores.sum(axis=1).reshape(r.n_layers, r.n_heads)
    np.testing.assert_allclose(r.node_scores, sums, rtol=1e-5, atol=1e-6 * np.abs(r.node_scores).max())
    atp = toy.circuit(toy_task.positive, toy_task.negative, method="atp", metric=toy_task.metric, faithfulness=False,
                      progress=False)
    np.testing.assert_allclose(atp.node_scores, r.node_scores, rtol=1e-6, atol=1e-9)


def test_toy_eap_ig_edges_into_the_logits_are_complete_for_a_linear_metric(toy, toy_task):
    """Completeness, closed form: with no final norm and a metric linear in the final residual (a logit
    difference), Σ_senders edge(s -> logits) + the embeddings' direct term = metric(corrupt) − metric(clean),
    for any ig_steps (tolerance: float32 rounding, 1e-4 relative)."""
    ex = toy
    a, b = ex.tokenizer.convert_tokens_to_ids(["t3", "t9"])
    metric = _last_logit_metric(a, b)
    r = ex.circuit(toy_task.positive, toy_task.negative, method="eap-ig", ig_steps=7, metric=metric,
                   faithfulness=False, progress=False)
    ids, mask = _ids(ex, toy_task.positive)
    bad, _ = _ids(ex, toy_task.negative)
    with torch.no_grad():
        clean = metric(ex.model(input_ids=ids, attention_mask=mask).logits, None)
        corrupt = metric(ex.model(input_ids=bad, attention_mask=mask).logits, None)
        W = ex.model.lm_head.weight
        g = W[a] - W[b]
        emb = ex.model.embed_tokens
        direct = ((emb(bad) - emb(ids))[:, -1] @ g)
    heads = r.edge_scores[:, -1].sum()
    expected = float((corrupt - clean - direct).mean())
    assert abs(expected) > 1e-3
    assert heads == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------------------- API, magic and CLI
def test_default_metric_is_named_and_sae_stays_the_default(llama):
    r = llama.circuit(*PAIRS, method="eap", faithfulness=False, progress=False)
    assert r.metric == r.options["metric"] == "log_prob_of_clean_top_token"
    assert r.edge_scores.shape == (llama.n_layers * llama.n_heads, llama.n_layers * llama.n_heads + 1)
    assert np.all(r.edge_scores[llama.n_heads:, :llama.n_heads] == 0)  # no edge into an earlier layer
    assert len(r.prompt_edge_scores) <= pc.TOP_EDGES
    key, values = next(iter(r.prompt_edge_scores.items()))
    s, t = map(int, key.split("->"))
    assert np.mean(values) == pytest.approx(r.edge_scores[s, t]) and len(values) == 3
    from xattr_lab.methods import circuits, registry

    assert registry.PATCHING_OPTIONS[0].default == "sae"
    import inspect

    assert inspect.signature(circuits.discover).parameters["method"].default == "sae"


@pytest.mark.parametrize("positive,negative,pattern", [
    (PAIRS[0], PAIRS[1][:2], "pairs each clean prompt"),
    (PAIRS[0][:1], ["When Mary and John went to the store, Lisa Smith gave a drink to"], "same token length"),
])
def test_unpaired_prompts_are_refused(llama, positive, negative, pattern):
    from xattr_lab.errors import InputError

    with pytest.raises(InputError, match=pattern):
        llama.circuit(positive, negative, method="eap-ig", progress=False)


@pytest.mark.parametrize("options,pattern", [({"method": "eap", "features": 8}, "are for method='sae'"),
                                             ({"method": "eap-ig", "ig_steps": 0}, "ig_steps"),
                                             ({"method": "acdc"}, "method must be one of")])
def test_bad_options_are_refused(llama, options, pattern):
    from xattr_lab.errors import InputError

    with pytest.raises(InputError, match=pattern):
        llama.circuit(*PAIRS, progress=False, **options)


def test_faithfulness_curve_follows_mib(llama):
    from xattr_lab.methods import patching_faithfulness as pf

    r = llama.circuit(*PAIRS, method="atp", metric=_last_logit_metric(5, 7), progress=False)
    f = r.faithfulness
    assert f["unit"] == "nodes" and f["percentages"] == list(pf.MIB_PERCENTAGES)
    assert f["sizes"] == [int(p * 8) for p in pf.MIB_PERCENTAGES] and f["faithfulness"][-1] == pytest.approx(1.0)
    assert f["faithfulness"][0] == pytest.approx(0.0)  # 0 heads kept = the empty circuit
    cpr, cmd = pf.areas(f["percentages"], f["faithfulness"])
    x, y = np.array(f["percentages"]), np.array(f["faithfulness"])
    by_hand = sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))
    assert f["cpr"] == pytest.approx(cpr) == pytest.approx(by_hand)
    assert f["cmd"] == pytest.approx(sum((x[i + 1] - x[i]) * (abs(1 - y[i]) + abs(1 - y[i + 1])) / 2
                                         for i in range(len(x) - 1)))


def test_magic_and_cli_parsers_take_the_method(tmp_path):
    from xattr_lab import cli, commands
    from xattr_lab.errors import UsageError

    for front in (commands.build_parser("magic"), cli.build_parser()):
        args = commands.parse_args(front, ["circuit", "--method", "eap-ig", "--ig-steps", "3", "--faithfulness", "no"])
        assert commands.circuit_kwargs(args) == {"method": "eap-ig", "ig_steps": 3, "faithfulness": False}
        args = commands.parse_args(front, ["circuit"])
        assert "method" not in commands.circuit_kwargs(args)  # SAE, unchanged
        for argv, pattern in [(["--method", "eap", "--ig-steps", "3"], "applies to --method eap-ig"),
                              (["--method", "atp", "--recipe", "xattr"], "SAE option"),
                              (["--ig-steps", "3"], "not sae")]:
            with pytest.raises(UsageError, match=pattern):
                commands.circuit_kwargs(commands.parse_args(front, ["circuit", *argv]))
    (tmp_path / "pos.txt").write_text("\n".join(PAIRS[0]))
    (tmp_path / "neg.txt").write_text("\n".join(PAIRS[1]))
    args = commands.parse_args(cli.build_parser(), ["circuit", "--model", "tiny-llama", "--method", "eap-ig",
                                                    "--ig-steps", "2", "--positive", str(tmp_path / "pos.txt"),
                                                    "--negative", str(tmp_path / "neg.txt"), "--faithfulness", "no"])
    result = commands.run(args, commands.FileInputs(), cache=False)
    assert result.kind == "patching-circuit" and result.options["ig_steps"] == 2 and result.positive == PAIRS[0]


def test_cell_magic_runs_eap_ig():
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "xattr_lab")
    body = "\n".join(PAIRS[0]) + "\n---\n" + "\n".join(PAIRS[1]) + "\n"
    result = ip.run_cell("%%xattr circuit --model tiny-gpt2 --device cpu --method eap-ig --ig-steps 2 "
                         "--faithfulness no --html '' --out pc\n" + body)
    assert result.error_in_exec is None and result.error_before_exec is None, result
    r = ip.user_ns["pc"]
    assert r.method == "eap-ig" and r.edge_scores.shape == (8, 9) and r.options["ig_steps"] == 2


def test_the_public_circuits_namespace_names_the_patching_methods():
    from xattr_lab.methods import patching_circuits, registry

    assert xa.circuits.PATCHING_METHODS == registry.CIRCUIT_METHODS[1:] == ("atp", "eap", "eap-ig")
    assert xa.circuits.discover_patching is patching_circuits.discover_patching
    assert xa.circuits.MIB_PERCENTAGES == (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    valid = xa.circuits.valid_edges(2, 3)
    assert valid.shape == (6, 7) and valid[:, 6].all() and not valid[3, 4] and valid[0, 4]
