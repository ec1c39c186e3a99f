"""The layered attention graph of an encoder-decoder (T5, BART), in the shape every graph algorithm
here takes: capacities (L, n, n) with edges (l, i) -> (l−1, j).

docs/ARCHITECTURE.md, section "Rollout and attention flow" (the graph it extends). numpy only.

Nodes: every layer holds the n = n_s + n_t tokens, sources first (0 .. n_s−1: the encoder's input
tokens), then the decoder's input tokens (n_s .. n−1: the start token and the target so far).
Graph layers, bottom to top (L = L_e + 2·L_d):

- encoder layer k (graph layer k+1, k = 0..L_e−1): source rows hold encoder self-attention
  enc[k][i, j]; each target node passes straight up (one edge to itself, capacity ``through``):
  the decoder's inputs do not change in the encoder;
- decoder layer d, self-attention sublayer (graph layer L_e + 2d + 1): target rows hold decoder
  self-attention dec[d][t, u] (causal: u ≤ t) on target nodes; source nodes pass straight up;
- decoder layer d, cross-attention sublayer (graph layer L_e + 2d + 2): target rows hold
  cross-attention cross[d][t, s] on source nodes; source nodes pass straight up. Passing up, the
  source nodes stay the encoder's last-layer outputs, which is what every cross-attention reads.

The residual stream of each sublayer is added afterwards by the caller's residual mixing
(``mix_residual`` / ``mix_residual_capacity``: r·I + (1−r)·C, rows renormalised for rollout):
for the cross-attention sublayer this self edge is the only path by which a target token keeps
what the decoder self-attention gathered, so encoder-decoder graphs need r > 0. The decoder's
feed-forward blocks, like the encoder's, are not nodes (as in Abnar & Zuidema 2020).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError


def _stack(values: Any, name: str, ndim: int = 3) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise InputError(f"{name} must have {ndim} axes, got shape {array.shape}")
    if not np.isfinite(array).all() or (array < 0).any():
        raise InputError(f"{name} must hold finite non-negative values")
    return array


def seq2seq_graph(enc: Any, dec: Any, cross: Any, through: float = 1.0) -> np.ndarray:
    """Capacities (L_e + 2·L_d, n, n) of the encoder-decoder graph (module docstring), n = n_s + n_t.

    enc: (L_e, n_s, n_s) encoder self-attention (head-averaged, or any non-negative information);
    dec: (L_d, n_t, n_t) decoder self-attention; cross: (L_d, n_t, n_s) cross-attention;
    through: capacity of the edges that carry a node straight up (1 for attention, which rows of 1
    keep row-stochastic; a bound no flow reaches for GAF's capacities).
    """
    enc, dec, cross = _stack(enc, "enc"), _stack(dec, "dec"), _stack(cross, "cross")
    Le, ns = enc.shape[0], enc.shape[1]
    Ld, nt = dec.shape[0], dec.shape[1]
    if enc.shape[2] != ns or dec.shape[2] != nt or cross.shape != (Ld, nt, ns):
        raise InputError(f"shapes do not fit one encoder-decoder: enc {enc.shape}, dec {dec.shape}, cross {cross.shape}")
    n = ns + nt
    C = np.zeros((Le + 2 * Ld, n, n))
    src, tgt = np.arange(ns), ns + np.arange(nt)
    for k in range(Le):
        C[k, :ns, :ns] = enc[k]
        C[k, tgt, tgt] = through
    for d in range(Ld):
        self_layer, cross_layer = C[Le + 2 * d], C[Le + 2 * d + 1]
        self_layer[src, src] = through
        self_layer[ns:, ns:] = dec[d]
        cross_layer[src, src] = through
        cross_layer[ns:, :ns] = cross[d]
    return C


def graph_layer_names(n_encoder: int, n_decoder: int) -> list[str]:
    """Names of the graph layers 1..L, bottom to top: "enc 0", ..., "dec 0 self", "dec 0 cross", ..."""
    names = [f"enc {k}" for k in range(n_encoder)]
    for d in range(n_decoder):
        names += [f"dec {d} self", f"dec {d} cross"]
    return names
