"""Singular ODEs (Cayuso, Herrero-Valea & Barausse, arXiv:2409.20150; code `mehrrero/sPINN`).

Three ODEs whose highest-derivative coefficient (for accretion: the determinant of the system)
vanishes inside or at the edge of the domain, so that regularity there, not only a boundary
value, selects the solution:

- `legendre`: (1 - x^2) y'' - 2x y' + l(l+1) y = 0 on [-1, 1]. Both ends are regular singular
  points; the solution regular at both is the Legendre polynomial P_l, normalised by
  y(-1) = (-1)^l. The second solution Q_l has log singularities at x = +-1.
- `hypergeometric`: x(1-x) y'' + (c - (a+b+1)x) y' - ab y = 0 on [0, 2], crossing the singular
  point x = 1; y(0) = 1 and regularity at x = 0 select 2F1(a, b; c; x). Only parameter sets for
  which that solution is a polynomial (a or b a non-positive integer) are accepted: otherwise 2F1
  has a branch point at x = 1 and no real single-valued continuation to (1, 2]. Also c > 0 (so
  regularity at x = 0 is a real constraint) and c - a - b <= 2 (so the continuation through
  x = 1 is the unique twice-differentiable one). Default (a, b, c) = (-2, 1, 1): y = (1 - x)^2.
- `accretion`: Michel's steady spherical accretion of a polytrope p = K rho^Gamma onto a
  Schwarzschild black hole, for rho(r) and the speed v(r) measured by static observers on
  [r_min, r_max]. The two ODEs are the r-derivatives of the conserved mass flux and Bernoulli
  constant solved for rho' and v', multiplied by D = v^2 - a^2, which vanishes at the sonic point
  r_c inside the interval (the paper's form). rho(r_max) = rho_out and passage through Michel's
  critical point at r_c select the transonic solution; without the second condition, every
  subsonic solution through rho_out is an equally smooth solution (tested). The reference solves
  the two invariants algebraically (`problems/solvers/accretion.py`).

Hard-constraint trial functions of the paper, in the PINN's `output_transform` syntax:

    legendre:        {y: "(-1)**l + (1 - exp(-(x + 1))) * y"}
    hypergeometric:  {y: "1 + x * y"}
    accretion:       {rho: "rho_out + (r_max - r) / r * exp(-rho)", v: "exp(-v)"}

Fields are "y" (legendre, hypergeometric) and ("rho", "v") for accretion: the rest-mass density
and the speed measured by static observers are the variables the paper writes its equations,
trial functions and data in (v is bounded by 1, unlike the radial 4-velocity u = |u^r|, and the
sonic point is simply v = a). Its trial functions make rho > rho_out inside and v > 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import eval_legendre
from torch import Tensor

from problems.base import Box, Condition, ConfigError, Problem, Reference, check_int, check_real
from problems.fields import Fields
from problems.solvers.accretion import MichelAccretion, bernoulli, mass_flux

if TYPE_CHECKING:
    import sympy

__all__ = ["Accretion", "Hypergeometric", "Legendre"]

MAX_DEGREE = 20  # hypergeometric polynomial degree: beyond it float64 cancellation at x = 2 grows


def _nonpositive_integer(value: float) -> bool:
    return value <= 0 and value == round(value)


def _at(value: float, n: int, *alternate: float) -> Tensor:
    """`[n, 1]` float64 points at `value` (or cycling through `value, *alternate`)."""
    vals = torch.tensor((value, *alternate), dtype=torch.float64)
    return vals[torch.arange(n) % len(vals)][:, None]


def _grid_reference(problem: Problem, lo: float, hi: float, n: int) -> Reference:
    x = np.linspace(lo, hi, n)
    return Reference(x[:, None], problem.exact(x[:, None]), exact=problem.exact, grid=(x,))


class Legendre(Problem):
    """Legendre's equation; the solution regular at x = +-1 with y(-1) = (-1)^l is P_l.

    Arguments:
        l: the degree, an integer >= 0 (no other l has a solution regular at both ends).
        n_collocation: default number of interior collocation points.
        nx: reference grid size, linspace(-1, 1, nx).
    """

    name = "legendre"

    axes = ("x",)
    fields = ("y",)
    domain = Box({"x": (-1.0, 1.0)})
    reference_keys = ("l", "nx")

    def __init__(self, l: int = 3, n_collocation: int = 128, nx: int = 201) -> None:
        l = check_int("l", l, minimum=0)
        n_collocation = check_int("n_collocation", n_collocation)
        nx = check_int("nx", nx, minimum=2)
        super().__init__(l=l, n_collocation=n_collocation, nx=nx)
        self.l, self.n_collocation, self.nx = l, n_collocation, nx
        self.eigen = float(l * (l + 1))

    def residual(self, f: Fields) -> Tensor:
        """(1 - x^2) y'' - 2x y' + l(l+1) y, shape `[N, 1]`."""
        x = f.x
        r = (1 - x**2) * f.d("y", "x", "x") - 2 * x * f.d("y", "x") + self.eigen * f["y"]
        return r[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import sp

        x, y, y_x, y_xx = sp.symbols("x y y_x y_xx")
        return [(1 - x**2) * y_xx - 2 * x * y_x + sp.Integer(self.l * (self.l + 1)) * y]

    def trial(self) -> dict[str, str]:
        """The paper's trial function: y(-1) = (-1)^l exactly."""
        return {"y": "(-1)**l + (1 - exp(-(x + 1))) * y"}

    def conditions(self) -> list[Condition]:
        """`norm`: y(-1) - (-1)^l. `regular`: the equation at the singular points x = +-1,
        where it reduces to -2x y' + l(l+1) y = 0, which a log-singular solution cannot meet."""
        sign = float((-1) ** self.l)
        return [
            Condition(
                "norm", lambda n, g=None: _at(-1.0, n), lambda f: (f["y"] - sign)[:, None], 1
            ),
            Condition(
                "regular",
                lambda n, g=None: _at(-1.0, n, 1.0),
                lambda f: (-2 * f.x * f.d("y", "x") + self.eigen * f["y"])[:, None],
                2,
            ),
        ]

    def exact(self, points: np.ndarray) -> np.ndarray:
        """P_l at `points` `[M, 1]`, shape `[M, 1]`."""
        x = np.asarray(points, dtype=np.float64).reshape(-1, 1)[:, 0]
        return eval_legendre(self.l, x)[:, None]

    def _compute_reference(self) -> Reference:
        return _grid_reference(self, -1.0, 1.0, self.nx)


class Hypergeometric(Problem):
    """Gauss's hypergeometric equation on [0, 2]; y(0) = 1 and regularity select 2F1(a, b; c; x),
    here always a polynomial (see the module docstring for the accepted parameter sets).

    Arguments:
        a, b: one of them a non-positive integer >= -20 (the polynomial's degree is its size).
        c: > 0, with c - a - b <= 2.
        n_collocation: default number of interior collocation points.
        nx: reference grid size, linspace(0, 2, nx).
    """

    name = "hypergeometric"

    axes = ("x",)
    fields = ("y",)
    domain = Box({"x": (0.0, 2.0)})
    reference_keys = ("a", "b", "c", "nx")

    def __init__(
        self,
        a: float = -2,
        b: float = 1,
        c: float = 1,
        n_collocation: int = 128,
        nx: int = 201,
    ) -> None:
        a, b, c = check_real("a", a), check_real("b", b), check_real("c", c)
        degrees = [int(-p) for p in (a, b) if _nonpositive_integer(p)]
        if not degrees:
            raise ConfigError(
                f"a or b must be a non-positive integer (0, -1, -2, ...), got a={a:g}, b={b:g}: "
                "only then does 2F1(a, b; c; x) terminate; otherwise it has a branch point at "
                "x = 1 and is multivalued (complex) on (1, 2]"
            )
        degree = min(degrees)
        if degree > MAX_DEGREE:
            raise ConfigError(
                f"a or b must be >= -{MAX_DEGREE} (the polynomial degree), got a={a:g}, b={b:g}"
            )
        if c <= 0:
            raise ConfigError(
                f"c must be > 0, got {c:g}: for c <= 0 the second solution "
                "x^(1-c) 2F1(a-c+1, b-c+1; 2-c; x) is continuously differentiable at x = 0, so "
                "y(0) = 1 no longer selects 2F1"
            )
        if c - a - b > 2:
            raise ConfigError(
                f"c - a - b must be <= 2, got {c - a - b:g} (a={a:g}, b={b:g}, c={c:g}): the "
                "exponents at x = 1 are 0 and c - a - b, and above 2 the second solution "
                "|x - 1|^(c-a-b) is twice differentiable, so the continuation past x = 1 is "
                "not unique"
            )
        n_collocation = check_int("n_collocation", n_collocation)
        nx = check_int("nx", nx, minimum=2)
        super().__init__(a=a, b=b, c=c, n_collocation=n_collocation, nx=nx)
        self.a, self.b, self.c = a, b, c
        self.n_collocation, self.nx = n_collocation, nx
        self.degree = degree
        coef = [1.0]  # (a)_k (b)_k / ((c)_k k!)
        for k in range(degree):
            coef.append(coef[-1] * (a + k) * (b + k) / ((c + k) * (k + 1)))
        self.coefficients = np.array(coef)

    def residual(self, f: Fields) -> Tensor:
        """x(1-x) y'' + (c - (a+b+1)x) y' - ab y, shape `[N, 1]`."""
        x = f.x
        a, b, c = self.a, self.b, self.c
        r = x * (1 - x) * f.d("y", "x", "x") + (c - (a + b + 1) * x) * f.d("y", "x")
        return (r - a * b * f["y"])[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        x, y, y_x, y_xx = sp.symbols("x y y_x y_xx")
        a, b, c = num(self.a), num(self.b), num(self.c)
        return [x * (1 - x) * y_xx + (c - (a + b + 1) * x) * y_x - a * b * y]

    def trial(self) -> dict[str, str]:
        """The paper's trial function: y(0) = 1 exactly."""
        return {"y": "1 + x * y"}

    def conditions(self) -> list[Condition]:
        """`norm`: y(0) - 1. `regular`: the equation at the singular points x = 0 and x = 1,
        where it reduces to (c - (a+b+1)x) y' - ab y = 0."""
        a, b, c = self.a, self.b, self.c
        return [
            Condition("norm", lambda n, g=None: _at(0.0, n), lambda f: (f["y"] - 1)[:, None], 1),
            Condition(
                "regular",
                lambda n, g=None: _at(0.0, n, 1.0),
                lambda f: ((c - (a + b + 1) * f.x) * f.d("y", "x") - a * b * f["y"])[:, None],
                2,
            ),
        ]

    def exact(self, points: np.ndarray) -> np.ndarray:
        """The terminating 2F1 polynomial at `points` `[M, 1]` (Horner), shape `[M, 1]`."""
        x = np.asarray(points, dtype=np.float64).reshape(-1, 1)[:, 0]
        return np.polynomial.polynomial.polyval(x, self.coefficients)[:, None]

    def _compute_reference(self) -> Reference:
        return _grid_reference(self, 0.0, 2.0, self.nx)


class Accretion(Problem):
    """Michel's transonic accretion onto a Schwarzschild black hole (G = c = 1), in (rho, v).

    Arguments:
        M: black-hole mass (> 0).
        K, Gamma: polytrope p = K rho^Gamma (K > 0, 1 < Gamma <= 5/3).
        r_min, r_max: the radial interval, 2M < r_min < r_max; it must contain the sonic point.
        rho_out: rest-mass density at r_max, which fixes the sonic radius.
        n_collocation: default number of collocation points.
        nr: reference grid size, linspace(r_min, r_max, nr).
    """

    name = "accretion"

    axes = ("r",)
    fields = ("rho", "v")
    reference_keys = ("M", "K", "Gamma", "r_min", "r_max", "rho_out", "nr")

    def __init__(
        self,
        M: float = 1.0,
        K: float = 0.1,
        Gamma: float = 4.0 / 3.0,
        r_min: float = 20.0,
        r_max: float = 140.5,
        rho_out: float = 0.000324197,
        n_collocation: int = 1000,
        nr: int = 1000,
    ) -> None:
        M, K = check_real("M", M, 0.0), check_real("K", K, 0.0)
        Gamma = check_real("Gamma", Gamma)
        if not 1.0 < Gamma <= 5.0 / 3.0:
            raise ConfigError(f"Gamma must lie in (1, 5/3], got {Gamma:g}")
        r_min, r_max = check_real("r_min", r_min), check_real("r_max", r_max)
        if not r_min > 2 * M:
            raise ConfigError(f"r_min must exceed the horizon radius 2M = {2 * M:g}, got {r_min:g}")
        if not r_max > r_min:
            raise ConfigError(f"r_max must exceed r_min = {r_min:g}, got {r_max:g}")
        rho_out = check_real("rho_out", rho_out, 0.0)
        try:
            flow = MichelAccretion.through(r_max, rho_out, M, K, Gamma, r_min, r_max)
        except ValueError as e:
            raise ConfigError(
                f"rho_out gives no sonic point inside [r_min, r_max] for M={M:g}, K={K:g}, "
                f"Gamma={Gamma:g}: {e}"
            ) from None
        n_collocation = check_int("n_collocation", n_collocation)
        nr = check_int("nr", nr, minimum=2)
        super().__init__(
            M=M,
            K=K,
            Gamma=Gamma,
            r_min=r_min,
            r_max=r_max,
            rho_out=rho_out,
            n_collocation=n_collocation,
            nr=nr,
        )
        self.M, self.K, self.Gamma = M, K, Gamma
        self.r_min, self.r_max, self.rho_out = r_min, r_max, rho_out
        self.n_collocation, self.nr = n_collocation, nr
        self.domain = Box({"r": (r_min, r_max)})
        self.flow = flow
        self.r_sonic = flow.r_sonic

    def _sound_speed_sq(self, rho: Tensor) -> Tensor:
        theta = self.Gamma * self.K * rho.abs() ** (self.Gamma - 1)  # |rho|: finite for any net
        return theta / (1 + theta / (self.Gamma - 1))

    def residual(self, f: Fields) -> Tensor:
        """`[N, 2]`: with D = v^2 - a^2,
        r D rho'/rho + 2v^2 - M(1 - v^2)/(r - 2M)  and
        r D v'/(v(1 - v^2)) - (a^2 (2r - 3M) - M)/(r - 2M),
        i.e. r (v^2 (ln C1)' - (ln C2)') and -r (a^2 (ln C1)' - (ln C2)') for the mass flux C1
        and Bernoulli constant C2."""
        r, rho, v = f.r, f["rho"], f["v"]
        M = self.M
        a2 = self._sound_speed_sq(rho)
        D = v**2 - a2
        e_rho = r * D * f.d("rho", "r") / rho + 2 * v**2 - M * (1 - v**2) / (r - 2 * M)
        e_v = r * D * f.d("v", "r") / (v * (1 - v**2)) - (a2 * (2 * r - 3 * M) - M) / (r - 2 * M)
        return torch.stack([e_rho, e_v], dim=1)

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        r, rho, v, rho_r, v_r = sp.symbols("r rho v rho_r v_r")
        M, g1 = num(self.M), num(self.Gamma - 1)
        theta = num(self.Gamma * self.K) * sp.Abs(rho) ** g1
        a2 = theta / (1 + theta / g1)
        D = v**2 - a2
        e_rho = r * D * rho_r / rho + 2 * v**2 - M * (1 - v**2) / (r - 2 * M)
        e_v = r * D * v_r / (v * (1 - v**2)) - (a2 * (2 * r - 3 * M) - M) / (r - 2 * M)
        return [e_rho, e_v]

    def trial(self) -> dict[str, str]:
        """The paper's: rho(r_max) = rho_out exactly, rho > rho_out inside, and v > 0."""
        return {"rho": "rho_out + (r_max - r) / r * exp(-rho)", "v": "exp(-v)"}

    def conditions(self) -> list[Condition]:
        """`outer`: rho(r_max)/rho_out - 1. `sonic`: Michel's critical-point conditions at r_c,
        where D = 0 and so the numerators must vanish for rho' and v' to stay finite:
        2 r u^2 = M and v^2 = a^2, as `[(2v^2 (r - 2M) - M(1 - v^2))/M, (v^2 - a^2)(2r - 3M)/M]`."""
        M = self.M

        def sonic(f: Fields) -> Tensor:
            r, v = f.r, f["v"]
            a2 = self._sound_speed_sq(f["rho"])
            crit = (2 * v**2 * (r - 2 * M) - M * (1 - v**2)) / M
            return torch.stack([crit, (v**2 - a2) * (2 * r - 3 * M) / M], dim=1)

        return [
            Condition(
                "outer",
                lambda n, g=None: _at(self.r_max, n),
                lambda f: (f["rho"] / self.rho_out - 1)[:, None],
                1,
            ),
            Condition("sonic", lambda n, g=None: _at(self.r_sonic, n), sonic, 1),
        ]

    def exact(self, points: np.ndarray) -> np.ndarray:
        """(rho, v) on the transonic branch at `points` `[M, 1]`, shape `[M, 2]`."""
        r = np.asarray(points, dtype=np.float64).reshape(-1, 1)[:, 0]
        rho, v = self.flow.solve(r)
        return np.stack([rho, v], axis=1)

    def _compute_reference(self) -> Reference:
        return _grid_reference(self, self.r_min, self.r_max, self.nr)

    def invariants(self, points: np.ndarray, values: np.ndarray) -> dict[str, float]:
        """Largest relative deviation of a prediction's mass flux and Bernoulli constant from the
        exact transonic values (NaN where the prediction leaves rho > 0, 0 < v < 1)."""
        r = np.asarray(points, dtype=np.float64)[:, 0]
        rho, v = np.asarray(values, dtype=np.float64).T
        with np.errstate(invalid="ignore", divide="ignore"):
            c1 = mass_flux(r, rho, v, self.M) / self.flow.mass_flux - 1
            c2 = bernoulli(r, rho, v, self.M, self.K, self.Gamma) / self.flow.bernoulli - 1
        return {
            "mass_flux_error": float(np.max(np.abs(c1))),
            "bernoulli_error": float(np.max(np.abs(c2))),
        }
