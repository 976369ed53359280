"""Closed forms and analysis of the oscillator problems (`problems/oscillators.py`): the exact
Duffing (Jacobi cn) and Adler solutions, the free MEMS oscillator's limit cycle by shooting,
and the Adler reduction of the injection-locked MEMS oscillator (its derivation is in
`problems/oscillators.py`'s module docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import brentq
from scipy.special import ellipj, ellipk

from problems.solvers.ode import Rhs

__all__ = [
    "AdlerReduction",
    "adler_phase",
    "adler_slip_period",
    "duffing_cn",
    "slow_phase",
    "vdp_duffing",
    "vdp_duffing_limit_cycle",
]


# -- closed forms -------------------------------------------------------------------------------
def duffing_cn(
    t: np.ndarray, alpha: float, beta: float, amplitude: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (u, u') of u'' + alpha u + beta u^3 = 0, u(0) = amplitude, u'(0) = 0.

    u = A cn(W t | m), u' = -A W sn dn, with W^2 = alpha + beta A^2, m = beta A^2 / (2 W^2);
    valid for beta >= 0 and alpha + beta A^2 / 2 > 0 (then 0 <= m < 1). The argument is reduced
    modulo the period 4 K(m) first, which keeps scipy's `ellipj` accurate at large t.
    """
    w2 = alpha + beta * amplitude**2
    m = beta * amplitude**2 / (2.0 * w2)
    if beta < 0 or not 0 <= m < 1 or w2 <= 0:
        raise ValueError("the cn solution needs beta >= 0 and alpha + beta A^2 / 2 > 0")
    w = math.sqrt(w2)
    arg = np.mod(w * np.asarray(t, dtype=np.float64), 4.0 * ellipk(m))
    sn, cn, dn, _ = ellipj(arg, m)
    return amplitude * cn, -amplitude * w * sn * dn


def adler_phase(t: np.ndarray, nu: float, K: float, phi0: float) -> np.ndarray:
    """Exact solution of phi' = nu - K sin(phi), phi(0) = phi0, continuous in t (unwrapped).

    Evaluates (x, y)(t) = exp(A t)(cos(phi0/2), sin(phi0/2)) in closed form (module docstring)
    and returns phi = 2 arg(x + i y), unwrapped: the phase moves monotonically in the direction
    of phi'(0), by less than 2 pi (locked, and within one slip period), so the half-angle change
    lies in [0, pi) or (-pi, 0] and the branch is fixed by that sign. In the slip regime t is
    first reduced modulo the period T, and each whole period adds 2 pi sign(nu).
    """
    t = np.asarray(t, dtype=np.float64)
    shape = t.shape
    t = t.ravel()
    a = np.array([[K / 2, -nu / 2], [nu / 2, -K / 2]])
    v0 = np.array([math.cos(phi0 / 2), math.sin(phi0 / 2)])
    av0 = a @ v0
    disc = nu * nu - K * K
    turns = np.zeros_like(t)
    if disc > 0:  # phase slips
        om = math.sqrt(disc)
        period = 2 * math.pi / om
        turns = np.floor(t / period)
        s = om * (t - turns * period) / 2
        v = np.cos(s)[:, None] * v0 + ((2 / om) * np.sin(s))[:, None] * av0
    elif disc < 0:  # locked: tanh keeps exp(A t) v0 bounded (only its direction matters)
        g = math.sqrt(-disc)
        v = v0 + ((2 / g) * np.tanh(g * t / 2))[:, None] * av0
    else:  # the saddle-node point |nu| = K
        v = v0 + t[:, None] * av0
    centre = math.copysign(math.pi / 2, nu - K * math.sin(phi0))
    if nu - K * math.sin(phi0) == 0:  # at a fixed point
        centre = 0.0
    half = np.arctan2(v[:, 1], v[:, 0]) - phi0 / 2 - centre
    half = np.mod(half + math.pi, 2 * math.pi) - math.pi + centre
    phi = phi0 + 2 * half + 2 * math.pi * math.copysign(1.0, nu) * turns
    return phi.reshape(shape)


