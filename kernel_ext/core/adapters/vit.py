"""Vision transformers (ViT): ``layers.N.attention.o_proj`` (transformers >= 5), formerly
``encoder.layer.N.attention.output.dense``. Inputs are images; patches are the tokens
(``xattr_lab.methods.vision_input``)."""
from .base import Family

FAMILY = Family("vit", r"(?:^|\.)(?:layers|layer)\.(\d+)\.attention\.(?:o_proj|output\.dense)$", causal=False,
                model_types=("vit",), notes="images: [CLS] + one token per patch; no tokenizer, an image processor")
