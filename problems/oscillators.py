"""Oscillator ODEs in time: Duffing, Adler, and the SNIC route to phase slips in a MEMS oscillator.

All cases have the single axis `t`; initial values are conditions (`ic`, and `ic_v` for u'(0)).

- `duffing`: u'' + delta u' + alpha u + beta u^3 = gamma cos(omega t), by default the chaotic
  double-well set (0.3, -1, 1, 0.5, 1.2) from (u, u')(0) = (0.1, 0.1) on [0, 50]. Reference:
  DOP853 at rtol 1e-12. Horizon, from evidence (max |u| differences against DOP853 at rtol
  1e-14): rtol 1e-12 is off by 7e-12 up to t = 50, 5e-11 to t = 80, 8e-9 to t = 100, then
  chaos takes over (2e-7 at t = 120, 2e-2 at t = 200; RK45 at rtol 1e-13, Radau at 1e-12 agree).
  t = 50 keeps five orders of margin below 1e-6, and `_compute_reference` re-checks every
  parameter set (rtol 1e-12 against 1e-13) and refuses a horizon where they differ by > 1e-8.
- `duffing_free`: delta = gamma = 0, u(0) = A, u'(0) = 0, whose exact solution is
  u = A cn(W t | m), W^2 = alpha + beta A^2, m = beta A^2 / (2 W^2), period 4 K(m) / W
  (beta >= 0 and alpha + beta A^2 / 2 > 0: the orbit is not trapped in one well).
- `adler` (locked, |nu| < K) and `adler_slip` (|nu| > K): phi' = nu - K sin(phi). With
  (x, y) ~ (cos(phi/2), sin(phi/2)) the Riccati equation for tan(phi/2) is the linear system
  (x, y)' = A (x, y), A = [[K/2, -nu/2], [nu/2, -K/2]], and A^2 = (K^2 - nu^2)/4 I, so
  exp(A t) is cosh/sinh (locked), cos/sin (slip) or I + A t (nu = +-K) in closed form;
  `adler_phase` unwraps the angle exactly (the phase moves monotonically, by less than 2 pi per
  slip period T = 2 pi / sqrt(nu^2 - K^2), and by exactly 2 pi sign(nu) per period).
- `mems_snic`: a self-sustained MEMS resonator (a Duffing beam in a saturating feedback loop,
  modelled as a van der Pol–Duffing oscillator) under weak harmonic injection,

      u'' + u = eps [mu (1 - u^2) u' - kappa u^3] + eps^2 f cos(omega t).

  The PINN target and the reference (DOP853) are the full model's u(t).

The Adler reduction of `mems_snic` (the classical injection-locking setting). The small parameter
is eps: damping, gain and hardening are O(eps), injection and detuning O(eps^2). The free
oscillator (f = 0) has a limit cycle of amplitude 2 + O(eps) and frequency
Omega0 = 1 + 3 eps kappa / 2 + O(eps^2), computed here to round-off by shooting
(`vdp_duffing_limit_cycle`) because its O(eps^2) part is as large as the detuning. With
u = a cos(omega t + psi), u' = -a omega sin(omega t + psi), Krylov–Bogoliubov averaging gives

    a'   = eps mu a/2 (1 - a^2/4) - eps^2 f/2 sin psi,
    psi' = (Omega0 - omega) + eps 3 kappa/8 (a^2 - a0^2) - eps^2 f/(2a) cos psi  (+ O(eps^3)).

The amplitude relaxes at rate eps mu, fast next to the O(eps^2) phase dynamics, so it is slaved:
a = a0 - eps f/(2 mu) sin psi. Through the hardening (non-isochronicity) that amplitude change
shifts the frequency, and the phase obeys Adler's equation

    phi' = nu - K sin(phi),   phi = beta - pi/2 - psi,
    nu = omega - Omega0,   K = eps^2 (f/4) sqrt(1 + (3 kappa/mu)^2),   beta = atan(3 kappa/mu),

with relative errors O(eps) in nu and K (averaging and slaving are both first order in eps), so
on the slow time scale t ~ 1/eps^2 the phase error is O(eps): tests halve eps and see it halve
(mu = 1, kappa = 1/4, f = 1: the locked phase for nu = K/2 is off by 0.18, 0.090, 0.045 at
eps = 0.2, 0.1, 0.05; the phase over one slip for nu = 2K by at most 0.53, 0.28).
Hardening widens the locking range by sqrt(1 + (3 kappa/mu)^2). At nu = K a stable node and a
saddle merge on the invariant circle (SNIC): past it the phase slips by 2 pi every
2 pi / sqrt(nu^2 - K^2), a period that diverges as (nu - K)^(-1/2). Near the edge the reduction
needs eps << (nu - K)/K, because an O(eps) error in nu or K is then a large error in nu - K:
the `mems_snic` case (eps = 0.2, nu = 1.2 K) slips every 611 where Adler says 758, the full
model's own locking edge lying between nu = 0.85 K and 0.9 K. `slow_phase` extracts phi from a
trajectory. The closed forms, the limit cycle and the reduction live in
`problems/solvers/oscillator_exact.py` (re-exported here).

Hard-constraint trial functions in the PINN's `output_transform` syntax:
    duffing, mems_snic: {u: "u0 + v0 * t + t**2 * u"};  duffing_free: {u: "amplitude + t**2 * u"};
    adler, adler_slip:  {phi: "phi0 + t * phi"}.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import ellipk
from torch import Tensor

from problems.base import Box, Condition, ConfigError, Problem, Reference, check_int, check_real
from problems.fields import Fields
from problems.solvers.ode import Rhs, integrate, self_convergence
from problems.solvers.oscillator_exact import (
    AdlerReduction,
    adler_phase,
    adler_slip_period,
    duffing_cn,
    vdp_duffing,
    vdp_duffing_limit_cycle,
)

if TYPE_CHECKING:
    import sympy

__all__ = [
    "Adler",
    "AdlerSlip",
    "Duffing",
    "DuffingFree",
    "MemsSnic",
]

RTOL = 1e-12  # DOP853 tolerance of every integrated reference
TRUST = 1e-8  # largest accepted change of a reference when the tolerance is cut tenfold


# -- problems -----------------------------------------------------------------------------------
def _at_zero(n: int, generator: torch.Generator | None = None) -> Tensor:
    return torch.zeros(n, 1, dtype=torch.float64)


class _Oscillator(Problem):
    """Shared plumbing: the time axis [0, t_end], a reference grid of `nt` times, and ICs."""

    axes = ("t",)

    def _setup(self, t_end: object, nt: object, n_collocation: object) -> dict[str, float | int]:
        t_end = check_real("t_end", t_end, 0.0)
        nt = check_int("nt", nt, minimum=2)
        n_collocation = check_int("n_collocation", n_collocation)
        self.t_end, self.nt, self.n_collocation = t_end, nt, n_collocation
        self.domain = Box({"t": (0.0, t_end)})
        return {"t_end": t_end, "nt": nt, "n_collocation": n_collocation}

    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_end, self.nt)

    def initial_values(self) -> tuple[str, float, float | None]:
        """(field, value at t = 0, slope at t = 0 or None for a first-order equation)."""
        raise NotImplementedError

    def conditions(self) -> list[Condition]:
        return self._initial(*self.initial_values())

    def trial(self) -> dict[str, str]:
        """Lagaris's trial function with time scaled by the horizon, so that the net's
        share stays O(1) on long intervals: the initial value (and slope) hold exactly,
        field = value + slope t + (t / t_end)^2 N (first order: value + (t / t_end) N)."""
        name, value, slope = self.initial_values()
        if slope is None:
            return {name: f"{float(value)!r} + t / t_end * {name}"}
        return {name: f"{float(value)!r} + {float(slope)!r} * t + (t / t_end) ** 2 * {name}"}

    def _initial(self, name: str, value: float, slope: float | None) -> list[Condition]:
        """`ic`: field(0) - value; with `slope`, `ic_v`: field'(0) - slope."""
        conds = [Condition("ic", _at_zero, lambda f: (f[name] - value)[:, None], 1)]
        if slope is not None:
            conds.append(
                Condition("ic_v", _at_zero, lambda f: (f.d(name, "t") - slope)[:, None], 1)
            )
        return conds

    def _grid_reference(self, values: np.ndarray) -> Reference:
        t = self.times()
        return Reference(t[:, None], values, exact=self.exact, grid=(t,))

    def _trusted(self, rhs: Rhs, y0: list[float]) -> np.ndarray:
        """DOP853 at RTOL on the grid, refused unless it agrees with rtol RTOL/10 to TRUST."""
        y, diff = self_convergence(rhs, y0, self.times(), rtol=RTOL)
        scale = max(1.0, float(np.max(np.abs(y[:, 0]))))
        if diff[0] > TRUST * scale:
            raise ConfigError(
                f"t_end = {self.t_end:g} is beyond this system's predictable horizon: the DOP853 "
                f"reference changes by {diff[0]:.1e} when its tolerance is cut from {RTOL:g} to "
                f"{RTOL / 10:g}; choose a smaller t_end"
            )
        return y


