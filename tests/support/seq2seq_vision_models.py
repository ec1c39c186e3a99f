"""Tiny randomly initialised ViT, T5 and BART models built offline from ``transformers`` config
classes, with a tiny word-level tokenizer trained here (no hub). Shared by tests/methods/test_vision.py,
tests/methods/test_seq2seq.py and the architecture matrix."""
from __future__ import annotations

SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "translate this small text please",
             "the film was good and the end was sad", "das ist ein kleines haus"]


def word_tokenizer(specials: list[str], template: str):
    """A WordLevel tokenizer over SENTENCES (ids: the specials first, in order) wrapped in
    PreTrainedTokenizerFast; ``template``: the post-processor's single-sequence template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for s in SENTENCES for w in s.split()})
    vocab = {token: i for i, token in enumerate(specials + words)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in specials if t in template])
    names = {"<pad>": "pad_token", "</s>": "eos_token", "<unk>": "unk_token", "<s>": "bos_token", "<mask>": "mask_token"}
    return PreTrainedTokenizerFast(tokenizer_object=core, **{names[t]: t for t in specials})


def build_t5(seed: int = 0):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = word_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>")
    config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config), tok


def build_bart(seed: int = 0):
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tok = word_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>")
    config = BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        bos_token_id=0, pad_token_id=1, eos_token_id=2, decoder_start_token_id=2,
                        forced_eos_token_id=None)
    torch.manual_seed(seed)
    return BartForConditionalGeneration(config), tok


def build_vit(seed: int = 0, processor: bool = True):
    """(ViTForImageClassification 32x32 images, 8x8 patches, 2 layers, 4 heads, 3 classes; a
    ViTImageProcessor with explicit arguments, or None for the minimal preprocessing)."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=64, num_labels=3, initializer_range=0.2)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config)
    if not processor:
        return model, None
    import warnings

    from transformers import ViTImageProcessor

    with warnings.catch_warnings():  # "requires torchvision; falling back to the PIL backend"
        warnings.simplefilter("ignore")
        proc = ViTImageProcessor(do_resize=True, size={"height": 32, "width": 32}, do_rescale=True,
                                 rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5, 0.5, 0.5],
                                 image_std=[0.5, 0.5, 0.5])
    return model, proc


def image(seed: int = 0, size=(32, 32)):
    """A random (H, W, 3) uint8 image with some structure (a bright square on noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = rng.integers(0, 120, size=(*size, 3), dtype=np.uint8)
    out[size[0] // 4: size[0] // 2, size[1] // 4: size[1] // 2] = 230
    return out


# ----------------------------------------------------------------------------- the architecture matrix
#: (name, builder) rows of tests/integration/test_architectures.py's matrix for images and encoder-decoders
MATRIX_ENTRIES = [("ViT", build_vit), ("T5", build_t5), ("BART", build_bart)]
MATRIX_NAMES = tuple(name for name, _ in MATRIX_ENTRIES)
SOURCE, PREFIX = "the cat sat on the mat", "a dog"


def _fresh_score(ex, result) -> float:
    """The explained logit from a forward pass written here (not the method's own)."""
    import torch

    with torch.no_grad():
        if ex.config.model_type == "vit":
            from xattr_lab.methods.vision_input import prepare

            return float(ex.model(pixel_values=prepare(ex, image()).pixels).logits[0, result.target])
        src = ex.tokenizer(SOURCE, return_tensors="pt")
        dec = [ex.config.decoder_start_token_id] + ex.tokenizer(PREFIX, add_special_tokens=False)["input_ids"]
        out = ex.model(**src, decoder_input_ids=torch.tensor([dec]), use_cache=False)
        return float(out.logits[0, -1, result.target])


def matrix_cell(ex, method: str) -> str:
    """One cell of the matrix for a ViT (input: ``image()``) or an encoder-decoder (``SOURCE``, the
    next token after ``PREFIX``): a short note, an AssertionError, or the method's XattrError."""
    import math

    import numpy as np

    vision = ex.config.model_type == "vit"
    args = ((image(),), {}) if vision else ((SOURCE,), {"prefix": PREFIX})
    if method == "circuit":
        ex.circuit(["a"], ["b"])
        raise AssertionError("circuit was expected to say why it does not apply")
    if method == "heads":
        h = ex.heads(*args[0], **args[1])
        n = len(h.tokens)
        assert np.isfinite(h.entropy).all() and (h.entropy >= -1e-6).all() and (h.entropy <= math.log(n) + 1e-6).all()
        return f"{h.entropy.shape[0]} attention layers, entropy in [0, log n]"
    options = {"steps": "auto"} if method in ("ig", "sig") else {}
    a = ex.attribute(*args[0], method=method, **args[1], **options)
    s = np.asarray(a.scores)
    assert s.shape == (len(a.tokens),) and np.isfinite(s).all()
    if method in ("attention", "rollout"):
        assert (s >= -1e-7).all() and abs(s.sum() - 1) < 1e-4, f"{method}: row sums to {s.sum()}"
        return f"row sums to 1 ({s.sum():.6f})"
    if method == "attention_flow":
        assert (s >= -1e-7).all() and s.max() <= 1 + 1e-6
        return f"each flow in [0, 1] (max {s.max():.3f})"
    if method == "gaf":
        value = float(a.options["value"])
        assert (s >= -1e-7).all() and abs(s.sum() - value) <= 1e-5 * max(value, 1e-6)
        return f"sum = flow value ({value:.3g})"
    fresh = _fresh_score(ex, a)
    assert abs(a.options["f_x"] - fresh) <= 1e-4 * max(abs(fresh), 1e-6), f"F(x) {a.options['f_x']} vs {fresh}"
    error = a.options["relative_completeness_error"]
    assert error < 0.05, f"{method}: relative completeness error {error}"
    return f"completeness {error:.1e}"
