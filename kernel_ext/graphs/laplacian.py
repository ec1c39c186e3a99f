"""Newton directions of the barrier max-flow: the weighted graph Laplacian of the layered graph,
factorised layer by layer (block-tridiagonal Cholesky) in torch, on CPU or GPU.

docs/ARCHITECTURE.md, section "Flows and GAF".
"""
from __future__ import annotations

import math

import torch

from .problem import edge_terms, node_imbalance, edge_masks, Problem, solver_error


class LayeredLaplacian:
    """The grounded (t = 0) weighted Laplacian B·diag(w)·Bᵀ of the layered graph, factorised.

    Nodes are ordered layer 0, 1, …, L, then s; the matrix is block tridiagonal with diagonal
    blocks diag(D_l) and off-diagonal blocks −W_l, so a block Cholesky (Thomas) sweep costs
    L dense n×n factorisations — O(L·n³) — instead of O((L·n)³) for the full matrix; each
    solve with the stored factors costs O(L·n²). Inactive nodes (no incident weight) get a unit
    diagonal (their right-hand side is always 0).
    """

    def __init__(self, W, wa, wb, wts):
        L, n = W.shape[0], W.shape[1]
        self.W, self.wa, self.L = W, wa, L
        D = torch.zeros((L + 1, n), dtype=W.dtype, device=W.device)
        D[1:] += W.sum(dim=2)
        D[:-1] += W.sum(dim=1)
        D[L] += wa
        D[0] += wb
        self.D = torch.where(D > 0, D, torch.ones_like(D))
        self.factors = []  # Cholesky factor of the Schur complement S_l, l = 1..L (S_0 = diag D_0)
        for l in range(1, L + 1):
            Wl = W[l - 1]  # rows: layer l, columns: layer l-1
            if l == 1:
                S = torch.diag(self.D[1]) - (Wl / self.D[0][None, :]) @ Wl.T
            else:
                X = torch.linalg.solve_triangular(self.factors[-1], Wl.T, upper=False)  # L^{-1} Wᵀ
                S = torch.diag(self.D[l]) - X.T @ X
            Lc, info = torch.linalg.cholesky_ex(S)
            if int(info) != 0:
                raise solver_error(
                    f"Laplacian block {l} lost positive definiteness (Cholesky failed at column {int(info)})", {}
                )
            self.factors.append(Lc)
        self.va = self._lsolve(self.factors[-1], wa)
        self.Ss = wa.sum() + wts - self.va @ self.va  # Schur complement of the node s

    @staticmethod
    def _lsolve(Lc, b):
        return torch.linalg.solve_triangular(Lc, b[:, None], upper=False)[:, 0]

    @staticmethod
    def _ltsolve(Lc, b):
        return torch.linalg.solve_triangular(Lc.T, b[:, None], upper=True)[:, 0]

    def solve(self, r, rs):
        """ν (L+1, n) and ν_s for right-hand side r (L+1, n), r_s (t is grounded at 0)."""
        W, D, L = self.W, self.D, self.L
        ys = []  # L_l^{-1} z_l with z_l = r_l + W_l S_{l-1}^{-1} z_{l-1}
        for l in range(1, L + 1):
            if l == 1:
                z = r[1] + W[0] @ (r[0] / D[0])
            else:
                # W S^{-1} z = (L^{-1} Wᵀ)ᵀ (L^{-1} z), applied without forming L^{-1} Wᵀ
                z = r[l] + W[l - 1] @ self._ltsolve(self.factors[l - 2], ys[-1])
            ys.append(self._lsolve(self.factors[l - 1], z))
        xs = (rs + self.va @ ys[-1]) / self.Ss
        x = torch.zeros_like(r)
        x[L] = self._ltsolve(self.factors[-1], ys[-1] + self.va * xs)
        for l in range(L, 1, -1):
            Lc = self.factors[l - 2]  # factor of S_{l-1}
            x[l - 1] = self._ltsolve(Lc, self._lsolve(Lc, W[l - 1].T @ x[l]) + ys[l - 2])
        x[0] = (r[0] + W[0].T @ x[1]) / D[0]
        return x, xs


#: edges whose flow or slack is below this fraction of the flow value keep their flow in a Newton
#: step (their conductance w = 1/h is below (NEGLIGIBLE_FLOW · value)²/μ): float64 potentials cannot
#: resolve a step for them, and what they carry is below what the value is certified to. On
#: smollm2's 1,024-token AGF graph at μ = 3.3e-12, about 0.9M of its 15.7M edges, whose steps (noise
#: of their own size) made every Newton direction an ascent direction for the objective (decrement
#: stuck near 7.5, steps of 2^-30); with them kept, the decrement fell from 34 to 0.02 in 9 steps.
#: Near the central path such an edge has a large reduced cost (its flow ~ μ/cost falls with μ) or a
#: tiny capacity, so its flow stays within about that fraction of the value of where it belongs. The
#: barrier's centring keeps them only once a direction is not a descent direction: kept from the first
#: step, the same centring stalled on smollm2's 512-token graph, which certifies without it.
NEGLIGIBLE_FLOW = 1e-11


