"""One tokenised text, as every capture and method receives it."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoding:
    """One tokenised text. input_ids/attention_mask are (1, n) on the explainer's device."""

    text: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    tokens: list[str]
    special_mask: list[bool]
    truncated: int = 0

    @property
    def n(self) -> int:
        return len(self.tokens)