class Duffing(_Oscillator):
    """Forced, damped Duffing oscillator u'' + delta u' + alpha u + beta u^3 = gamma cos(omega t).

    Arguments:
        delta (>= 0), alpha, beta (>= 0), gamma, omega (>= 0): the coefficients.
        u0, v0: u(0) and u'(0).
        t_end: horizon; the reference refuses one where DOP853 is not converged (chaos).
        nt: reference grid, linspace(0, t_end, nt). n_collocation: default collocation points.
    """

    name = "duffing"

    fields = ("u",)
    reference_keys = ("delta", "alpha", "beta", "gamma", "omega", "u0", "v0", "t_end", "nt")

    def __init__(
        self,
        delta: float = 0.3,
        alpha: float = -1.0,
        beta: float = 1.0,
        gamma: float = 0.5,
        omega: float = 1.2,
        u0: float = 0.1,
        v0: float = 0.1,
        t_end: float = 50.0,
        nt: int = 2001,
        n_collocation: int = 4000,
    ) -> None:
        coeffs = {
            "delta": check_real("delta", delta, 0.0, strict=False),
            "alpha": check_real("alpha", alpha),
            "beta": check_real("beta", beta, 0.0, strict=False),
            "gamma": check_real("gamma", gamma),
            "omega": check_real("omega", omega, 0.0, strict=False),
            "u0": check_real("u0", u0),
            "v0": check_real("v0", v0),
        }
        super().__init__(**coeffs, **self._setup(t_end, nt, n_collocation))
        for k, v in coeffs.items():
            setattr(self, k, v)

    def residual(self, f: Fields) -> Tensor:
        """u'' + delta u' + alpha u + beta u^3 - gamma cos(omega t), shape `[N, 1]`."""
        u = f["u"]
        r = f.d("u", "t", "t") + self.delta * f.d("u", "t") + self.alpha * u + self.beta * u**3
        return (r - self.gamma * torch.cos(self.omega * f.t))[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        t, u, u_t, u_tt = sp.symbols("t u u_t u_tt")
        d, a, b, g, w = map(num, (self.delta, self.alpha, self.beta, self.gamma, self.omega))
        return [u_tt + d * u_t + a * u + b * u**3 - g * sp.cos(w * t)]

    def initial_values(self) -> tuple[str, float, float | None]:
        return "u", self.u0, self.v0

    def rhs(self, t: float, y: np.ndarray) -> tuple[float, float]:
        u, v = y
        forcing = self.gamma * math.cos(self.omega * t)
        return v, forcing - self.delta * v - self.alpha * u - self.beta * u**3

    def _compute_reference(self) -> Reference:
        y = self._trusted(self.rhs, [self.u0, self.v0])
        return self._grid_reference(y[:, :1])


class DuffingFree(_Oscillator):
    """Undamped, unforced Duffing u'' + alpha u + beta u^3 = 0, u(0) = amplitude, u'(0) = 0.

    Arguments:
        alpha, beta (>= 0), amplitude (> 0): with alpha + beta amplitude^2 / 2 > 0.
        t_end, nt, n_collocation: as for `duffing`.
    The reference is the exact Jacobi-cn solution (`duffing_cn`).
    """

    name = "duffing_free"

    fields = ("u",)
    reference_keys = ("alpha", "beta", "amplitude", "t_end", "nt")

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        amplitude: float = 1.5,
        t_end: float = 20.0,
        nt: int = 1001,
        n_collocation: int = 2000,
    ) -> None:
        alpha = check_real("alpha", alpha)
        beta = check_real("beta", beta, 0.0, strict=False)
        amplitude = check_real("amplitude", amplitude, 0.0)
        if not alpha + beta * amplitude**2 / 2 > 0:
            raise ConfigError(
                f"alpha + beta * amplitude^2 / 2 must be > 0 (an orbit around both wells, where "
                f"the cn solution holds), got alpha={alpha!r}, beta={beta!r}, "
                f"amplitude={amplitude!r}"
            )
        super().__init__(
            alpha=alpha, beta=beta, amplitude=amplitude, **self._setup(t_end, nt, n_collocation)
        )
        self.alpha, self.beta, self.amplitude = alpha, beta, amplitude

    @property
    def period(self) -> float:
        """4 K(m) / W."""
        w2 = self.alpha + self.beta * self.amplitude**2
        return 4.0 * float(ellipk(self.beta * self.amplitude**2 / (2 * w2))) / math.sqrt(w2)

    def energy(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """u'^2/2 + alpha u^2/2 + beta u^4/4, conserved."""
        return v**2 / 2 + self.alpha * u**2 / 2 + self.beta * u**4 / 4

    def residual(self, f: Fields) -> Tensor:
        """u'' + alpha u + beta u^3, shape `[N, 1]`."""
        u = f["u"]
        return (f.d("u", "t", "t") + self.alpha * u + self.beta * u**3)[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        u, u_tt = sp.symbols("u u_tt")
        return [u_tt + num(self.alpha) * u + num(self.beta) * u**3]

    def initial_values(self) -> tuple[str, float, float | None]:
        return "u", self.amplitude, 0.0

    def exact(self, points: np.ndarray) -> np.ndarray:
        """u at `points` `[M, 1]` (column t), shape `[M, 1]`."""
        t = np.asarray(points, dtype=np.float64).reshape(len(points), -1)[:, 0]
        return duffing_cn(t, self.alpha, self.beta, self.amplitude)[0][:, None]

    def _compute_reference(self) -> Reference:
        t = self.times()
        return self._grid_reference(self.exact(t[:, None]))


class Adler(_Oscillator):
    """Adler's phase equation phi' = nu - K sin(phi), phi(0) = phi0, in the locked regime.

    Arguments:
        nu: detuning; K: locking strength (> 0); |nu| < K here (`adler_slip`: |nu| > K).
        phi0: initial phase. t_end, nt, n_collocation: as for `duffing`.
    The reference is the closed form (`adler_phase`).
    """

    name = "adler"

    fields = ("phi",)
    reference_keys = ("nu", "K", "phi0", "t_end", "nt")
    regime = "locked"

    def __init__(
        self,
        nu: float = 0.5,
        K: float = 1.0,
        phi0: float = 3.0,
        t_end: float = 20.0,
        nt: int = 1001,
        n_collocation: int = 1000,
    ) -> None:
        nu = check_real("nu", nu)
        K = check_real("K", K, 0.0)
        phi0 = check_real("phi0", phi0)
        if self.regime == "locked" and not abs(nu) < K:
            raise ConfigError(
                f"nu must satisfy |nu| < K in the locked case (got nu={nu!r}, K={K!r}); "
                "the phase-slip case is adler_slip"
            )
        if self.regime == "slip" and not abs(nu) > K:
            raise ConfigError(
                f"nu must satisfy |nu| > K in the phase-slip case (got nu={nu!r}, K={K!r}); "
                "the locked case is adler"
            )
        super().__init__(nu=nu, K=K, phi0=phi0, **self._setup(t_end, nt, n_collocation))
        self.nu, self.K, self.phi0 = nu, K, phi0

    def residual(self, f: Fields) -> Tensor:
        """phi' - nu + K sin(phi), shape `[N, 1]`."""
        return (f.d("phi", "t") - self.nu + self.K * torch.sin(f["phi"]))[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        phi, phi_t = sp.symbols("phi phi_t")
        return [phi_t - num(self.nu) + num(self.K) * sp.sin(phi)]

    def initial_values(self) -> tuple[str, float, float | None]:
        return "phi", self.phi0, None

    def exact(self, points: np.ndarray) -> np.ndarray:
        """phi at `points` `[M, 1]` (column t), shape `[M, 1]`."""
        t = np.asarray(points, dtype=np.float64).reshape(len(points), -1)[:, 0]
        return adler_phase(t, self.nu, self.K, self.phi0)[:, None]

    def _compute_reference(self) -> Reference:
        t = self.times()
        return self._grid_reference(self.exact(t[:, None]))


class AdlerSlip(Adler):
    """Adler's equation past the locking range, |nu| > K: a 2 pi slip every 2 pi/sqrt(nu^2-K^2).

    Arguments as for `adler`. The default nu = 1.2 K sits near the saddle-node on the invariant
    circle, so each slip is a slow passage of the bottleneck at phi = pi/2 and a fast turn.
    """

    name = "adler_slip"

    regime = "slip"

    def __init__(
        self,
        nu: float = 1.2,
        K: float = 1.0,
        phi0: float = 0.0,
        t_end: float = 30.0,
        nt: int = 1001,
        n_collocation: int = 2000,
    ) -> None:
        super().__init__(nu=nu, K=K, phi0=phi0, t_end=t_end, nt=nt, n_collocation=n_collocation)

    @property
    def period(self) -> float:
        return adler_slip_period(self.nu, self.K)


class MemsSnic(_Oscillator):
    """Injection-locked van der Pol–Duffing MEMS oscillator just outside its locking range.

        u'' + u = eps [mu (1 - u^2) u' - kappa u^3] + eps^2 f cos(omega t)

    Arguments:
        eps: the small parameter (0 < eps <= 1). mu (> 0): gain/damping; kappa: hardening.
        f (> 0): injection amplitude; omega (> 0): drive frequency.
        u0, v0: u(0), u'(0). t_end, nt, n_collocation: as for `duffing`.
    The reference is the full model by DOP853 (rtol 1e-12, checked against 1e-13); `reduction()`
    gives its Adler approximation (module docstring).
    """

    name = "mems_snic"

    fields = ("u",)
    reference_keys = ("eps", "mu", "kappa", "f", "omega", "u0", "v0", "t_end", "nt")

    def __init__(
        self,
        eps: float = 0.2,
        mu: float = 1.0,
        kappa: float = 0.25,
        f: float = 1.0,
        omega: float = 1.0839488766421,
        u0: float = 2.0,
        v0: float = 0.0,
        t_end: float = 700.0,
        nt: int = 7001,
        n_collocation: int = 8000,
    ) -> None:
        eps = check_real("eps", eps, 0.0)
        if eps > 1:
            raise ConfigError(f"eps must be a finite number in (0, 1], got {eps!r}")
        coeffs = {
            "eps": eps,
            "mu": check_real("mu", mu, 0.0),
            "kappa": check_real("kappa", kappa),
            "f": check_real("f", f, 0.0),
            "omega": check_real("omega", omega, 0.0),
            "u0": check_real("u0", u0),
            "v0": check_real("v0", v0),
        }
        super().__init__(**coeffs, **self._setup(t_end, nt, n_collocation))
        for k, v in coeffs.items():
            setattr(self, k, v)
        self.rhs = vdp_duffing(self.eps, self.mu, self.kappa, self.f, self.omega)

    def residual(self, f: Fields) -> Tensor:
        """u'' + u - eps [mu (1 - u^2) u' - kappa u^3] - eps^2 f cos(omega t), `[N, 1]`."""
        u, ut = f["u"], f.d("u", "t")
        inner = self.mu * (1 - u**2) * ut - self.kappa * u**3
        forcing = self.eps**2 * self.f * torch.cos(self.omega * f.t)
        return (f.d("u", "t", "t") + u - self.eps * inner - forcing)[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        t, u, u_t, u_tt = sp.symbols("t u u_t u_tt")
        eps, mu, kappa, f, w = map(num, (self.eps, self.mu, self.kappa, self.f, self.omega))
        inner = mu * (1 - u**2) * u_t - kappa * u**3
        return [u_tt + u - eps * inner - eps**2 * f * sp.cos(w * t)]

    def initial_values(self) -> tuple[str, float, float | None]:
        return "u", self.u0, self.v0

    def reduction(self) -> AdlerReduction:
        """Adler's equation for the slow phase (shoots the free limit cycle once, ~0.2 s)."""
        amp, period = vdp_duffing_limit_cycle(self.eps, self.mu, self.kappa)
        omega0 = 2 * math.pi / period
        c = 3 * self.kappa / self.mu
        return AdlerReduction(
            nu=self.omega - omega0,
            K=self.eps**2 * self.f / 4 * math.sqrt(1 + c * c),
            offset=math.atan(c),
            omega=self.omega,
            omega0=omega0,
            amplitude=amp,
        )

    def trajectory(self, t: np.ndarray, rtol: float = RTOL) -> np.ndarray:
        """(u, u') of the full model at times `t`, `[len(t), 2]`, by DOP853."""
        return integrate(self.rhs, [self.u0, self.v0], t, rtol=rtol)

    def _compute_reference(self) -> Reference:
        y = self._trusted(self.rhs, [self.u0, self.v0])
        return self._grid_reference(y[:, :1])
