"""Fourier pseudo-spectral solver for the focusing cubic nonlinear Schrödinger equation.

    i psi_t + 1/2 psi_xx + |psi|^2 psi = 0,   x periodic with period `length`.

Space: the Fourier collocation grid x_j = x_0 + j length / n (no endpoint). Time: the
integrating factor v_k(t) = exp(i k^2 t / 2) psi_k(t) removes the stiff, exactly solvable
dispersion, so the adaptive 8th-order Dormand–Prince integrator (scipy's DOP853) only resolves
the nonlinear time scale, and its tolerance is the only time-discretisation parameter.

The semi-discrete system is Hamiltonian, so it conserves the grid mass `mass` and the grid
energy `energy` exactly; in the computed solution they drift only by the time integrator's
error, which makes them sharp checks. Used for the references of `problems/nlse.py`.

`split_step` is the batched fixed-step alternative (split-step Fourier: Strang, or Yoshida's
4th-order composition) that generates the operator data of `problems/nlse_op.py`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.fft import fft, ifft
from scipy.integrate import solve_ivp

__all__ = [
    "SPLIT_SCHEMES",
    "energy",
    "grid",
    "mass",
    "resample",
    "solve_nlse",
    "spectral_dx",
    "split_step",
    "wavenumbers",
]


def grid(n: int, length: float, x0: float = 0.0) -> np.ndarray:
    """The periodic collocation grid `x0 + j * length / n`, j = 0..n-1 (no endpoint)."""
    return x0 + length * np.arange(n) / n


def wavenumbers(n: int, length: float) -> np.ndarray:
    """Angular wavenumbers `2 pi m / length` in FFT order (m = 0, 1, ..., -1)."""
    return 2.0 * np.pi * np.fft.fftfreq(n, d=1.0 / n) / length


def spectral_dx(psi: ArrayLike, length: float) -> np.ndarray:
    """Spectral x-derivative of periodic samples `psi` along the last axis.

    The Nyquist mode of an even grid is dropped (its derivative is not representable).
    """
    psi = np.asarray(psi)
    n = psi.shape[-1]
    k = wavenumbers(n, length)
    if n % 2 == 0:
        k[n // 2] = 0.0
    d = ifft(1j * k * fft(psi, axis=-1), axis=-1)
    return d if np.iscomplexobj(psi) else d.real


def mass(psi: ArrayLike, length: float) -> np.ndarray:
    """N = int |psi|^2 dx over one period (rectangle rule on the periodic grid, last axis)."""
    psi = np.asarray(psi)
    return np.sum(np.abs(psi) ** 2, axis=-1) * (length / psi.shape[-1])


def energy(psi: ArrayLike, length: float, parts: bool = False) -> np.ndarray | tuple:
    """H = int (1/2 |psi_x|^2 - 1/2 |psi|^4) dx, the conserved Hamiltonian of this equation.

    With this sign, i psi_t = dH/d(conj psi). The kinetic part is summed in Fourier space
    (Parseval) with the same k^2 as the solver, Nyquist mode included, so this is exactly the
    semi-discrete system's invariant. `parts=True` returns `(K, U)` (both >= 0, H = K - U).
    """
    psi = np.asarray(psi, dtype=np.complex128)
    n = psi.shape[-1]
    c = fft(psi, axis=-1) / n
    kinetic = 0.5 * length * np.sum(wavenumbers(n, length) ** 2 * np.abs(c) ** 2, axis=-1)
    potential = 0.5 * np.sum(np.abs(psi) ** 4, axis=-1) * (length / n)
    return (kinetic, potential) if parts else kinetic - potential


def solve_nlse(
    psi0: ArrayLike,
    length: float,
    times: ArrayLike,
    rtol: float = 1e-10,
    dealias: bool = False,
) -> np.ndarray:
    """Integrate i psi_t + 1/2 psi_xx + |psi|^2 psi = 0 from psi(t=0) = `psi0`.

    Arguments:
        psi0: initial field(s) `[..., n]` on the periodic grid `grid(n, length, x0)` (any x0),
            complex or real. Leading axes are a batch; each member is integrated on its own,
            so its accuracy does not depend on the rest of the batch.
        length: the period (domain length).
        times: output times `[T]`, non-decreasing, >= 0 (a 0 returns `psi0` itself).
        rtol: bound on each step's local error, in the l2 norm over all modes, relative to the
            field's root-mean-square amplitude (which the equation conserves). A norm over the
            whole field, unlike scipy's per-component RMS test, does not loosen as n grows; this
            matters where modulational instability amplifies small errors.
        dealias: apply the 2/3 rule (zero the top third of wavenumbers) to the initial field
            and to the nonlinear term. Off by default: for a resolved field it changes nothing,
            and the undealiased collocation scheme conserves `mass` and `energy` exactly.

    Returns:
        psi at `times`, complex128 `[..., T, n]`.
    """
    psi0 = np.asarray(psi0)
    if psi0.ndim < 1 or psi0.shape[-1] < 2:
        raise ValueError(f"psi0 must have shape [..., n] with n >= 2, got {psi0.shape}")
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError("times must be a non-empty 1-D array")
    if not np.all(np.isfinite(times)) or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be finite, >= 0 and non-decreasing")
    if not (np.isfinite(length) and length > 0):
        raise ValueError(f"length must be a finite number > 0, got {length!r}")
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be a finite number > 0, got {rtol!r}")
    if not np.all(np.isfinite(psi0)):
        raise ValueError("psi0 must be finite")

    batch = psi0.shape[:-1]
    n = psi0.shape[-1]
    flat = psi0.reshape(-1, n).astype(np.complex128)
    out = np.empty((flat.shape[0], times.size, n), dtype=np.complex128)
    for b, member in enumerate(flat):
        out[b] = _solve_one(member, length, times, rtol, dealias)
    return out.reshape(*batch, times.size, n)


def _solve_one(
    psi0: np.ndarray, length: float, times: np.ndarray, rtol: float, dealias: bool
) -> np.ndarray:
    n = psi0.size
    half_k2 = 0.5 * wavenumbers(n, length) ** 2
    keep = np.abs(np.fft.fftfreq(n, d=1.0 / n)) <= n / 3 if dealias else None

    c0 = fft(psi0) / n  # Fourier amplitudes; by Parseval ||c||_2 is the RMS of psi
    if keep is not None:
        c0 = np.where(keep, c0, 0.0)
    # scipy accepts a step when sqrt(mean((err_i / (atol + rtol_i |y_i|))^2)) <= 1 over the 2n
    # real components; a uniform atol = tol / sqrt(2n) makes that ||err||_2 <= tol.
    tol = rtol * (float(np.linalg.norm(c0)) or 1.0)
    atol = tol / np.sqrt(2 * n)
    rtol_floor = 100 * np.finfo(np.float64).eps  # scipy's smallest rtol; atol dominates

    # Integrating factor, restarted at each output time t_i: v(s) = exp(i k^2 s/2) c(t_i + s),
    # dv/ds = exp(i k^2 s/2) * i FFT(|psi|^2 psi). Restarting keeps the phases k^2 s/2 small
    # (no round-off growth over long horizons) and lands every output exactly on a step,
    # with no dense-output interpolation. The state is the complex vector viewed as 2n reals:
    # scipy's error norm on a complex state goes through a mixed complex/real BLAS product
    # that is erratically slow.
    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        phase = np.exp(1j * half_k2 * s)
        psi = ifft(y.view(np.complex128) / phase) * n
        nonlinear = fft(np.abs(psi) ** 2 * psi) / n
        if keep is not None:
            nonlinear = np.where(keep, nonlinear, 0.0)
        return (1j * phase * nonlinear).view(np.float64)

    out = np.empty((times.size, n), dtype=np.complex128)
    c = c0
    t_now = 0.0
    step: float | None = None  # the integrator's last full step, carried across segments
    for i, t_next in enumerate(times):
        span = t_next - t_now
        if span > 0:
            sol = solve_ivp(
                rhs,
                (0.0, span),
                c.view(np.float64),
                method="DOP853",
                rtol=rtol_floor,
                atol=atol,
                first_step=None if step is None else min(step, span),
            )
            if not sol.success:
                raise RuntimeError(f"NLSE integration failed at t = {t_now}: {sol.message}")
            v = np.ascontiguousarray(sol.y[:, -1]).view(np.complex128)
            c = np.exp(-1j * half_k2 * span) * v
            if sol.t.size >= 3:  # the last step may be cut short to land on t_next
                step = float(sol.t[-2] - sol.t[-3])
            t_now = t_next
        out[i] = psi0 if t_now == 0.0 and keep is None else ifft(c) * n
    return out


# -- batched split-step Fourier ----------------------------------------------------------------
# A step is a composition of kicks (the nonlinear flow psi -> psi exp(i |psi|^2 tau), exact
# since |psi| is constant along it) and drifts (the linear flow psi_k -> psi_k exp(-i k^2 tau/2),
# exact in Fourier space), as fractions of dt: (kicks, drifts), kick, drift, kick, ..., kick.
# Strang is order 2; Yoshida's triple jump of Strang (weights w1, w0, w1) is order 4.
_W1 = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_W0 = 1.0 - 2.0 * _W1
SPLIT_SCHEMES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "strang": ((0.5, 0.5), (1.0,)),
    "yoshida4": ((_W1 / 2, (_W1 + _W0) / 2, (_W0 + _W1) / 2, _W1 / 2), (_W1, _W0, _W1)),
}


def split_step(
    psi0: ArrayLike, length: float, times: ArrayLike, dt: float, scheme: str = "yoshida4"
) -> np.ndarray:
    """Integrate i psi_t + 1/2 psi_xx + |psi|^2 psi = 0 from `psi0` at t = 0 by split-step
    Fourier with fixed steps: a batch advances together (vectorised FFTs), unlike `solve_nlse`.

    Both flows are exact and unitary, so the grid `mass` is conserved to round-off for any dt;
    the schemes are symplectic, so the `energy` error stays bounded at O(dt^order). Adjacent
    kicks of consecutive steps are merged, except at output times: a restart from an output
    reproduces the rest of the run.

    Arguments:
        psi0: initial field(s) `[..., n]` on a periodic grid of period `length`.
        times: output times `[T]`, non-decreasing, >= 0; every gap (and times[0]) must be a
            whole number of steps `dt`.
        scheme: `strang` (order 2) or `yoshida4` (order 4, three Strang steps per step).

    Returns:
        psi at `times`, complex128 `[..., T, n]`.
    """
    psi0 = np.asarray(psi0)
    if psi0.ndim < 1 or psi0.shape[-1] < 2 or not np.all(np.isfinite(psi0)):
        raise ValueError(f"psi0 must be finite with shape [..., n], n >= 2, got {psi0.shape}")
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"scheme must be one of {list(SPLIT_SCHEMES)}, got {scheme!r}")
    if not (np.isfinite(dt) and dt > 0) or not (np.isfinite(length) and length > 0):
        raise ValueError(f"dt and length must be finite numbers > 0, got {dt!r}, {length!r}")
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or times[0] < 0 or np.any(np.diff(times) < 0):
        raise ValueError("times must be a non-empty 1-D array, >= 0 and non-decreasing")
    gaps = np.diff(np.concatenate([[0.0], times])) / dt
    counts = np.rint(gaps).astype(np.int64)
    if np.any(np.abs(gaps - counts) > 1e-9 * np.maximum(gaps, 1.0)):
        raise ValueError(f"every gap between output times must be a whole number of dt = {dt!r}")

    batch, n = psi0.shape[:-1], psi0.shape[-1]
    psi = psi0.reshape(-1, n).astype(np.complex128)
    kicks, drifts = SPLIT_SCHEMES[scheme]
    half_k2 = 0.5 * wavenumbers(n, length) ** 2
    factors = [np.exp(-1j * half_k2 * (b * dt)) for b in drifts]
    out = np.empty((psi.shape[0], times.size, n), dtype=np.complex128)
    for i, count in enumerate(counts):
        pending = 0.0  # kick fraction not yet applied
        for _ in range(count):
            for j, factor in enumerate(factors):
                pending += kicks[j]
                psi = psi * np.exp(1j * (pending * dt) * (psi.real**2 + psi.imag**2))
                psi = ifft(factor * fft(psi, axis=-1), axis=-1)
                pending = 0.0
            pending += kicks[-1]
        if pending:
            psi = psi * np.exp(1j * (pending * dt) * (psi.real**2 + psi.imag**2))
        out[:, i] = psi
    return out.reshape(*batch, times.size, n)


def resample(psi: ArrayLike, n: int) -> np.ndarray:
    """Periodic samples `[..., m]` on an n-point grid of the same period by Fourier truncation
    (n < m) or zero-padding (n > m); the Nyquist mode of the smaller even grid is dropped.
    Complex in, complex out; the identity when n == m."""
    psi = np.asarray(psi)
    m = psi.shape[-1]
    if n == m:
        return psi
    c = fft(psi, axis=-1)
    out = np.zeros((*psi.shape[:-1], n), dtype=np.complex128)
    k = (min(m, n) + 1) // 2  # modes 0..k-1 and -(k-1)..-1
    out[..., :k] = c[..., :k]
    if k > 1:
        out[..., -(k - 1) :] = c[..., -(k - 1) :]
    return ifft(out, axis=-1) * (n / m)
