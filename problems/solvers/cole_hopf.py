"""Exact solution of viscous Burgers, u_t + u u_x = nu u_xx, u(x, 0) = -sin(pi x), by Cole–Hopf.

The Cole–Hopf transform turns the solution into a ratio of two heat-kernel integrals,

    u(x, t) = -∫ sin(pi y) f(y) K(x - y) dy / ∫ f(y) K(x - y) dy,
    f(y) = exp(-cos(pi y) / (2 pi nu)),   K(eta) = exp(-eta^2 / (4 nu t)),

evaluated here in float64 by two independent rules so each validates the other:

- `cole_hopf_hermite`: Gauss–Hermite quadrature after eta = 2 sqrt(nu t) s (Basdevant et al.,
  Comput. Fluids 14 (1986)); also `cole_hopf_hermite_dx` for the analytic slope u_x.
- `cole_hopf_trapezoid`: the uniform trapezoid rule in y = x - eta over a window of
  +-`width` sqrt(nu t), spectrally accurate because the integrand is negligible at the ends.

f spans e^{+-1/(2 pi nu)} (e^{+-50} for nu = 0.01/pi), so both rules work with the exponents and
subtract their per-point maximum (log-sum-exp scaling): nothing overflows and the common factor
cancels in the ratio. At t = 0 both return the initial condition exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.polynomial.hermite import hermgauss

__all__ = [
    "NU_RAISSI",
    "cole_hopf_hermite",
    "cole_hopf_hermite_dx",
    "cole_hopf_trapezoid",
]

NU_RAISSI = 0.01 / math.pi
"""Raissi et al.'s viscosity, 0.01/pi."""

_CHUNK_ENTRIES = 1 << 20  # points x nodes per block: bounds temporaries to ~8 MiB each


@lru_cache(maxsize=8)
def _hermite_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and log-weights (weights for exp(-s^2))."""
    if n < 1:
        raise ValueError(f"need at least one Gauss–Hermite node, got n={n}")
    with np.errstate(all="ignore"):
        s, w = hermgauss(n)
    if not np.all(np.isfinite(w) & (w > 0)):  # numpy's weights overflow beyond n ~ 370
        raise ValueError(f"numpy's Gauss–Hermite weights are not finite for n={n}; use n <= 360")
    return s, np.log(w)


def _prepare(x: np.ndarray, t: np.ndarray, nu: float) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Broadcast `x`, `t` to a common shape and flatten them; check `nu` and `t`."""
    if not nu > 0:
        raise ValueError(f"nu must be positive, got {nu}")
    x, t = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    if np.any(t < 0):
        raise ValueError("the Cole–Hopf formula holds for t >= 0 only")
    return x.ravel(), t.ravel(), x.shape


