"""Reaching the central path from a poor start: a primal-dual (Mehrotra) phase for GAF (torch).

docs/ARCHITECTURE.md, section "Flows and GAF". The barrier centre at μ is the point where
f_e·z_e = μ and (u_e − f_e)·w_e = μ on every edge, with the flow conserving and the duals
z − w = c + Bᵀν. A primal-only Newton step moves a flow that lies far below its centre by a
bounded factor at most (measured: from the proportional-split start, the first μ stage of a
255-token smollm2 graph ran 400 Newton steps, each cut at 0.99× the distance to the boundary,
the decrement stuck near √m). Primal-dual steps linearise f·z = μ instead, so a flow can grow by
orders of magnitude in one step. Mehrotra's predictor-corrector, started at the centre of every
edge's box, brings the duality measure to the target μ with the flow conserving; the primal Newton
method (:mod:`.barrier`) then centres exactly. Gondzio's centrality correctors (``CORRECTORS``)
reuse each step's factors to lengthen the steps that the start's imbalance keeps short. Each step
solves the weighted Laplacian of :class:`.laplacian.LayeredLaplacian`. Edges are held as one vector (kept internal edges, then s -> (L, i),
(0, j) -> t, t -> s), so no work is spent on the masked half of a causal model's n × n blocks.
"""
from __future__ import annotations

import math

import torch

from .laplacian import LayeredLaplacian
from ..errors import SolverError
from .problem import Problem

#: print one line per primal-dual iteration (diagnostics)
DEBUG = False
#: Gondzio's centrality correctors per step (0: plain Mehrotra predictor-corrector). Each costs one
#: solve with the step's factors, no factorisation. Measured with 2 (and ``STEP_FRACTION`` 0.95),
#: smollm2-135m capacities: the first μ stage took 30 steps instead of 46 at 255 tokens, 50
#: instead of 68 at 511, but the CPU seconds stayed the same (92 at 511, 1 thread): there a
#: corrector's solve and O(m) vector work cost about what a factorisation does, which grows as
#: L·n³ against L·n² (results/measured/gaf_start_*.txt)
CORRECTORS = 2
#: fraction of the distance to the boundary a step goes (0.99 before the correctors)
STEP_FRACTION = 0.95
#: products a corrector aims for: [lo·σμ, hi·σμ] (Gondzio 1996, section 3)
_CORRECTOR_BAND = (0.1, 10.0)