def adler_slip_period(nu: float, K: float) -> float:
    """Time of one 2 pi phase slip, 2 pi / sqrt(nu^2 - K^2) (|nu| > K)."""
    if not abs(nu) > abs(K):
        raise ValueError("the phase slips only for |nu| > |K|")
    return 2 * math.pi / math.sqrt(nu * nu - K * K)


# -- the MEMS oscillator ----------------------------------------------------------------------
def vdp_duffing(eps: float, mu: float, kappa: float, f: float = 0.0, omega: float = 0.0) -> Rhs:
    """The first-order system of the MEMS oscillator (free when f = 0)."""

    def rhs(t: float, y: np.ndarray) -> tuple[float, float]:
        u, v = y
        force = eps * eps * f * math.cos(omega * t)
        return v, -u + eps * (mu * (1 - u * u) * v - kappa * u**3) + force

    return rhs


def _turning_point(direction: float):
    """A terminal scipy event at u' = 0: a minimum of u (direction +1) or a maximum (-1)."""

    def event(t: float, y: np.ndarray) -> float:
        return y[1]

    event.terminal, event.direction = True, direction  # type: ignore[attr-defined]
    return event


@lru_cache(maxsize=64)
def vdp_duffing_limit_cycle(eps: float, mu: float, kappa: float) -> tuple[float, float]:
    """Amplitude (u at u' = 0) and period of the free oscillator's limit cycle, by shooting.

    The return map from (A, 0) to the next maximum of u is solved for its fixed point by Brent's
    method; each evaluation integrates one period at DOP853 rtol 1e-13, so both numbers are
    accurate to ~1e-12.
    """
    rhs = vdp_duffing(eps, mu, kappa)

    minimum, maximum = _turning_point(1.0), _turning_point(-1.0)
    kw = {"method": "DOP853", "rtol": 1e-13, "atol": 1e-13}

    def ret(amp: float) -> tuple[float, float]:
        half = solve_ivp(rhs, (0.0, 100.0), [amp, 0.0], events=minimum, **kw)
        full = solve_ivp(rhs, (half.t[-1], 200.0), half.y[:, -1], events=maximum, **kw)
        if not (half.status == 1 and full.status == 1):
            raise RuntimeError("no limit cycle found: the free oscillator does not oscillate")
        return float(full.y_events[0][0][0]) - amp, float(full.t_events[0][0])

    try:
        amp = brentq(lambda a: ret(a)[0], 0.5, 4.0, xtol=1e-14, rtol=1e-14)
    except ValueError:  # no sign change: no cycle through u' = 0 with 0.5 < u < 4
        raise RuntimeError("no limit cycle of amplitude between 0.5 and 4 was found") from None
    return amp, ret(amp)[1]


@dataclass(frozen=True)
class AdlerReduction:
    """Adler's equation for the slow phase of `mems_snic` (module docstring), in time t.

    Attributes: `nu` (detuning omega - Omega0), `K` (locking strength), `offset` (beta),
    `omega` (drive), `omega0` and `amplitude` (free limit cycle: frequency, max u).
    """

    nu: float
    K: float
    offset: float
    omega: float
    omega0: float
    amplitude: float

    @property
    def locked(self) -> bool:
        return abs(self.nu) < self.K

    def phase(self, t: np.ndarray, phi0: float) -> np.ndarray:
        """Adler's prediction phi(t) from phi(0) = phi0."""
        return adler_phase(t, self.nu, self.K, phi0)


def slow_phase(t: np.ndarray, u: np.ndarray, v: np.ndarray, red: AdlerReduction) -> np.ndarray:
    """The Adler phase phi = beta - pi/2 - psi of a full trajectory (u, u') at times `t`.

    psi is the phase of u - i u'/omega = a e^{i(omega t + psi)} relative to the drive; `t` must
    sample the trajectory finely enough to unwrap (several points per drive period).
    """
    z = np.asarray(u) - 1j * np.asarray(v) / red.omega
    psi = np.unwrap(np.angle(z)) - red.omega * np.asarray(t)
    return red.offset - math.pi / 2 - psi