def _blocked(
    x: np.ndarray,
    t: np.ndarray,
    shape: tuple,
    n_nodes: int,
    block: Callable[[np.ndarray, np.ndarray], np.ndarray],
    at_zero: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Apply `block` to the t > 0 points in chunks of bounded size; `at_zero` to t = 0."""
    out = np.empty_like(x)
    zero = t == 0
    out[zero] = at_zero(x[zero])
    idx = np.flatnonzero(~zero)
    step = max(1, _CHUNK_ENTRIES // n_nodes)
    for i in range(0, len(idx), step):
        j = idx[i : i + step]
        out[j] = block(x[j], t[j])
    return out.reshape(shape)


def _weighted_log_f(y: np.ndarray, log_w: np.ndarray, nu: float) -> np.ndarray:
    """log(w f(y)) minus its row maximum, so that exp() of it lies in (0, 1]."""
    a = log_w - np.cos(np.pi * y) / (2.0 * np.pi * nu)
    return a - a.max(axis=1, keepdims=True)


def cole_hopf_hermite(
    x: np.ndarray, t: np.ndarray, nu: float = NU_RAISSI, n: int = 128
) -> np.ndarray:
    """u(x, t) by `n`-point Gauss–Hermite quadrature.

    Arguments:
        x, t: coordinates, any broadcast-compatible shapes (t >= 0).
        nu: viscosity (> 0).
        n: number of Gauss–Hermite nodes; 128 is converged to round-off for nu = 0.01/pi, t <= 1.
    Returns:
        u with the broadcast shape of `x` and `t` (float64).
    """
    x, t, shape = _prepare(x, t, nu)
    s, log_w = _hermite_rule(n)

    def block(xb: np.ndarray, tb: np.ndarray) -> np.ndarray:
        y = xb[:, None] - 2.0 * np.sqrt(nu * tb)[:, None] * s[None, :]
        e = np.exp(_weighted_log_f(y, log_w, nu))
        return -np.einsum("ij,ij->i", e, np.sin(np.pi * y)) / e.sum(axis=1)

    return _blocked(x, t, shape, n, block, lambda xz: -np.sin(np.pi * xz))


def cole_hopf_hermite_dx(
    x: np.ndarray, t: np.ndarray, nu: float = NU_RAISSI, n: int = 128
) -> np.ndarray:
    """The slope u_x(x, t), differentiating the Gauss–Hermite ratio analytically.

    With <.> the f-weighted mean over the nodes, u_x = -pi <cos(pi y)> - Var(sin(pi y)) / (2 nu);
    the variance is taken about the mean (two passes), which avoids cancellation at the shock.
    Arguments and return as in `cole_hopf_hermite`.
    """
    x, t, shape = _prepare(x, t, nu)
    s, log_w = _hermite_rule(n)

    def block(xb: np.ndarray, tb: np.ndarray) -> np.ndarray:
        y = xb[:, None] - 2.0 * np.sqrt(nu * tb)[:, None] * s[None, :]
        p = np.exp(_weighted_log_f(y, log_w, nu))
        p /= p.sum(axis=1, keepdims=True)
        sin = np.sin(np.pi * y)
        mean_sin = np.einsum("ij,ij->i", p, sin)
        var_sin = np.einsum("ij,ij->i", p, (sin - mean_sin[:, None]) ** 2)
        return -np.pi * np.einsum("ij,ij->i", p, np.cos(np.pi * y)) - var_sin / (2.0 * nu)

    return _blocked(x, t, shape, n, block, lambda xz: -np.pi * np.cos(np.pi * xz))


def cole_hopf_trapezoid(
    x: np.ndarray,
    t: np.ndarray,
    nu: float = NU_RAISSI,
    width: float = 40.0,
    per_scale: float = 4.0,
) -> np.ndarray:
    """u(x, t) by the trapezoid rule in y = x - eta, independent of the Gauss–Hermite rule.

    The window is |eta| <= `width` sqrt(nu t), where the heat kernel has fallen to e^{-width^2/4}
    (e^{-400} by default: far below the e^{100} spread of f). The spacing resolves the
    integrand's smallest length scale, 1 / sqrt(pi/(2 nu) + 1/(2 nu t)) (the curvature bound of
    its exponent), with `per_scale` points per scale. The trapezoid rule converges exponentially
    here because the integrand is analytic and negligible at both ends of the window.

    Arguments:
        x, t: coordinates, any broadcast-compatible shapes (t >= 0).
        nu: viscosity (> 0).
        width: half-window in units of sqrt(nu t).
        per_scale: nodes per smallest length scale of the integrand.
    Returns:
        u with the broadcast shape of `x` and `t` (float64).
    """
    x, t, shape = _prepare(x, t, nu)
    pos = t > 0
    # Nodes per point: the same for all points, set by the point that needs the most.
    sig = np.sqrt(nu * t[pos])
    scale = 1.0 / np.sqrt(np.pi / (2.0 * nu) + 1.0 / (2.0 * sig**2)) if pos.any() else np.ones(1)
    n = int(np.ceil(2.0 * width * np.max(sig / scale, initial=1.0) * per_scale)) + 1
    z = np.linspace(-width, width, n)  # eta = sqrt(nu t) z; the end weights (1/2) are negligible
    log_k = -(z**2) / 4.0

    def block(xb: np.ndarray, tb: np.ndarray) -> np.ndarray:
        y = xb[:, None] - np.sqrt(nu * tb)[:, None] * z[None, :]
        e = np.exp(_weighted_log_f(y, log_k, nu))
        return -np.einsum("ij,ij->i", e, np.sin(np.pi * y)) / e.sum(axis=1)

    return _blocked(x, t, shape, n, block, lambda xz: -np.sin(np.pi * xz))
