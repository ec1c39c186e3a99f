"""Raw attention as a token attribution: the ``attention`` method of the registry."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..results import Attribution
from .registry import implements

if TYPE_CHECKING:  # pragma: no cover
    from ..core.session import ModelSession


@implements("attention")
def attention_attribution(
    ex: "ModelSession", text: str, *, method: str = "attention", target: Any = None, layer: int = -1, truncate: bool = False
) -> Attribution:
    """Raw attention: the head-averaged attention row of the readout token in one layer.

    The readout token is [CLS]/the first token for encoders and the predicting position for
    causal/masked LMs. Scores are attention probabilities (they sum to 1 over the tokens).
    """
    if not -ex.n_layers <= layer < ex.n_layers:
        raise InputError(f"layer {layer} is out of range for a {ex.n_layers}-layer model")
    cap = ex.capture(text, target, truncate=truncate)
    source = ex.source_position(cap.encoding)
    row = cap.attentions[layer].mean(dim=0)[source].double().numpy()
    return Attribution(
        tokens=cap.tokens,
        scores=row,
        raw=row,
        target=cap.target.public,
        target_label=cap.target.label,
        method=method,
        options={"layer": layer, "source": source},
        prediction=cap.prediction,
        text=cap.encoding.text,
        model=ex.name,
    )
