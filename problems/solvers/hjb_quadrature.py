"""Exact solution of the HJB equation u_t + Δu - λ|∇u|² = 0, u(T, x) = ln((1 + |x|²)/2), in R^d.

The Hopf–Cole transform w = exp(-λu) turns the equation into the backward heat equation
w_t + Δw = 0, so with τ = T - t and Z ~ N(0, I_d) (Han, Jentzen & E, PNAS 115 (2018) 8505)

    u(t, x) = -(1/λ) ln E[exp(-λ g(x + √(2τ) Z))] = -(1/λ) ln E[(2 / (1 + 2τ S))^λ],

where S = |x/√(2τ) + Z|² is non-central χ² with d degrees of freedom and non-centrality
|x|²/(2τ). Writing (1 + s)^(-λ) = Γ(λ)^(-1) ∫_0^∞ r^(λ-1) e^(-r(1+s)) dr and taking the expectation
inside with the Laplace transform of S, E[exp(-2τrS)] = (1 + 4τr)^(-d/2) exp(-|x|² r/(1 + 4τr)),

    E[(1 + 2τS)^(-λ)] = Γ(λ)^(-1) ∫_0^∞ r^(λ-1) exp(-φ(r)) dr,
    φ(r) = r + (d/2) ln(1 + 4τr) + |x|² r / (1 + 4τr),

one smooth one-dimensional integral for every (t, x), which depends on x only through |x|², costs
the same for any d and holds at τ = 0 as well (where it gives g exactly).

The integral is taken in y = ln r by the midpoint rule on a window [y_lo, y_hi] chosen per point
so that both tails are below `EPS` times the integral: the integrand is at most r^(λ-1) near 0 and
at most r^(λ-1) e^(-r) beyond, and the integral is at least Γ(λ) c^(-λ), c = 1 + 2dτ + |x|²
(Jensen, since s -> (1 + s)^(-λ) is convex and E[2τS] = 2dτ + |x|²). The integrand is analytic in
a strip around the real y axis and negligible at both ends of the window, so the rule converges
exponentially in the number of nodes; everything is summed in log space (log-sum-exp).

`hjb_log_u` (numpy) is the reference solver; `hjb_log_u_torch` is the same rule, differentiable,
for checking the PDE by autograd.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["EPS", "STEP", "hjb_log_u", "hjb_log_u_torch", "terminal_log"]

EPS = 1e-17
"""Tail bound of the window, relative to the integral."""

STEP = 0.25
"""Default midpoint step in y for λ <= 1, divided by sqrt(λ) above (round-off; see the tests)."""

_CHUNK_ENTRIES = 1 << 20  # points x nodes per block: bounds temporaries to ~8 MiB each


def terminal_log(sq_norm: np.ndarray) -> np.ndarray:
    """The terminal value g(x) = ln((1 + |x|²)/2) from |x|²."""
    return np.log1p(np.asarray(sq_norm, dtype=np.float64)) - math.log(2.0)


def _window(sq_norm: np.ndarray, tau: np.ndarray, d: int, lam: float) -> tuple[np.ndarray, ...]:
    """Per-point integration window [y_lo, y_hi] in y = ln r (see the module docstring)."""
    log_c = np.log1p(2.0 * d * tau + sq_norm)
    log_eps = math.log(EPS)
    # Left tail: ∫_0^r0 r^(λ-1) dr = r0^λ/λ <= EPS Γ(λ) c^(-λ).
    y_lo = (log_eps + math.lgamma(lam + 1.0)) / lam - log_c
    # Right tail: Γ(λ, r) <= 2 r^(λ-1) e^(-r) for r >= 2 max(λ - 1, 0); find r where this is
    # EPS Γ(λ) c^(-λ) by the fixed-point iteration r = rhs + (λ - 1) ln r (a contraction there).
    rhs = math.log(2.0) - log_eps - math.lgamma(lam) + lam * log_c
    r_min = 2.0 * max(lam - 1.0, 0.0) + 1.0
    r = np.maximum(rhs, 1.0) + r_min
    for _ in range(40):
        r = np.maximum(rhs + (lam - 1.0) * np.log(r), r_min)
    return y_lo, np.log(r)


def _nodes(
    sq_norm: np.ndarray, tau: np.ndarray, d: int, lam: float, n: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Midpoint nodes `y` `[M, n_max]`, steps `h` `[M]` and which nodes each point uses."""
    if n is not None and n < 2:
        raise ValueError(f"need at least two nodes, got n={n}")
    y_lo, y_hi = _window(sq_norm, tau, d, lam)
    width = y_hi - y_lo
    if n is None:
        h = np.full_like(width, STEP / math.sqrt(max(lam, 1.0)))
        count = np.ceil(width / h)
        n_max = int(count.max()) if count.size else 1
    else:
        h, count, n_max = width / n, np.full_like(width, n), n
    k = np.arange(n_max) + 0.5
    return y_lo[:, None] + h[:, None] * k, h, k < count[:, None]


