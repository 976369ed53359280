"""Batched ETDRK4 for 1-D periodic semilinear PDEs u_t = L u + N(u), in Fourier space.

The exponential time-differencing fourth-order Runge–Kutta scheme of Cox & Matthews (2002,
J. Comput. Phys. 176), with its coefficients evaluated by the contour integrals of Kassam &
Trefethen (2005, SIAM J. Sci. Comput. 26): the phi-functions of z = h L are averaged over a
circle of radius 1 around each z, which avoids the cancellation of their textbook formulas for
small |z| (and is harmless for large |z|). For a real L the circle is halved to its upper half
and the real part taken (their trick); a complex L (dispersion) uses the full circle.

Layout: a batch of real states `[..., n]` on the grid x_j = length * j / n (n even), spectra by
`scipy.fft.rfft` over the last axis, `[..., n // 2 + 1]`. `L` is the Fourier symbol of the
linear part (broadcast against the batch: one symbol for all, or one per sample).
`nonlinear(v)` maps spectra to the spectrum of N(u). With `dealias` (default) the state and
every N(u) are truncated to the modes |m| < n / 3 (the 2/3 rule: the product of two truncated
fields aliases only onto discarded modes, so quadratic terms are exact on the kept ones).

numpy/scipy rather than torch: at batches of a few dozen trajectories both cost about the same
per trajectory and step; only at larger batches or grids, where numpy's temporaries fall out of
cache, is torch's CPU FFT faster. The operator datasets therefore solve in batches of 64, where
the simpler numpy code loses nothing (benchmarks/operator_data.py times generation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.fft import irfft, rfft

__all__ = [
    "Progress",
    "Stepper",
    "dealias_mask",
    "fourier_resample",
    "integrate",
    "quadratic_flux",
    "solve_on_grid",
    "to_grid",
    "wavenumbers",
]

Progress = Callable[[int, int], None]
Nonlinear = Callable[[np.ndarray], np.ndarray]


def wavenumbers(n: int, length: float) -> np.ndarray:
    """Angular wavenumbers `[n // 2 + 1]` of the rfft of `n` samples on a period `length`."""
    return 2.0 * math.pi / length * np.arange(n // 2 + 1, dtype=np.float64)


def dealias_mask(n: int) -> np.ndarray:
    """`[n // 2 + 1]` booleans: the modes |m| < n / 3 kept by the 2/3 rule."""
    return np.arange(n // 2 + 1) < n / 3.0


def quadratic_flux(n: int, length: float, coefficient: float = -0.5) -> Nonlinear:
    """N(u) = coefficient * (u^2)_x in Fourier space (default: -(u^2 / 2)_x, the Burgers and
    Kuramoto–Sivashinsky nonlinearity), formed pseudo-spectrally on the `n`-point grid. The
    derivative of the Nyquist mode is taken as zero (it is real, its derivative is not)."""
    ik = coefficient * 1j * wavenumbers(n, length)
    if n % 2 == 0:
        ik[-1] = 0.0

    def nonlinear(v: np.ndarray) -> np.ndarray:
        u = irfft(v, n, axis=-1)
        return ik * rfft(u * u, axis=-1)

    return nonlinear


class Stepper:
    """One ETDRK4 step of size `h` for the symbol `lin` (the coefficient arrays of Cox and
    Matthews, computed once by Kassam and Trefethen's contour integrals with `m` points)."""

    def __init__(self, lin: ArrayLike, h: float, m: int = 32) -> None:
        lin = np.asarray(lin)
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"the time step must be positive and finite, got {h!r}")
        if not np.all(np.isfinite(lin)):
            raise ValueError("the linear symbol has non-finite entries")
        self.h = float(h)
        z = self.h * lin
        self.E = np.exp(z)
        self.E2 = np.exp(z / 2.0)
        real = not np.iscomplexobj(lin) or not np.any(lin.imag)
        if real:  # upper half circle; the real part of the mean is the full-circle mean
            r = np.exp(1j * math.pi * (np.arange(1, m + 1) - 0.5) / m)
        else:
            r = np.exp(2j * math.pi * (np.arange(1, m + 1) - 0.5) / m)
        lr = z[..., None] + r  # [..., modes, m]
        elr = np.exp(lr)

        def mean(values: np.ndarray) -> np.ndarray:
            avg = values.mean(axis=-1)
            return avg.real if real else avg

        lr3 = lr**3
        self.Q = self.h * mean((np.exp(lr / 2.0) - 1.0) / lr)
        self.f1 = self.h * mean((-4.0 - lr + elr * (4.0 - 3.0 * lr + lr * lr)) / lr3)
        self.f2 = self.h * mean((2.0 + lr + elr * (lr - 2.0)) / lr3)
        self.f3 = self.h * mean((-4.0 - 3.0 * lr - lr * lr + elr * (4.0 - lr)) / lr3)

    def __call__(self, v: np.ndarray, nonlinear: Nonlinear) -> np.ndarray:
        """The spectrum one step of `h` after `v`."""
        nv = nonlinear(v)
        a = self.E2 * v + self.Q * nv
        na = nonlinear(a)
        b = self.E2 * v + self.Q * na
        nb = nonlinear(b)
        c = self.E2 * a + self.Q * (2.0 * nb - nv)
        nc = nonlinear(c)
        return self.E * v + self.f1 * nv + 2.0 * self.f2 * (na + nb) + self.f3 * nc


