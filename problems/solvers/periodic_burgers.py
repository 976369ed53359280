"""Viscous Burgers on the periodic interval [0, 2 pi] with u(x, 0) = sin x + C (LPINN's case).

    u_t + u u_x = nu u_xx,   u(x, t) = C + w(x - C t, t)   (Galilean invariance),

where w solves the same equation from w(x, 0) = sin x. Cole–Hopf: w = -2 nu phi_x / phi with
phi_t = nu phi_xx, phi(x, 0) = exp(k cos x), k = 1 / (2 nu). Two representations of phi:

- `cole_hopf_periodic` (the reference): the heat-kernel convolution on the real line, by
  Gauss–Hermite quadrature. It is the same integral as Raissi's Burgers after
  x = pi (1 + xi), t = pi tau, nu = pi nu', so it reuses `cole_hopf.cole_hopf_hermite`
  (log-sum-exp scaled, tested there against a trapezoid rule and published values).
- `cole_hopf_bessel`: the Fourier series exp(k cos x) = I_0(k) + 2 sum_n I_n(k) cos(n x) with
  each mode decaying by exp(-nu n^2 t). phi spans e^{-k} .. e^{k}, so where phi is small
  (x near pi) the sum cancels and its relative error is ~eps e^{2k} = eps e^{1/nu}: exact to
  ~1e-12 for nu >= 0.1, useless for nu = 0.01 (e^{100}). An independent check at large nu.

`solve_burgers_spectral` is a third, independent route for any smooth periodic u0: 2/3-dealiased
Fourier pseudo-spectral method of lines integrated by scipy's DOP853.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.fft import irfft, rfft
from scipy.integrate import solve_ivp
from scipy.special import ive

from problems.solvers.cole_hopf import cole_hopf_hermite

__all__ = [
    "N_HERMITE",
    "NU_MIN",
    "bessel_terms",
    "cole_hopf_bessel",
    "cole_hopf_periodic",
    "solve_burgers_spectral",
]

N_HERMITE = 256
"""Gauss–Hermite nodes: converged to round-off for nu >= NU_MIN, t <= 1 (test_convection.py)."""

NU_MIN = 1e-3
"""Smallest viscosity whose Cole–Hopf quadrature is verified converged on t in [0, 1]."""

TWO_PI = 2.0 * math.pi


def cole_hopf_periodic(
    x: ArrayLike, t: ArrayLike, nu: float, c: float = 0.0, n: int = N_HERMITE
) -> np.ndarray:
    """u(x, t) for u0 = sin x + `c`, by Gauss–Hermite quadrature of the Cole–Hopf integral.

    Arguments:
        x, t: coordinates, broadcast-compatible (t >= 0); x any real (the solution is periodic).
        nu: viscosity (> 0; converged to round-off for nu >= NU_MIN, t <= 1).
        c: the constant added to the initial condition (a Galilean shift).
        n: Gauss–Hermite nodes (<= 360).
    Returns:
        u with the broadcast shape of `x` and `t` (float64).
    """
    x, t = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    xi = np.mod(x - c * t, TWO_PI) / math.pi - 1.0  # x - c t in [0, 2 pi) -> xi in [-1, 1)
    return c + cole_hopf_hermite(xi, t / math.pi, nu / math.pi, n=n)


def bessel_terms(nu: float, tol: float = 1e-17) -> int:
    """Fourier modes after which every further I_n(k) / I_0(k) is below `tol` (k = 1/(2 nu))."""
    k = 1.0 / (2.0 * nu)
    i0 = ive(0, k)
    n = 1
    while ive(n, k) > tol * i0:  # I_n(k) decreases in n for fixed k
        n *= 2
    lo, hi = n // 2, n  # bisect for the first n with I_n below tol
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ive(mid, k) > tol * i0 else (lo, mid)
    return hi


def cole_hopf_bessel(
    x: ArrayLike, t: ArrayLike, nu: float, c: float = 0.0, n_terms: int | None = None
) -> np.ndarray:
    """u(x, t) for u0 = sin x + `c` by the Fourier–Bessel series of phi (reliable for
    nu >= ~0.1 only: see the module docstring).

    Arguments:
        x, t: coordinates, broadcast-compatible (t >= 0).
        nu: viscosity (> 0).
        c: the constant added to the initial condition.
        n_terms: modes n = 1..n_terms (None: `bessel_terms(nu)`).
    Returns:
        u with the broadcast shape of `x` and `t` (float64).
    """
    x, t = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    shape = x.shape
    xs, ts = (x - c * t).ravel(), t.ravel()
    k = 1.0 / (2.0 * nu)
    m = bessel_terms(nu) if n_terms is None else n_terms
    n = np.arange(1, m + 1, dtype=np.float64)
    amp = 2.0 * ive(n, k) * np.exp(-nu * np.outer(ts, n * n))  # ive: e^{-k} I_n(k), cancels
    phi = ive(0, k) + np.einsum("ij,ij->i", amp, np.cos(np.outer(xs, n)))
    phi_x = -np.einsum("ij,ij->i", amp * n, np.sin(np.outer(xs, n)))
    return (c - 2.0 * nu * phi_x / phi).reshape(shape)


def solve_burgers_spectral(
    u0: ArrayLike, nu: float, times: ArrayLike, rtol: float = 1e-12, atol: float = 1e-13
) -> np.ndarray:
    """Integrate u_t + (u^2/2)_x = nu u_xx on [0, 2 pi) from samples `u0` on the grid
    2 pi j / N (N even), by a Fourier pseudo-spectral method of lines: the quadratic term
    2/3-dealiased (modes above N/3 zeroed), DOP853 in time.

    Returns:
        `[len(times), N]`, the solution on the grid at `times` (t >= 0, non-decreasing).
    """
    u0 = np.asarray(u0, dtype=np.float64)
    n = u0.size
    if n % 2:
        raise ValueError(f"need an even number of grid points, got {n}")
    k = np.arange(n // 2 + 1, dtype=np.float64)
    keep = k < n / 3.0  # the 2/3 rule: products of kept modes alias onto dropped ones only
    ik, nuk2 = 1j * k * keep, nu * k * k

    def rhs(_t: float, u: np.ndarray) -> np.ndarray:
        uh = rfft(u) * keep
        v = irfft(uh, n)
        return irfft(-0.5 * ik * rfft(v * v) - nuk2 * uh, n)

    times = np.asarray(times, dtype=np.float64)
    out = np.empty((times.size, n))
    u, t0 = irfft(rfft(u0) * keep, n), 0.0
    for i, t1 in enumerate(times):  # step ends, not the dense output (~1e-9 errors between)
        if t1 > t0:
            sol = solve_ivp(rhs, (t0, t1), u, method="DOP853", rtol=rtol, atol=atol)
            if not sol.success:
                raise RuntimeError(f"the spectral Burgers integration failed: {sol.message}")
            u, t0 = sol.y[:, -1], t1
        out[i] = u
    return out