class _Edges:
    """The kept edges of P as vectors: tails, heads (node ids l·n + i, s = (L+1)·n, t = s + 1),
    capacities, costs, and the scatter back into the dense (L, n, n) layout."""

    def __init__(self, P: Problem):
        L, n, dev = P.L, P.n, P.device
        self.P = P
        self.idx = torch.nonzero(P.keep.reshape(-1)).reshape(-1)
        k, rem = self.idx // (n * n), self.idx % (n * n)
        i, j = rem // n, rem % n
        self.src = torch.nonzero(P.src).reshape(-1)
        self.snk = torch.nonzero(P.snk).reshape(-1)
        s, t = (L + 1) * n, (L + 1) * n + 1
        one = lambda size, v: torch.full((size,), v, dtype=torch.long, device=dev)  # noqa: E731
        self.tail = torch.cat([(k + 1) * n + i, one(self.src.numel(), s), self.snk, one(1, t)])
        self.head = torch.cat([k * n + j, L * n + self.src, one(self.snk.numel(), t), one(1, s)])
        U = torch.full((self.src.numel() + self.snk.numel() + 1,), P.U, dtype=torch.float64, device=dev)
        self.u = torch.cat([P.u.reshape(-1)[self.idx], U])
        self.cost = torch.zeros_like(self.u)
        self.cost[-1] = -1.0
        self.K, self.nodes = self.idx.numel(), (L + 1) * n + 2

    def imbalance(self, x):
        """B x: out-flow minus in-flow at every node (t's entry is ignored: t is grounded)."""
        out = torch.zeros(self.nodes, dtype=x.dtype, device=x.device)
        out.index_add_(0, self.tail, x)
        out.index_add_(0, self.head, -x)
        return out

    def node_scale(self, x):
        """Largest |x| on the edges at each node (the floor 1e-300 keeps divisions finite)."""
        out = torch.full((self.nodes,), 1e-300, dtype=x.dtype, device=x.device)
        out.scatter_reduce_(0, self.tail, x.abs(), reduce="amax")
        out.scatter_reduce_(0, self.head, x.abs(), reduce="amax")
        return out

    def potential_drop(self, nu):
        """Bᵀν: ν_tail − ν_head per edge (ν over all nodes, t = 0). index_select: about a third
        of the CPU time of ν[tail] at 3.9M edges (11 against 30 ms)."""
        return nu.index_select(0, self.tail) - nu.index_select(0, self.head)

    def laplacian(self, d):
        P = self.P
        W = torch.zeros(P.L * P.n * P.n, dtype=d.dtype, device=d.device)
        W[self.idx] = d[: self.K]
        wa = torch.zeros(P.n, dtype=d.dtype, device=d.device)
        wb = torch.zeros_like(wa)
        ns, nb = self.src.numel(), self.snk.numel()
        wa[self.src] = d[self.K : self.K + ns]
        wb[self.snk] = d[self.K + ns : self.K + ns + nb]
        return LayeredLaplacian(W.reshape(P.L, P.n, P.n), wa, wb, d[-1])

    def solve(self, lap, r):
        P = self.P
        x, xs = lap.solve(r[: (P.L + 1) * P.n].reshape(P.L + 1, P.n), r[-2])
        return torch.cat([x.reshape(-1), xs.reshape(1), torch.zeros(1, dtype=x.dtype, device=x.device)])

    def state(self, f, slack):
        """The solver's state (flows, slacks of the four edge groups; placeholders on masked entries)."""
        P = self.P
        F = torch.full((P.L * P.n * P.n,), 0.5, dtype=f.dtype, device=f.device)
        S = F.clone()
        F[self.idx], S[self.idx] = f[: self.K], slack[: self.K]
        ns, nb = self.src.numel(), self.snk.numel()
        out = [(F.reshape(P.L, P.n, P.n), S.reshape(P.L, P.n, P.n))]
        for sel, lo, hi in ((self.src, self.K, self.K + ns), (self.snk, self.K + ns, self.K + ns + nb)):
            a = torch.full((P.n,), 0.5 * P.U, dtype=f.dtype, device=f.device)
            b = a.clone()
            a[sel], b[sel] = f[lo:hi], slack[lo:hi]
            out.append((a, b))
        out.append((f[-1], slack[-1]))
        return tuple(out)


def _centrality_targets(f, s, z, w, step, alphas, sigma_mu: float):
    """Complementarity right-hand sides of a Gondzio corrector (Gondzio 1996): the products
    (f·z, s·w) at the trial step lengths ``alphas`` = (primal, dual), moved into the band
    ``_CORRECTOR_BAND``·σμ; a product above the band is pulled down by at most hi·σμ. All (m,)."""
    df, dz, dw = step
    ap, ad = alphas
    lo, hi = _CORRECTOR_BAND[0] * sigma_mu, _CORRECTOR_BAND[1] * sigma_mu
    out = []
    for v in ((f + ap * df) * (z + ad * dz), (s - ap * df) * (w + ad * dw)):
        out.append((v.clamp(min=lo, max=hi) - v).clamp_(min=-hi))
    return out


def _step_to_boundary(x, dx, sign: float = 1.0) -> float:
    """Largest α with x + α·sign·dx ≥ 0 (x > 0; inf when sign·dx ≥ 0). One temporary (the
    ratio's min or max, no copy of −dx): these took ~9% of a step's CPU at 3.9M edges."""
    ratio = dx / x
    worst = -float(ratio.min()) if sign > 0 else float(ratio.max())
    return math.inf if worst <= 0 else 1.0 / worst


