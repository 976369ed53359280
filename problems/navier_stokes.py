"""2-D incompressible Navier–Stokes (rho = 1) in primitive variables: four cases with exact or
validated references (the vorticity form: `problems/ns_vorticity.py`).

`kovasznay`, `taylor_green`, `cavity`, `cavity_re1000`, fields (u, v, p):

    [u_t] + u u_x + v u_y + p_x - nu (u_xx + u_yy) = 0
    [v_t] + u v_x + v v_y + p_y - nu (v_xx + v_yy) = 0
    u_x + v_y = 0

* `kovasznay`: steady, exact (Kovasznay 1948), Re = 20 on DeepXDE's [-0.5, 1] x [-0.5, 1.5];
  Dirichlet u, v on the whole boundary and p at the outlet x = 1, as DeepXDE.
* `taylor_green`: unsteady, exact decay on the periodic square [0, 2 pi]^2; initial velocity
  and periodicity are the conditions.
* `cavity`: steady lid-driven cavity on the unit square, Re = 100 (`cavity_re1000`: 1000); no-slip
  walls, the lid y = 1 moving with u = lid(x). Reference from our own Newton/finite-volume solver
  (`problems/solvers/cavity.py`), validated by grid convergence in its tests. `lid`: `uniform`
  (u = 1, Ghia et al. 1982, the classical problem, corner singularities), `parabolic`
  (u = a x (1 - x), PINNacle's NS2d-C with a = 4) or `smooth` (u = 1 - cosh(r(x - 1/2))/cosh(r/2)).

Pressure is defined up to a constant (per time, when unsteady): the harness compares it after
the best constant shift (`gauge_fields`). Every case reports `rel_l2_velocity` (u and v pooled)
and the RMS divergence of the prediction on fresh points (`divergence_rms`), as do the
vorticity-form cases.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from problems.base import (
    Box,
    Condition,
    ConfigError,
    Problem,
    Reference,
    check_int,
    check_real,
    grid_points,
)
from problems.constraints import periodic_conditions, rectangle_trial, sample_boundary
from problems.fields import Fields

__all__ = ["Cavity", "CavityRe1000", "Kovasznay", "TaylorGreen", "divergence"]


def _momentum(f: Fields, nu: float, unsteady: bool) -> tuple[Tensor, Tensor]:
    """The two momentum residuals of the primitive-variable equations."""
    u, v = f["u"], f["v"]
    ru = u * f.d("u", "x") + v * f.d("u", "y") + f.d("p", "x")
    rv = u * f.d("v", "x") + v * f.d("v", "y") + f.d("p", "y")
    ru = ru - nu * (f.d("u", "x", "x") + f.d("u", "y", "y"))
    rv = rv - nu * (f.d("v", "x", "x") + f.d("v", "y", "y"))
    if unsteady:
        ru, rv = ru + f.d("u", "t"), rv + f.d("v", "t")
    return ru, rv


def divergence(f: Fields) -> Tensor:
    """u_x + v_y, `[N]`."""
    return f.d("u", "x") + f.d("v", "y")


class _NavierStokes(Problem):
    """Shared parts of the primitive-variable cases: residual, diagnostics, metrics."""

    fields = ("u", "v", "p")
    gauge_fields = ("p",)
    field_groups = {"velocity": ("u", "v")}
    nu: float

    def residual(self, f: Fields) -> Tensor:
        ru, rv = _momentum(f, self.nu, self.time_dependent)
        return torch.stack([ru, rv, divergence(f)], dim=1)

    def diagnostics(self, f: Fields) -> dict[str, Tensor]:
        return {"divergence": divergence(f)}


# ------------------------------------------------------------------------------------------
class Kovasznay(_NavierStokes):
    """Kovasznay flow: u = 1 - e^{lam x} cos 2 pi y, v = lam/(2 pi) e^{lam x} sin 2 pi y,
    p = (1 - e^{2 lam x})/2, lam = Re/2 - sqrt(Re^2/4 + 4 pi^2); nu = 1/Re.

    Arguments:
        re: Reynolds number (> 0).
        n_collocation, n_boundary: default interior and boundary points (DeepXDE: 2601, 400).
        n_outlet: default points for the outlet pressure condition at x = 1.
        nx, ny: reference grid (linspace over the domain).
    """

    name = "kovasznay"

    axes = ("x", "y")
    domain = Box({"x": (-0.5, 1.0), "y": (-0.5, 1.5)})
    reference_keys = ("re", "nx", "ny")

    def __init__(
        self,
        re: float = 20.0,
        n_collocation: int = 2601,
        n_boundary: int = 400,
        n_outlet: int = 100,
        nx: int = 101,
        ny: int = 101,
    ) -> None:
        re = check_real("re", re, minimum=0.0)
        super().__init__(
            re=re,
            n_collocation=check_int("n_collocation", n_collocation),
            n_boundary=check_int("n_boundary", n_boundary),
            n_outlet=check_int("n_outlet", n_outlet),
            nx=check_int("nx", nx, minimum=2),
            ny=check_int("ny", ny, minimum=2),
        )
        self.re, self.nu = re, 1.0 / re
        self.lam = re / 2 - math.sqrt(re**2 / 4 + 4 * math.pi**2)
        self.n_collocation = self.params["n_collocation"]

    def _data(self) -> dict[str, str]:
        """The exact solution as expressions (the boundary data of the trial function)."""
        lam = self.lam
        return {
            "u": f"1 - exp({lam!r} * x) * cos(2 * pi * y)",
            "v": f"{lam / (2 * math.pi)!r} * exp({lam!r} * x) * sin(2 * pi * y)",
            "p": f"0.5 * (1 - exp({2 * lam!r} * x))",
        }

    def _exact_torch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lam, e = self.lam, torch.exp(self.lam * x)
        u = 1 - e * torch.cos(2 * math.pi * y)
        v = lam / (2 * math.pi) * e * torch.sin(2 * math.pi * y)
        return u, v, 0.5 * (1 - e * e)

    def exact(self, points: np.ndarray) -> np.ndarray:
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return torch.stack(self._exact_torch(pts[:, 0], pts[:, 1]), dim=1).numpy()

    def conditions(self) -> list[Condition]:
        """`bc`: u, v minus the exact data on the whole boundary; `bc_p`: p at x = 1."""

        def bc(f: Fields) -> Tensor:
            u, v, _ = self._exact_torch(f.x, f.y)
            return torch.stack([f["u"] - u, f["v"] - v], dim=1)

        def bc_p(f: Fields) -> Tensor:
            return (f["p"] - self._exact_torch(f.x, f.y)[2])[:, None]

        return [
            Condition(
                "bc",
                lambda n, g=None: sample_boundary(self.domain, n, g),
                bc,
                self.params["n_boundary"],
            ),
            Condition(
                "bc_p",
                lambda n, g=None: sample_boundary(self.domain, n, g, ("hi0",)),
                bc_p,
                self.params["n_outlet"],
            ),
        ]

    def trial(self) -> dict[str, str]:
        """u, v: Coons lifting of the boundary data plus a bubble times the net; p: the outlet
        data plus (1 - x')·net, x' the unit coordinate. Only boundary values enter."""
        data = self._data()
        return {
            "u": rectangle_trial(self.domain, "u", data["u"]),
            "v": rectangle_trial(self.domain, "v", data["v"]),
            "p": rectangle_trial(self.domain, "p", data["p"], ("hi0",)),
        }

    def _compute_reference(self) -> Reference:
        (x0, x1), (y0, y1) = self.domain.bounds.values()
        x = np.linspace(x0, x1, self.params["nx"])
        y = np.linspace(y0, y1, self.params["ny"])
        points = grid_points(x, y)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, y))


# ------------------------------------------------------------------------------------------
class TaylorGreen(_NavierStokes):
    """Decaying Taylor–Green vortex on the periodic square [0, 2 pi]^2 (exact for any nu):
    u = sin x cos y F, v = -cos x sin y F, p = (cos 2x + cos 2y) F^2 / 4, F = e^{-2 nu t}.

    Arguments:
        nu: viscosity (> 0).
        t_final: horizon.
        n_collocation, n_initial, n_boundary: default points (interior, t = 0, periodic pairs
            per axis).
        nx, nt: reference grid: nx x nx periodic points (no endpoint) by nt times.
    """

    name = "taylor_green"

    axes = ("x", "y", "t")
    reference_keys = ("nu", "t_final", "nx", "nt")

    def __init__(
        self,
        nu: float = 0.1,
        t_final: float = 2.0,
        n_collocation: int = 10_000,
        n_initial: int = 1000,
        n_boundary: int = 1000,
        nx: int = 48,
        nt: int = 11,
    ) -> None:
        nu = check_real("nu", nu, minimum=0.0)
        t_final = check_real("t_final", t_final, minimum=0.0)
        super().__init__(
            nu=nu,
            t_final=t_final,
            n_collocation=check_int("n_collocation", n_collocation),
            n_initial=check_int("n_initial", n_initial),
            n_boundary=check_int("n_boundary", n_boundary),
            nx=check_int("nx", nx, minimum=2),
            nt=check_int("nt", nt, minimum=2),
        )
        self.nu, self.t_final = nu, t_final
        self.n_collocation = self.params["n_collocation"]
        two_pi = 2 * math.pi
        self.domain = Box({"x": (0.0, two_pi), "y": (0.0, two_pi), "t": (0.0, t_final)})

    def _exact_torch(self, x: Tensor, y: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decay = torch.exp(-2 * self.nu * t)
        u = torch.sin(x) * torch.cos(y) * decay
        v = -torch.cos(x) * torch.sin(y) * decay
        p = 0.25 * (torch.cos(2 * x) + torch.cos(2 * y)) * decay * decay
        return u, v, p

    def exact(self, points: np.ndarray) -> np.ndarray:
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return torch.stack(self._exact_torch(pts[:, 0], pts[:, 1], pts[:, 2]), dim=1).numpy()

    def conditions(self) -> list[Condition]:
        """`ic`: u, v minus the initial vortex at t = 0; `bc_x`, `bc_y` (and `_d`): periodic
        values and normal derivatives of u, v, p on paired points."""

        def ic(f: Fields) -> Tensor:
            u, v, _ = self._exact_torch(f.x, f.y, torch.zeros_like(f.x))
            return torch.stack([f["u"] - u, f["v"] - v], dim=1)

        n_b = self.params["n_boundary"]
        return [
            Condition(
                "ic",
                lambda n, g=None: self.domain.sample(n, g, t=0.0),
                ic,
                self.params["n_initial"],
            ),
            *periodic_conditions(self.domain, "x", self.fields, n_b),
            *periodic_conditions(self.domain, "y", self.fields, n_b),
        ]

    def trial(self) -> dict[str, str]:
        """The initial velocity holds exactly: u = u0 + (t / t_final) N (periodicity soft)."""
        return {
            "u": "sin(x) * cos(y) + t / t_final * u",
            "v": "-cos(x) * sin(y) + t / t_final * v",
        }

    def _compute_reference(self) -> Reference:
        n = self.params["nx"]
        x = 2 * math.pi * np.arange(n) / n
        t = np.linspace(0.0, self.t_final, self.params["nt"])
        points = grid_points(x, x, t)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, x, t))


# ------------------------------------------------------------------------------------------
class Cavity(_NavierStokes):
    """Steady lid-driven cavity on the unit square; nu = 1/Re.

    Arguments:
        re: Reynolds number (> 0).
        lid: `uniform` (u = 1: the classical problem of Ghia et al. 1982; a discontinuous lid,
            so this case has no trial function), `parabolic` (u = lid_param x (1 - x), default
            4: PINNacle) or `smooth` (u = 1 - cosh(r (x - 1/2)) / cosh(r / 2), r = lid_param,
            default 50).
        lid_param: see `lid`; null for the default.
        n: reference solver cells per side (the reference is converged there: see the solver).
        n_eval: evaluation grid: every (n / (n_eval - 1))-th solver node, walls excluded, so
            (n_eval - 2)^2 points (n divisible by n_eval - 1).
        n_collocation, n_boundary: default interior and wall points.
    """

    name = "cavity"

    axes = ("x", "y")
    domain = Box({"x": (0.0, 1.0), "y": (0.0, 1.0)})
    reference_keys = ("re", "lid", "lid_param", "n", "n_eval")
    default_re = 100.0

    def __init__(
        self,
        re: float | None = None,
        lid: str = "uniform",
        lid_param: float | None = None,
        n: int | None = None,
        n_eval: int = 129,
        n_collocation: int = 2500,
        n_boundary: int = 1000,
    ) -> None:
        from problems.solvers import cavity as solver

        re = check_real("re", self.default_re if re is None else re, minimum=0.0)
        if lid not in solver.LIDS:
            raise ConfigError(f"lid must be one of {', '.join(solver.LIDS)}, got {lid!r}")
        if lid == "uniform" and lid_param is not None:
            raise ConfigError("lid_param applies to the parabolic and smooth lids; set it to null")
        if lid_param is not None:
            lid_param = check_real("lid_param", lid_param, minimum=0.0)
        elif lid != "uniform":
            lid_param = 4.0 if lid == "parabolic" else 50.0
        if n is None:
            n = solver.N_RE1000 if re > 400 else solver.N_RE100
        n = check_int("n", n, minimum=8)
        n_eval = check_int("n_eval", n_eval, minimum=2)
        if n % (n_eval - 1):
            raise ConfigError(f"n ({n}) must be divisible by n_eval - 1 ({n_eval - 1})")
        super().__init__(
            re=re,
            lid=lid,
            lid_param=lid_param,
            n=n,
            n_eval=n_eval,
            n_collocation=check_int("n_collocation", n_collocation),
            n_boundary=check_int("n_boundary", n_boundary),
        )
        self.re, self.nu, self.lid, self.lid_param = re, 1.0 / re, lid, lid_param
        self.n_collocation = self.params["n_collocation"]
        if lid == "uniform":  # no continuous lifting of a discontinuous lid: no trial capability
            self.trial = None  # type: ignore[assignment]

    def _lid_expr(self) -> str:
        """u on the lid as an expression in x (the trial function's data)."""
        if self.lid == "parabolic":
            return f"{self.lid_param!r} * x * (1 - x)"
        r = self.lid_param
        return (
            f"(1 - (exp({r!r} * (x - 0.5)) + exp({-r!r} * (x - 0.5))) / {2 * math.cosh(r / 2)!r})"
        )

    def _lid_torch(self, x: Tensor) -> Tensor:
        if self.lid == "uniform":
            return torch.ones_like(x)
        if self.lid == "parabolic":
            return self.lid_param * x * (1 - x)
        r = self.lid_param
        return 1 - torch.cosh(r * (x - 0.5)) / math.cosh(r / 2)

    def conditions(self) -> list[Condition]:
        """`bc`: u - lid(x) on the lid, u elsewhere on the walls, and v on all walls."""

        def bc(f: Fields) -> Tensor:
            on_lid = f.y >= 1.0
            target = torch.where(on_lid, self._lid_torch(f.x), torch.zeros_like(f.x))
            return torch.stack([f["u"] - target, f["v"]], dim=1)

        return [
            Condition(
                "bc",
                lambda n, g=None: sample_boundary(self.domain, n, g),
                bc,
                self.params["n_boundary"],
            )
        ]

    def trial(self) -> dict[str, str]:
        """u = Coons lifting of (y lid(x)) + bubble * net, v = bubble * net (continuous lids)."""
        return {
            "u": rectangle_trial(self.domain, "u", f"y * {self._lid_expr()}"),
            "v": rectangle_trial(self.domain, "v", "0.0"),
        }

    def _compute_reference(self) -> Reference:
        from problems.solvers.cavity import solve_cavity

        sol = solve_cavity(self.re, self.params["n"], lid=self.lid, lid_param=self.lid_param)
        # every `step`-th node, walls excluded: there the velocity is the boundary data, and
        # the pressure is an extrapolation that diverges at the top corners of a uniform lid
        step = self.params["n"] // (self.params["n_eval"] - 1)
        inner = slice(step, self.params["n"] - step + 1, step)
        x, y = sol.x[inner], sol.y[inner]
        values = np.stack([a[inner, inner].ravel() for a in (sol.u, sol.v, sol.p)], axis=1)
        return Reference(grid_points(x, y), values, grid=(x, y))


class CavityRe1000(Cavity):
    """The lid-driven cavity at Re = 1000 (same arguments as `cavity`)."""

    name = "cavity_re1000"

    default_re = 1000.0