def _freeze_negligible(step, conductances, value: float, mu: float):
    """The step with 0 on every edge whose conductance is below (``NEGLIGIBLE_FLOW``·value)²/μ."""
    floor = (NEGLIGIBLE_FLOW * value) ** 2 / mu
    return tuple(torch.where(w < floor, torch.zeros_like(d), d) for d, w in zip(step, conductances))


def newton_direction(P: Problem, state, mu, refine: int = 2, freeze: bool = False):
    """Newton step of the equality-constrained barrier problem (infeasible-start form, so
    round-off drift in conservation is corrected by the next step).

    state: ((F, S_F), (fa, S_a), (fb, S_b), (fts, S_ts)) flows and slacks of the four edge groups.
    Returns the step for the flows, the scale-free Newton decrement, and node potentials
    (ν (L+1, n), ν_s), t grounded at 0.

    Precision: Δ_e = −w_e (g_e + ν_tail − ν_head) with w_e up to (flow)²/μ. At small μ the node
    potentials approach a 0/−1 cut pattern, and resolving Δ on the heavy edges from potentials of
    size 1 would need (flow²/μ)·eps ≪ the step — false below μ ≈ 1e-7. So potentials are split
    into an exact integer part π = −σ (σ = 1 on the current source side, from the last
    potentials) and a small remainder solved for; the objective's −1 on t -> s folds into the
    integer offsets exactly. The conservation residual of the step, computed edge by edge, is fed
    back through the stored factors (iterative refinement, ``refine`` rounds, O(L·n²) each).
    ``freeze``: edges below ``NEGLIGIBLE_FLOW`` keep their flow (for a state near the central path,
    where a tiny flow means a large reduced cost; from an arbitrary start it would fix flows that
    still have to grow).
    """
    masks = edge_masks(P)
    (g, h, W), (ga, ha, wa), (gb, hb, wb), (gts, hts, wts) = [
        edge_terms(f, s, mu, m) for (f, s), m in zip(state, masks)
    ]
    sig = P.sigma.to(g.dtype)
    # exact integer offsets π_tail − π_head (+ the objective's −1 on t -> s, which cancels there)
    g = g + (sig[:-1, None, :] - sig[1:, :, None])
    ga = ga + (sig[P.L] - 1.0)
    gb = gb - sig[0]
    Wg, wga, wgb, wgts = W * g, wa * ga, wb * gb, wts * gts
    flows_ = [f if m is None else f * m for (f, _), m in zip(state, masks)]
    lap = LayeredLaplacian(W, wa, wb, wts)
    # rhs = B f − B (w ∘ g)
    r1, s1 = node_imbalance(*flows_, P.L)
    r2, s2 = node_imbalance(Wg, wga, wgb, wgts, P.L)
    nu, nus = lap.solve(r1 - r2, s1 - s2)

    def step_for(nu, nus):
        # Δ_e = −w_e (ĝ_e + ν̃_tail − ν̃_head)
        return (
            -(Wg + W * (nu[1:, :, None] - nu[:-1, None, :])),
            -(wga + wa * (nus - nu[P.L])),
            -(wgb + wb * nu[0]),
            -(wgts - wts * nus),
        )

    step = step_for(nu, nus)
    scale = float(state[3][0]) + 1e-300
    for _ in range(refine):
        # residual of B Δ = −B f; a correction δν gives δΔ = −W Bᵀ δν, B δΔ = −Lap δν
        q, qs = node_imbalance(*step, P.L)
        q, qs = q + r1, qs + s1
        if max(float(q.abs().max()), abs(float(qs))) <= 1e-15 * scale:
            break
        d_nu, d_nus = lap.solve(q, qs)
        nu, nus = nu + d_nu, nus + d_nus
        step = step_for(nu, nus)
    if freeze:
        step = _freeze_negligible(step, (W, wa, wb, wts), scale, mu)
    # scale-free Newton decrement: λ² = Σ h Δ² / μ = Σ Δ² (1/f² + 1/(u−f)²)
    dec = sum(float((d * d * hh).sum()) for d, hh in zip(step, (h, ha, hb, hts))) / mu
    full_nu, full_nus = nu - sig, nus - 1.0
    P.sigma = (full_nu < -0.5) & P.active_t
    return step, math.sqrt(max(dec, 0.0)), (full_nu, full_nus)
