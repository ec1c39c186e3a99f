"""SIG's one-token paths, batched (docs/ARCHITECTURE.md, section "Gradients"): F and the integrand
<dF/dx_p, x_p - x'_p> with token p moved along its path, rows sorted by position so that each chunk
of a causal LM starts after a cached key/value prefix. The text's one-unit paths of :func:`.path_methods.sig_run`
(wired by :func:`.gradients.sequential_integrated_gradients`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.batching import run_chunked
from ..core.session import ModelSession
from .embedding_path import PrefixCaches, Problem, forward_scores, scores_and_grads, target_scores


def sig_values(ex: ModelSession, problem: Problem, pos: np.ndarray, alphas: np.ndarray, size: int,
                reuse: bool = False) -> np.ndarray:
    """F(x with token pos[r] at x'_p + alphas[r] (x_p - x'_p)) for each row r -> (R,) (forward only).

    Rows run sorted by position; with ``reuse`` each chunk starts after the cached prefix before its first one.
    """
    order = np.argsort(pos, kind="stable")
    pos_rows, alpha_rows = pos[order], alphas[order]
    out = np.zeros(len(pos))
    delta = (problem.x - problem.x_base)[0]
    prefixes = PrefixCaches(ex, problem)

    def work(start: int, stop: int) -> None:
        p = torch.tensor(pos_rows[start:stop], device=ex.device)
        first = int(p.min()) if reuse else 0
        embeds = problem.x[:, first:].expand(stop - start, -1, -1).clone()
        rows = torch.arange(stop - start, device=ex.device)
        a = torch.tensor(alpha_rows[start:stop], dtype=torch.float32, device=ex.device)[:, None]
        embeds[rows, p - first] = problem.x_base[0, p] + a * delta[p]
        if first == 0:
            out[start:stop] = forward_scores(ex, problem, embeds).double().cpu().numpy()
            return
        with torch.no_grad():
            out[start:stop] = target_scores(ex, problem, embeds, prefixes(first)).double().cpu().numpy()

    run_chunked(len(pos), size, work)
    result = np.empty(len(pos))
    result[order] = out
    return result


def sig_rows(ex: ModelSession, problem: Problem, pos: np.ndarray, alphas: np.ndarray, size: int, reuse: bool,
              bar=None) -> np.ndarray:
    """<dF/dx_p, x_p - x'_p> with token pos[r] at alphas[r] along its path, every row batched -> (R,).

    Rows are run sorted by position, so with ``reuse`` each chunk starts after a cached prefix.
    """
    device = ex.device
    order = np.argsort(pos, kind="stable")
    pos_rows = torch.tensor(pos[order], device=device)
    alpha_rows = torch.tensor(alphas[order], dtype=torch.float32, device=device)
    delta = (problem.x - problem.x_base)[0]  # (n, d)
    along = torch.zeros(len(pos_rows), dtype=torch.float64, device=device)
    prefixes = PrefixCaches(ex, problem)

    def work(start: int, stop: int) -> None:
        p = pos_rows[start:stop]
        rows = torch.arange(stop - start, device=device)
        first = int(p.min()) if reuse else 0
        embeds = problem.x[:, first:].expand(stop - start, -1, -1).clone()
        embeds[rows, p - first] = problem.x_base[0, p] + alpha_rows[start:stop, None] * delta[p]
        _, grads = scores_and_grads(ex, problem, embeds, prefixes(first))
        along[start:stop] = (grads[rows, p - first].double() * delta[p].double()).sum(-1)

    run_chunked(len(pos_rows), size, work, bar=bar)
    out = np.empty(len(pos))
    out[order] = along.cpu().numpy()
    return out