def _log_integrand(y, r, sq_norm, tau, d: int, lam: float, lib=np):
    """ln of r^λ exp(-φ(r)) at nodes y = ln r (`lib`: numpy or torch)."""
    q = 4.0 * tau[:, None] * r
    return lam * y - r - 0.5 * d * lib.log1p(q) - sq_norm[:, None] * r / (1.0 + q)


def hjb_log_u_torch(
    sq_norm: Tensor, tau: Tensor, d: int, lam: float = 1.0, n: int | None = None
) -> Tensor:
    """u at points given by |x|² and τ = T - t (1-D tensors of one length), differentiable.

    The nodes are placed from detached values, so derivatives are the same rule applied to the
    differentiated integrand. `hjb_log_u` is the same computation in numpy.

    Arguments:
        sq_norm: |x|² (>= 0).
        tau: time to the terminal time, T - t (>= 0).
        d: space dimension.
        lam: the control cost λ > 0.
        n: midpoint nodes per point across its window; None (the reference setting) takes the
            step `STEP / sqrt(max(λ, 1))` in y instead, with as many nodes as each window needs.
    Returns:
        u `[M]`, in the dtype and on the device of the inputs.
    """
    sq_norm, tau = torch.broadcast_tensors(sq_norm, tau)
    y, h, used = _nodes(sq_norm.detach().cpu().numpy(), tau.detach().cpu().numpy(), d, lam, n)
    y, h = (torch.as_tensor(a, dtype=sq_norm.dtype, device=sq_norm.device) for a in (y, h))
    log_f = _log_integrand(y, torch.exp(y), sq_norm, tau, d, lam, lib=torch)
    log_f = torch.where(torch.as_tensor(used, device=sq_norm.device), log_f, -math.inf)
    log_integral = torch.logsumexp(log_f, dim=-1) + torch.log(h)
    return (math.lgamma(lam) - log_integral) / lam - math.log(2.0)


def hjb_log_u(
    sq_norm: np.ndarray, tau: np.ndarray, d: int, lam: float = 1.0, n: int | None = None
) -> np.ndarray:
    """u at points given by |x|² and τ = T - t (float64), in blocks of bounded memory.

    Arguments as in `hjb_log_u_torch` (any broadcast-compatible shapes); returns an array of
    the broadcast shape.
    """
    if not (isinstance(d, int) and d >= 1):
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if not lam > 0:
        raise ValueError(f"lam must be positive, got {lam}")
    s, t = np.broadcast_arrays(
        np.asarray(sq_norm, dtype=np.float64), np.asarray(tau, dtype=np.float64)
    )
    if np.any(s < 0) or np.any(t < 0):
        raise ValueError("need |x|² >= 0 and tau = T - t >= 0")
    shape = s.shape
    s, t = s.ravel(), t.ravel()
    out = np.empty_like(s)
    if n is None and s.size:  # the most nodes any point needs sets the block size
        y_lo, y_hi = _window(s, t, d, lam)
        nodes = math.ceil(float((y_hi - y_lo).max()) * math.sqrt(max(lam, 1.0)) / STEP)
    else:
        nodes = n or 1
    step = max(1, _CHUNK_ENTRIES // nodes)
    for i in range(0, len(s), step):
        sb, tb = s[i : i + step], t[i : i + step]
        y, h, used = _nodes(sb, tb, d, lam, n)
        log_f = np.where(used, _log_integrand(y, np.exp(y), sb, tb, d, lam), -np.inf)
        peak = log_f.max(axis=1)
        log_integral = peak + np.log(np.exp(log_f - peak[:, None]).sum(axis=1) * h)
        out[i : i + step] = (math.lgamma(lam) - log_integral) / lam - math.log(2.0)
    return out.reshape(shape)