def integrate(
    u0: ArrayLike,
    lin: ArrayLike,
    nonlinear: Nonlinear,
    times: ArrayLike,
    dt: float,
    t0: float = 0.0,
    dealias: bool = True,
    progress: Progress | None = None,
) -> np.ndarray:
    """States at `times` of u_t = L u + N(u) from `u0` at `t0`, by ETDRK4.

    Arguments:
        u0: `[..., n]` real states on the periodic grid (n even).
        lin: the symbol of L, `[n // 2 + 1]` or broadcastable against `[..., n // 2 + 1]`.
        nonlinear: spectra `[..., n // 2 + 1]` -> the spectrum of N(u) (see `quadratic_flux`).
        times: non-decreasing record times, all >= `t0`.
        dt: the largest step; each interval between records takes the fewest equal steps of
            at most `dt` (so records fall exactly on `times`).
        t0: the time of `u0`.
        dealias: apply the 2/3 rule to the state and to every N(u).
        progress: `progress(done, total)` after each record.
    Returns:
        `[..., len(times), n]` float64 states (a record at `t0` is `u0`, dealiased).
    """
    u0 = np.asarray(u0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if u0.ndim < 1 or u0.shape[-1] < 4 or u0.shape[-1] % 2:
        raise ValueError(f"u0 must be [..., n] with n even and >= 4, got shape {u0.shape}")
    if not np.all(np.isfinite(u0)):
        raise ValueError("u0 has non-finite values")
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be positive and finite, got {dt!r}")
    if times.ndim != 1 or len(times) == 0 or not np.all(np.isfinite(times)):
        raise ValueError("times must be a non-empty 1-D array of finite values")
    if times[0] < t0 or np.any(np.diff(times) < 0):
        raise ValueError(f"times must be non-decreasing and >= t0 = {t0}, got {times}")
    n = u0.shape[-1]
    modes = n // 2 + 1
    lin = np.asarray(lin)
    if lin.shape[-1:] != (modes,):
        raise ValueError(f"the symbol must end in {modes} modes for n = {n}, got {lin.shape}")
    mask = dealias_mask(n) if dealias else np.ones(modes, dtype=bool)
    step_n = (lambda v: nonlinear(v) * mask) if dealias else nonlinear

    v = rfft(u0, axis=-1) * mask
    out = np.empty((*u0.shape[:-1], len(times), n))
    steppers: dict[float, Stepper] = {}
    t = float(t0)
    for i, t_rec in enumerate(times):
        span = float(t_rec) - t
        if span > 1e-12 * max(1.0, abs(t_rec)):
            steps = max(1, math.ceil(span / dt - 1e-9))
            h = span / steps
            key = round(h, 12)
            if key not in steppers:
                steppers[key] = Stepper(lin, h)
            stepper = steppers[key]
            for _ in range(steps):
                v = stepper(v, step_n)
            t = float(t_rec)
        out[..., i, :] = irfft(v, n, axis=-1)
        if progress is not None:
            progress(i + 1, len(times))
    return out


def fourier_resample(u: ArrayLike, n_new: int) -> np.ndarray:
    """`u` `[..., n]` (periodic samples, n even) resampled to `n_new` (even) points by its
    trigonometric interpolant: Fourier zero-padding when refining, truncation when
    coarsening (the shared Nyquist mode is split or folded so that refining and then
    coarsening back returns `u`)."""
    u = np.asarray(u, dtype=np.float64)
    n = u.shape[-1]
    if n % 2 or n_new % 2 or n_new < 2:
        raise ValueError(f"resampling needs even sizes, got {n} -> {n_new}")
    if n_new == n:
        return u.copy()
    c = rfft(u, axis=-1)
    m = min(n, n_new) // 2  # the Nyquist index of the coarser grid
    out = np.zeros((*u.shape[:-1], n_new // 2 + 1), dtype=np.complex128)
    out[..., :m] = c[..., :m]
    if n < n_new:  # refine: the coarse Nyquist cosine splits onto +-m
        out[..., m] = 0.5 * c[..., m]
    else:  # coarsen: modes +-m fold onto the coarse Nyquist, where only cosines survive
        out[..., m] = 2.0 * c[..., m].real
    return irfft(out * (n_new / n), n_new, axis=-1)


def to_grid(u: ArrayLike, s: int) -> np.ndarray:
    """States `[..., n]` on the `s`-point grid: every (n/s)-th sample when `s` divides `n`
    (point values, as the published datasets subsample), else `fourier_resample`."""
    u = np.asarray(u, dtype=np.float64)
    n = u.shape[-1]
    if n >= s and n % s == 0:
        return np.ascontiguousarray(u[..., :: n // s])
    return fourier_resample(u, s)


def solve_on_grid(
    start: ArrayLike,
    times: ArrayLike,
    n: int,
    dt: float,
    length: float,
    symbol: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The classical solver as a competitor: from `start` `[..., s]` (data-grid samples) at
    `times[0]`, the states at `times[1:]`, `[..., len(times) - 1, s]`, computed by ETDRK4 with
    the -(u^2/2)_x nonlinearity and the linear symbol `symbol(k)` on an `n`-point grid (`start`
    interpolated there by its Fourier series) and brought back to the data grid."""
    start = np.asarray(start, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if n % 2 or n < 4:
        raise ValueError(f"the solver grid must be even and >= 4, got n = {n}")
    s = start.shape[-1]
    if len(times) < 2:
        return np.empty((*start.shape[:-1], 0, s))
    k = wavenumbers(n, length)
    u0 = fourier_resample(start, n)
    out = integrate(u0, symbol(k), quadratic_flux(n, length), times[1:], dt, t0=float(times[0]))
    return to_grid(out, s)