class PrimalDual:
    """Mehrotra predictor-corrector iterates (f, s, z, w, ν) on the edge vectors of P, started at the
    box centres (f = s = u/2, z = w = μ/f, ν = 0) and moved from one target μ to the next by
    :meth:`advance` (the state carries over, so a μ grid costs a few steps per stage)."""

    def __init__(self, P: Problem, mu_start: float):
        E = self.E = _Edges(P)
        f = 0.5 * E.u
        # terminal edges (capacity U = ΣC): half the capacity of the internal edges beside them, not
        # U/2 — weights f²/μ of size U²/μ next to those of tiny edges break the Cholesky factors
        K, ns, nb = E.K, E.src.numel(), E.snk.numel()
        beside = torch.zeros(E.nodes, dtype=f.dtype, device=f.device)
        beside.index_add_(0, E.tail[:K], E.u[:K])
        beside.index_add_(0, E.head[:K], E.u[:K])
        f[K:-1] = torch.minimum(f[K:-1], 0.5 * beside[torch.cat([E.head[K : K + ns], E.tail[K + ns : K + ns + nb]])])
        f[-1] = torch.minimum(f[-1], f[K : K + ns].sum())
        s = E.u - f
        self.f, self.s = f, s
        self.z = mu_start / f
        self.w = mu_start / self.s - E.cost  # z − w = c + Bᵀν with ν = 0
        self.nu = torch.zeros(E.nodes, dtype=f.dtype, device=f.device)
        self.iterations = 0
        self.trace: list[float] = []  # duality measure before each step (normalised units)

    def _vectors(self, state):
        """Flows and slacks of a primal state as edge vectors."""
        E = self.E
        return tuple(torch.cat([F.reshape(-1)[E.idx], fa[E.src], fb[E.snk], fts.reshape(1)])
                     for F, fa, fb, fts in zip(*state))

    def reseed(self, state, potentials, mu: float):
        """Restart from a primal point near its centre at μ: z = μ/f, w = μ/s, ν = its potentials
        ((L+1, n), ν_s; the dual residual is then the centring error only)."""
        self.f, self.s = self._vectors(state)
        self.z, self.w = mu / self.f, mu / self.s
        nu, nus = potentials
        self.nu = torch.cat([nu.reshape(-1), nu.new_tensor([float(nus), 0.0])])

    @property
    def value(self) -> float:
        """Flow on t -> s (normalised units; conserving only to the ``advance`` tolerance)."""
        return float(self.f[-1])

    def state(self):
        """The primal solver's state (see :meth:`_Edges.state`)."""
        return self.E.state(self.f, self.s)

    def potentials(self):
        """Node potentials ((L+1, n) tensor, ν_s) with t = 0, as :func:`.laplacian.newton_direction`
        returns them (s near −1, the sink side near 0): any of them gives a sweep cut."""
        P = self.E.P
        return self.nu[: (P.L + 1) * P.n].reshape(P.L + 1, P.n), float(self.nu[-2] - self.nu[-1])

    def advance(self, mu_target: float, *, max_iter: int = 150, rel: float = 0.25, conserve: float = 1e-6,
                stall: int = 0) -> bool:
        """Mehrotra steps until the duality measure is within ``rel`` of ``mu_target`` (normalised
        units) and every node's imbalance is within ``conserve`` of the largest flow at it (so the
        primal Newton step that removes the imbalance changes every flow there by a small relative
        amount: a tolerance relative to the flow value let a 1e-9 imbalance land on edges of 1e-13
        and stall it). False when ``max_iter`` steps did not get there or the weights went beyond
        what float64 factors (the caller then goes on with primal steps)."""
        E = self.E
        f, s, z, w, nu = self.f, self.s, self.z, self.w, self.nu
        m2 = 2 * f.numel()
        reached, short = False, 0
        for _ in range(max_iter):
            mu = float((f @ z + s @ w)) / m2
            rp = E.imbalance(f)
            rp[-1] = 0.0
            near = abs(mu / mu_target - 1) <= rel
            residual = float((rp.abs() / E.node_scale(f)).max()) if near or DEBUG else math.inf
            if near and residual <= conserve:
                reached = True
                break
            rd = E.cost + E.potential_drop(nu) - z + w
            d = 1.0 / (z / f + w / s)
            try:
                lap = E.laplacian(d)
            except SolverError:  # weights beyond what float64 factors
                break

            def direction(rc1, rc2, feasible=False):
                # Δf = D(−rd + rc1/f − rc2/s − BᵀΔν) with B D Bᵀ Δν = B D(−rd + rc1/f − rc2/s) + rp;
                # ``feasible``: rd = rp = 0 (a corrector, added to a step that already removes them)
                q = d * (rc1 / f - rc2 / s) if feasible else d * (-rd + rc1 / f - rc2 / s)
                rhs = E.imbalance(q) if feasible else E.imbalance(q) + rp
                dnu = E.solve(lap, rhs)
                df = q - d * E.potential_drop(dnu)
                return df, (rc1 - z * df) / f, (rc2 + w * df) / s, dnu

            def lengths(df, dz, dw):
                return (min(_step_to_boundary(f, df), _step_to_boundary(s, df, -1.0)),
                        min(_step_to_boundary(z, dz), _step_to_boundary(w, dw)))

            df, dz, dw, _ = direction(-f * z, -s * w)  # predictor (affine scaling)
            ap, ad = lengths(df, dz, dw)
            ap, ad = min(1.0, ap), min(1.0, ad)
            mu_aff = float((f + ap * df) @ (z + ad * dz) + (s - ap * df) @ (w + ad * dw)) / m2
            sigma_mu = max((mu_aff / mu) ** 3 * mu, mu_target)
            df, dz, dw, dnu = direction(sigma_mu - f * z - df * dz, sigma_mu - s * w + df * dw)  # corrector
            ap, ad = lengths(df, dz, dw)
            for _ in range(CORRECTORS):  # kept while it lengthens the steps by 5%
                if min(ap, 1.0) + min(ad, 1.0) >= 2.0 / 1.05:  # no room for that
                    break
                trial = (min(1.0, 1.5 * ap + 0.1), min(1.0, 1.5 * ad + 0.1))
                cf, cz, cw, cnu = direction(*_centrality_targets(f, s, z, w, (df, dz, dw), trial, sigma_mu), True)
                bp, bd = lengths(df + cf, dz + cz, dw + cw)
                if min(bp, 1.0) + min(bd, 1.0) < 1.05 * (min(ap, 1.0) + min(ad, 1.0)):
                    break
                df, dz, dw, dnu, ap, ad = df + cf, dz + cz, dw + cw, dnu + cnu, bp, bd
            ap, ad = min(1.0, STEP_FRACTION * ap), min(1.0, STEP_FRACTION * ad)
            f, s = f + ap * df, s - ap * df
            z, w, nu = z + ad * dz, w + ad * dw, nu + ad * dnu
            self.iterations += 1
            self.trace.append(mu)
            short = short + 1 if max(ap, ad) < 0.1 else 0
            if stall and short >= stall:  # poorly centred: steps of a few % (the caller re-centres)
                break
            if DEBUG:
                print(f"pd {self.iterations}: mu/target={mu / mu_target:.3g} rp={residual:.3g} ap={ap:.3g} ad={ad:.3g}")
        self.f, self.s, self.z, self.w, self.nu = f, s, z, w, nu
        return reached


def primal_dual_centre(P: Problem, mu_target: float, *, max_iter: int = 150, rel: float = 0.25,
                       conserve: float = 1e-6):
    """Mehrotra predictor-corrector from the box centres until the duality measure is within
    ``rel`` of ``mu_target`` and conservation within ``conserve`` (:meth:`PrimalDual.advance`).
    Returns (state, iterations), or (None, iterations) when it has not got there in ``max_iter``
    steps (the caller then starts from its own flow)."""
    pd = PrimalDual(P, mu_target)
    reached = pd.advance(mu_target, max_iter=max_iter, rel=rel, conserve=conserve)
    return (pd.state() if reached else None), pd.iterations
