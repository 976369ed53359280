"""Michel's transonic accretion of a polytropic gas onto a Schwarzschild black hole, algebraically.

Steady, spherical, radial inflow (G = c = 1, mass M, p = K rho^Gamma) conserves two quantities
along r (Michel 1972, Astrophys. Space Sci. 15, 153):

    mass flux   C1 = rho u r^2,                    u = |u^r| = gamma_v v sqrt(1 - 2M/r),
    Bernoulli   C2 = h sqrt(1 - 2M/r + u^2) = h gamma_v sqrt(1 - 2M/r),

with v the speed measured by static observers, gamma_v = 1/sqrt(1 - v^2), specific enthalpy
h = 1 + Gamma K rho^(Gamma-1)/(Gamma-1) and sound speed a^2 = Gamma K rho^(Gamma-1)/h. The flow
that is subsonic far out and supersonic near the hole passes through the sonic (critical) point

    u_c^2 = M/(2 r_c),   a_c^2 = u_c^2/(1 - 3 u_c^2),

which fixes rho_c, C1 and C2 from r_c alone. At every other r the solution is a root of one
scalar equation in xi = ln(rho/rho_c): at fixed r, G(xi) = ln(C2(xi)/C2_c) with u from C1 has its
minimum where v = a (the sonic root xi_s) and two roots, one on each side; the transonic branch
takes the subsonic (larger) root for r > r_c and the supersonic one for r < r_c. No ODE is
integrated.

Near r_c the two roots merge (the level set of C2 crosses itself there), so G is evaluated in
relative form, every term a `log1p`/`expm1` of a small difference from its sonic value; that
keeps the roots accurate to ~1e-13 in xi for every r, including r within 1e-9 of r_c (tested
against 40-digit mpmath).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq

__all__ = ["MichelAccretion", "bernoulli", "mass_flux", "min_sonic_radius"]

_EPS = np.finfo(np.float64).eps


def min_sonic_radius(M: float, Gamma: float) -> float:
    """Smallest sonic radius with a finite sonic density: a_c^2 < Gamma - 1 needs
    r_c > M (3 Gamma - 2) / (2 (Gamma - 1))."""
    return M * (3.0 * Gamma - 2.0) / (2.0 * (Gamma - 1.0))


def mass_flux(r: np.ndarray, rho: np.ndarray, v: np.ndarray, M: float) -> np.ndarray:
    """C1 = rho u r^2 (per 4 pi), with u = v sqrt(1 - 2M/r) / sqrt(1 - v^2)."""
    r, rho, v = np.asarray(r, float), np.asarray(rho, float), np.asarray(v, float)
    return rho * v * np.sqrt((1.0 - 2.0 * M / r) / (1.0 - v**2)) * r**2


def bernoulli(
    r: np.ndarray, rho: np.ndarray, v: np.ndarray, M: float, K: float, Gamma: float
) -> np.ndarray:
    """C2 = h sqrt(1 - 2M/r) / sqrt(1 - v^2)."""
    r, rho, v = np.asarray(r, float), np.asarray(rho, float), np.asarray(v, float)
    h = 1.0 + Gamma * K * rho ** (Gamma - 1.0) / (Gamma - 1.0)
    return h * np.sqrt((1.0 - 2.0 * M / r) / (1.0 - v**2))


def _bracketed_newton(
    fun: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    lo: np.ndarray,
    hi: np.ndarray,
    max_iter: int = 200,
) -> np.ndarray:
    """Vectorised root of `fun` (value, derivative) in [lo, hi] with a sign change: Newton steps,
    bisection whenever a step would leave the bracket. Converges to the last ulp or so."""
    lo, hi = lo.copy(), hi.copy()
    f_lo = fun(lo)[0]
    x = 0.5 * (lo + hi)
    for _ in range(max_iter):
        f, df = fun(x)
        same = np.sign(f) == np.sign(f_lo)
        lo = np.where(same, x, lo)
        f_lo = np.where(same, f, f_lo)
        hi = np.where(same, hi, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(f == 0, 0.0, f / df)
        newton = x - step
        inside = np.isfinite(newton) & ((newton - lo) * (newton - hi) <= 0)
        x_new = np.where(inside, newton, 0.5 * (lo + hi))
        tol = 4 * _EPS * np.maximum(1.0, np.abs(x))
        done = (np.abs(x_new - x) <= tol) | (np.abs(hi - lo) <= tol)
        x = x_new
        if np.all(done):
            break
    return x


def _expand(
    fun: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray,
    direction: float | np.ndarray,
    want: float,
) -> np.ndarray:
    """Walk `start + direction * 2^k` (per point) until `sign(fun) == want` everywhere."""
    width = np.ones_like(start)
    end = start + direction * width
    for _ in range(200):
        bad = ~(np.sign(fun(end)) == want)
        if not np.any(bad):
            return end
        width = np.where(bad, 2.0 * width, width)
        end = start + direction * width
    raise RuntimeError("could not bracket a root of the accretion equations")


class MichelAccretion:
    """The transonic accretion flow with sonic point `r_sonic` (units G = c = M-scale free).

    Arguments:
        r_sonic: sonic radius r_c (> `min_sonic_radius(M, Gamma)`).
        M: black-hole mass.
        K, Gamma: polytrope p = K rho^Gamma, 1 < Gamma <= 5/3.
    """

    def __init__(self, r_sonic: float, M: float, K: float, Gamma: float) -> None:
        if not r_sonic > min_sonic_radius(M, Gamma):
            raise ValueError(f"r_sonic must exceed {min_sonic_radius(M, Gamma)}, got {r_sonic}")
        self.M, self.K, self.Gamma = float(M), float(K), float(Gamma)
        self.r_sonic = rc = float(r_sonic)
        self.u2_c = M / (2.0 * rc)
        self.a2_c = self.u2_c / (1.0 - 3.0 * self.u2_c)
        g1 = Gamma - 1.0
        self.theta_c = self.a2_c / (1.0 - self.a2_c / g1)  # Gamma K rho_c^(Gamma-1)
        self.rho_sonic = (self.theta_c / (Gamma * K)) ** (1.0 / g1)
        self.h_c = 1.0 + self.theta_c / g1
        self.mass_flux = self.rho_sonic * math.sqrt(self.u2_c) * rc**2
        self.bernoulli = self.h_c * math.sqrt(1.0 - 3.0 * self.u2_c)
        self.v_sonic = math.sqrt(self.a2_c)

    @classmethod
    def through(
        cls, r: float, rho: float, M: float, K: float, Gamma: float, r_lo: float, r_hi: float
    ) -> MichelAccretion:
        """The transonic flow with density `rho` at radius `r` and its sonic point in
        [r_lo, r_hi]. Raises ValueError when no sonic radius there gives that density."""
        r_lo = max(r_lo, min_sonic_radius(M, Gamma) * (1.0 + 1e-9))

        def mismatch(rc: float) -> float:
            return math.log(cls(rc, M, K, Gamma).density(np.array([r]))[0] / rho)

        f_lo, f_hi = mismatch(r_lo), mismatch(r_hi)
        if f_lo * f_hi > 0:
            lo_rho, hi_rho = sorted((rho * math.exp(f_hi), rho * math.exp(f_lo)))
            raise ValueError(
                f"no sonic radius in [{r_lo:.6g}, {r_hi:.6g}] gives rho = {rho:g} at r = {r:g}; "
                f"rho there must lie in ({lo_rho:.6g}, {hi_rho:.6g})"
            )
        rc = brentq(mismatch, r_lo, r_hi, xtol=1e-14 * r_hi, rtol=4 * _EPS, maxiter=200)
        return cls(rc, M, K, Gamma)

    # -- the scalar equation in xi = ln(rho / rho_c) at fixed r ---------------------------------
    def _terms(self, xi: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """G = ln(C2/C2_c) with u fixed by C1, as log1p of small differences from the sonic
        values; D = dG/dxi = a^2 - v^2; and dD/dxi."""
        g1 = self.Gamma - 1.0
        dr = r - self.r_sonic
        with np.errstate(over="ignore", invalid="ignore"):
            e_theta = np.expm1(g1 * xi)  # theta/theta_c - 1
            A = self.theta_c * e_theta / (g1 * self.h_c)  # h/h_c - 1
            w_c = self.u2_c
            dw = w_c * np.expm1(-2.0 * xi - 4.0 * np.log1p(dr / self.r_sonic))  # u^2 - u_c^2
            dQ = 2.0 * self.M * dr / (r * self.r_sonic)  # (1 - 2M/r) - (1 - 2M/r_c)
            S_c = 1.0 - 3.0 * w_c  # 1 - 2M/r_c + u_c^2
            B = (dQ + dw) / S_c
            G = np.log1p(A) + 0.5 * np.log1p(B)
            theta = self.theta_c * (1.0 + e_theta)
            a2 = theta / (1.0 + theta / g1)
            v2 = (w_c + dw) / (S_c * (1.0 + B))
            dD = g1 * a2 * (1.0 - a2 / g1) + 2.0 * v2 * (1.0 - v2)
        return G, a2 - v2, dD

    def density(self, r: np.ndarray) -> np.ndarray:
        """rho on the transonic branch at radii `r` (any shape, every r > 2M)."""
        r = np.asarray(r, dtype=np.float64)
        shape = r.shape
        r = r.ravel()
        if np.any(~(r > 2.0 * self.M)):
            raise ValueError("the accretion solution is defined for r > 2M only")

        zero = np.zeros_like(r)
        lo = _expand(lambda x: self._terms(x, r)[1], zero, -1.0, -1.0)
        hi = _expand(lambda x: self._terms(x, r)[1], zero, 1.0, 1.0)
        xi_s = _bracketed_newton(lambda x: self._terms(x, r)[1:], lo, hi)

        outer = r > self.r_sonic  # subsonic side: the larger root
        G_s = self._terms(xi_s, r)[0]
        side = np.where(outer, 1.0, -1.0)
        end = _expand(lambda x: self._terms(x, r)[0], xi_s, side, 1.0)
        lo = np.where(outer, xi_s, end)
        hi = np.where(outer, end, xi_s)
        xi = _bracketed_newton(lambda x: self._terms(x, r)[:2], lo, hi)
        xi = np.where(G_s >= 0, xi_s, xi)  # the two roots coincide (r = r_c to round-off)
        return (self.rho_sonic * np.exp(xi)).reshape(shape)

    def velocity(self, r: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """v from the mass flux: u = C1/(rho r^2), v = u / sqrt(1 - 2M/r + u^2)."""
        r, rho = np.asarray(r, float), np.asarray(rho, float)
        u = self.mass_flux / (rho * r**2)
        return u / np.sqrt(1.0 - 2.0 * self.M / r + u**2)

    def solve(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rho, v) on the transonic branch at radii `r`."""
        rho = self.density(r)
        return rho, self.velocity(r, rho)

    def sound_speed_sq(self, rho: np.ndarray) -> np.ndarray:
        """a^2 = Gamma K rho^(Gamma-1) / h."""
        theta = self.Gamma * self.K * np.asarray(rho, float) ** (self.Gamma - 1.0)
        return theta / (1.0 + theta / (self.Gamma - 1.0))
