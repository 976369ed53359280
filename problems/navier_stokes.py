"""2-D incompressible Navier–Stokes (rho = 1): four cases with exact or validated references.

Primitive variables (`kovasznay`, `taylor_green`, `cavity`, `cavity_re1000`), fields (u, v, p):

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

Vorticity form (`ns_vorticity`), fields (w, u, v), on the unit torus:

    w_t + u w_x + v w_y - nu (w_xx + w_yy) - f = 0,   w - (v_x - u_y) = 0,   u_x + v_y = 0

with the FNO benchmark's forcing f = 0.1 [sin 2 pi (x + y) + cos 2 pi (x + y)] and an initial
vorticity drawn (seeded) from its Gaussian random field (`kolmogorov`: Kolmogorov forcing
f = -2 pi k scale cos(2 pi k y) with linear drag, + drag w in the first equation); reference
from the batched pseudo-spectral solver `problems/solvers/ns_spectral.py`, the same one that
generates operator data.

Pressure is defined up to a constant (per time, when unsteady): the harness compares it after
the best constant shift (`gauge_fields`). Every case reports `rel_l2_velocity` (u and v pooled)
and the RMS divergence of the prediction on fresh points (`divergence_rms`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.registry import register_problem
from problems.base import (
    Box,
    Condition,
    ConfigError,
    Fields,
    Problem,
    Reference,
    check_int,
    check_real,
)
from problems.constraints import SIDES, periodic_conditions, rectangle_trial

__all__ = ["Cavity", "CavityRe1000", "Kolmogorov", "Kovasznay", "NSVorticity", "TaylorGreen"]


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


def _divergence(f: Fields) -> Tensor:
    return f.d("u", "x") + f.d("v", "y")


def sample_boundary(
    box: Box, n: int, generator: torch.Generator | None = None, sides=SIDES
) -> Tensor:
    """`n` points uniform by length on the given sides of the 2-D `box` (its first two axes;
    further axes, e.g. time, uniform in their range)."""
    (a0, (lo0, hi0)), (a1, (lo1, hi1)) = list(box.bounds.items())[:2]
    length = {"lo0": hi1 - lo1, "hi0": hi1 - lo1, "lo1": hi0 - lo0, "hi1": hi0 - lo0}
    weights = torch.tensor([length[s] for s in sides], dtype=torch.float64)
    which = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    pts = box.sample(n, generator)
    fix = {"lo0": (0, lo0), "hi0": (0, hi0), "lo1": (1, lo1), "hi1": (1, hi1)}
    for i, side in enumerate(sides):
        col, value = fix[side]
        pts[which == i, col] = value
    return pts


class _NavierStokes(Problem):
    """Shared parts of the primitive-variable cases: residual, diagnostics, metrics."""

    fields = ("u", "v", "p")
    gauge_fields = ("p",)
    field_groups = {"velocity": ("u", "v")}
    nu: float

    def residual(self, f: Fields) -> Tensor:
        ru, rv = _momentum(f, self.nu, self.time_dependent)
        return torch.stack([ru, rv, _divergence(f)], dim=1)

    def diagnostics(self, f: Fields) -> dict[str, Tensor]:
        return {"divergence": _divergence(f)}


def _grid_points(*axes: np.ndarray) -> np.ndarray:
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


# ------------------------------------------------------------------------------------------
@register_problem("kovasznay")
class Kovasznay(_NavierStokes):
    """Kovasznay flow: u = 1 - e^{lam x} cos 2 pi y, v = lam/(2 pi) e^{lam x} sin 2 pi y,
    p = (1 - e^{2 lam x})/2, lam = Re/2 - sqrt(Re^2/4 + 4 pi^2); nu = 1/Re.

    Arguments:
        re: Reynolds number (> 0).
        n_collocation, n_boundary: default interior and boundary points (DeepXDE: 2601, 400).
        n_outlet: default points for the outlet pressure condition at x = 1.
        nx, ny: reference grid (linspace over the domain).
    """

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
        points = _grid_points(x, y)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, y))


# ------------------------------------------------------------------------------------------
@register_problem("taylor_green")
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
        points = _grid_points(x, x, t)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, x, t))


# ------------------------------------------------------------------------------------------
LIDS = ("uniform", "parabolic", "smooth")


@register_problem("cavity")
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
        if lid not in LIDS:
            raise ConfigError(f"lid must be one of {', '.join(LIDS)}, got {lid!r}")
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
        return Reference(_grid_points(x, y), values, grid=(x, y))


@register_problem("cavity_re1000")
class CavityRe1000(Cavity):
    """The lid-driven cavity at Re = 1000 (same arguments as `cavity`)."""

    default_re = 1000.0


# ------------------------------------------------------------------------------------------
@register_problem("ns_vorticity")
class NSVorticity(Problem):
    """2-D periodic vorticity form on the unit torus with the FNO forcing (see module doc).

    Arguments:
        nu: viscosity (> 0).
        t_final: horizon.
        s: spectral grid size per axis (also the reference grid).
        nt: reference snapshots, linspace(0, t_final, nt).
        dt: solver time step.
        seed: the initial vorticity's draw from the FNO Gaussian random field.
        n_collocation, n_initial, n_boundary: default points (interior, t = 0 on grid nodes,
            periodic pairs per axis).
    """

    axes = ("x", "y", "t")
    fields = ("w", "u", "v")
    field_groups = {"velocity": ("u", "v")}
    reference_keys = ("nu", "t_final", "s", "nt", "dt", "seed")
    reference_version = 1

    def __init__(
        self,
        nu: float = 1e-3,
        t_final: float = 5.0,
        s: int = 64,
        nt: int = 26,
        dt: float = 1e-3,
        seed: int = 0,
        n_collocation: int = 20_000,
        n_initial: int = 2048,
        n_boundary: int = 1000,
    ) -> None:
        nu = check_real("nu", nu, minimum=0.0)
        t_final = check_real("t_final", t_final, minimum=0.0)
        dt = check_real("dt", dt, minimum=0.0)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        s = check_int("s", s, minimum=8)
        nt = check_int("nt", nt, minimum=2)
        steps = t_final / dt / (nt - 1)
        if abs(steps - round(steps)) > 1e-9 * steps:
            raise ConfigError(
                f"t_final / (nt - 1) ({t_final / (nt - 1):g}) must be a whole number of dt ({dt:g})"
            )
        super().__init__(
            nu=nu,
            t_final=t_final,
            s=s,
            nt=nt,
            dt=dt,
            seed=int(seed),
            n_collocation=check_int("n_collocation", n_collocation),
            n_initial=check_int("n_initial", n_initial),
            n_boundary=check_int("n_boundary", n_boundary),
        )
        self.nu, self.t_final, self.s = nu, t_final, s
        self.n_collocation = self.params["n_collocation"]
        self.domain = Box({"x": (0.0, 1.0), "y": (0.0, 1.0), "t": (0.0, t_final)})
        self._w0: dict[str, Tensor] = {}

    def initial(self) -> tuple[Tensor, Tensor, Tensor]:
        """Initial (w, u, v) on the s x s grid, `[s, s]` each (float64, CPU)."""
        from problems.solvers import ns_spectral as sp

        if not self._w0:
            w0 = sp.grf(1, self.s, seed=self.params["seed"])
            u0, v0 = sp.velocity(w0)
            self._w0 = {"w": w0[0].cpu(), "u": u0[0].cpu(), "v": v0[0].cpu()}
        return self._w0["w"], self._w0["u"], self._w0["v"]

    drag = 0.0  # linear damping coefficient (the term + drag w)

    def forcing(self, x: Tensor, y: Tensor) -> Tensor:
        """The vorticity forcing at points (the FNO benchmark's)."""
        phase = 2 * math.pi * (x + y)
        return 0.1 * (torch.sin(phase) + torch.cos(phase))

    def _forcing_grid(self) -> Tensor:
        from problems.solvers import ns_spectral as sp

        return sp.fno_forcing(self.s)

    def residual(self, f: Fields) -> Tensor:
        w, u, v = f["w"], f["u"], f["v"]
        transport = f.d("w", "t") + u * f.d("w", "x") + v * f.d("w", "y") + self.drag * w
        transport = transport - self.nu * (f.d("w", "x", "x") + f.d("w", "y", "y"))
        transport = transport - self.forcing(f.x, f.y)
        curl = w - (f.d("v", "x") - f.d("u", "y"))
        return torch.stack([transport, curl, _divergence(f)], dim=1)

    def diagnostics(self, f: Fields) -> dict[str, Tensor]:
        return {"divergence": _divergence(f)}

    def conditions(self) -> list[Condition]:
        """`ic`: (w, u, v) minus the initial fields on random grid nodes at t = 0;
        `bc_x`, `bc_y` (and `_d`): periodic values and normal derivatives."""
        s = self.s

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            idx = torch.randint(0, s, (n, 2), generator=generator)
            t = torch.zeros(n, 1, dtype=torch.float64)
            return torch.cat([idx.double() / s, t], dim=1)

        def ic(f: Fields) -> Tensor:
            i = torch.round(f.x.detach() * s).long().cpu() % s
            j = torch.round(f.y.detach() * s).long().cpu() % s
            target = torch.stack([a[i, j] for a in self.initial()], dim=1)
            pred = torch.stack([f["w"], f["u"], f["v"]], dim=1)
            return pred - target.to(pred)

        n_b = self.params["n_boundary"]
        return [
            Condition("ic", sample_ic, ic, self.params["n_initial"]),
            *periodic_conditions(self.domain, "x", self.fields, n_b),
            *periodic_conditions(self.domain, "y", self.fields, n_b),
        ]

    def _compute_reference(self) -> Reference:
        from problems.solvers import ns_spectral as sp

        w0, _, _ = self.initial()
        nt = self.params["nt"]
        times, w = sp.solve_vorticity(
            w0[None],
            self._forcing_grid(),
            self.nu,
            self.t_final,
            nt - 1,
            dt=self.params["dt"],
            drag=self.drag,
        )
        times = np.asarray(times, dtype=np.float64)
        if len(times) == nt - 1:  # the solver records t > 0 only
            w = torch.cat([w0[None, None].to(w), w], dim=1)
            times = np.concatenate([[0.0], times])
        w = w[0]  # [nt, s, s]
        u, v = sp.velocity(w)
        x = sp.grid(self.s)
        t = np.linspace(0.0, self.t_final, nt)
        if not np.allclose(times, t, atol=1e-9):
            raise RuntimeError(f"solver recorded times {times} instead of {t}")
        # values on the (x, y, t) grid: move time last
        values = np.stack([a.permute(1, 2, 0).cpu().numpy().ravel() for a in (w, u, v)], axis=1)
        return Reference(_grid_points(x, x, t), values, grid=(x, x, t))


@register_problem("kolmogorov")
class Kolmogorov(NSVorticity):
    """Kolmogorov flow in vorticity form on the unit torus: the body force
    (scale sin 2 pi k y, 0), i.e. the vorticity forcing f = -2 pi k scale cos(2 pi k y), with
    linear drag (+ drag w), from a GRF initial vorticity. The laminar state
    w = f / (nu (2 pi k)^2 + drag) is steady and exact (checked in the solver's tests).

    Arguments: those of `ns_vorticity`, plus `k` (forcing wavenumber), `scale` and `drag`.
    At the YAML's defaults (nu = 4e-3, s = 64, dt = 5e-4) the reference is converged in space
    to ~3e-7 (against s = 128) and in time to ~4e-6 (from dt = 1e-3 vs 5e-4), relative L2.
    """

    reference_keys = (*NSVorticity.reference_keys, "k", "scale", "drag")

    def __init__(
        self,
        k: int = 2,
        scale: float = 1.0,
        drag: float = 0.1,
        nu: float = 4e-3,
        dt: float = 5e-4,
        **kw: Any,
    ) -> None:
        k = check_int("k", k)
        scale = check_real("scale", scale)
        drag = check_real("drag", drag, minimum=0.0, strict=False)
        super().__init__(nu=nu, dt=dt, **kw)
        if 3 * k >= self.s:
            raise ConfigError(f"k = {k} is removed by the 2/3 rule on s = {self.s}: use s > 3 k")
        self.params.update(k=k, scale=scale, drag=drag)
        self.k, self.scale, self.drag = k, scale, drag

    def forcing(self, x: Tensor, y: Tensor) -> Tensor:
        return -2 * math.pi * self.k * self.scale * torch.cos(2 * math.pi * self.k * y)

    def _forcing_grid(self) -> Tensor:
        from problems.solvers import ns_spectral as sp

        return sp.kolmogorov_forcing(self.s, k=self.k, scale=self.scale)
