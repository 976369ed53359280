"""1-D viscous Burgers, Raissi et al.'s PINN benchmark (arXiv:1711.10561).

    u_t + u u_x = nu u_xx,   x in [-1, 1], t in [0, 1],
    u(x, 0) = -sin(pi x),    u(-1, t) = u(1, t) = 0,   nu = 0.01/pi by default.

A shock forms at x = 0 near t = 1/pi. The reference is the Cole–Hopf exact solution
(`problems/solvers/cole_hopf.py`) on Raissi's 256 x 100 grid, which matches his
`burgers_shock.mat` to rel-L2 ~3e-12.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from problems.base import Box, Condition, ConfigError, Problem, Reference, check_int
from problems.fields import Fields
from problems.solvers.cole_hopf import NU_RAISSI, cole_hopf_hermite

if TYPE_CHECKING:
    import sympy

__all__ = ["Burgers"]

N_HERMITE = 128  # Gauss–Hermite nodes: converged to round-off on t <= 1 for nu = 0.01/pi


class Burgers(Problem):
    """Viscous Burgers with a sine initial condition and zero Dirichlet boundaries.

    Arguments:
        nu: viscosity (> 0).
        n_collocation: default number of interior collocation points for methods.
        n_initial: default number of initial-condition points (t = 0).
        n_boundary: default number of boundary points (x = +-1, half on each side).
        nx, nt: reference grid size; x = linspace(-1, 1, nx), t = linspace(0, 0.99, nt)
            (Raissi's grid for 256 x 100).
    """

    name = "burgers"

    axes = ("x", "t")
    fields = ("u",)
    domain = Box({"x": (-1.0, 1.0), "t": (0.0, 1.0)})
    reference_keys = ("nu", "nx", "nt")  # training-point counts do not change the reference

    def __init__(
        self,
        nu: float = NU_RAISSI,
        n_collocation: int = 8000,
        n_initial: int = 200,
        n_boundary: int = 200,
        nx: int = 256,
        nt: int = 100,
    ) -> None:
        if (
            isinstance(nu, bool)
            or not isinstance(nu, numbers.Real)
            or not math.isfinite(nu)
            or nu <= 0
        ):
            raise ConfigError(f"nu must be a finite number > 0, got {nu!r}")
        nu = float(nu)
        n_collocation = check_int("n_collocation", n_collocation)
        n_initial = check_int("n_initial", n_initial)
        n_boundary = check_int("n_boundary", n_boundary)
        nx = check_int("nx", nx, minimum=2)
        nt = check_int("nt", nt, minimum=2)
        super().__init__(
            nu=nu,
            n_collocation=n_collocation,
            n_initial=n_initial,
            n_boundary=n_boundary,
            nx=nx,
            nt=nt,
        )
        self.nu = nu
        self.n_collocation = n_collocation
        self.n_initial = n_initial
        self.n_boundary = n_boundary
        self.nx = nx
        self.nt = nt

    # -- equations ------------------------------------------------------------------------
    def residual(self, f: Fields) -> Tensor:
        """u_t + u u_x - nu u_xx, shape `[N, 1]`."""
        u = f["u"]
        return (f.d("u", "t") + u * f.d("u", "x") - self.nu * f.d("u", "x", "x"))[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions)."""
        from core.symbolic import num, sp

        u, u_x, u_t, u_xx = sp.symbols("u u_x u_t u_xx")
        return [u_t + u * u_x - num(self.nu) * u_xx]

    def conditions(self) -> list[Condition]:
        """`ic`: u + sin(pi x) at t = 0; `bc`: u at x = +-1 (alternating sides), random t."""

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            return self.domain.sample(n, generator, t=0.0)

        def sample_bc(n: int, generator: torch.Generator | None = None) -> Tensor:
            pts = self.domain.sample(n, generator)
            pts[:, 0] = torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0).to(pts.dtype)
            return pts

        return [
            Condition(
                "ic",
                sample_ic,
                lambda f: (f["u"] + torch.sin(math.pi * f.x))[:, None],
                self.n_initial,
            ),
            Condition("bc", sample_bc, lambda f: f["u"][:, None], self.n_boundary),
        ]

    def trial(self) -> dict[str, str]:
        """u(x, 0) = -sin(pi x) and u(+-1, t) = 0 hold exactly for any net output u."""
        return {"u": "t * (1 - x**2) * u - sin(pi * x)"}

    # -- reference ------------------------------------------------------------------------
    def exact(self, points: np.ndarray) -> np.ndarray:
        """Cole–Hopf solution `[M, 1]` at `points` `[M, 2]` (columns x, t), by Gauss–Hermite."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"expected points of shape [M, 2] (x, t), got {points.shape}")
        return cole_hopf_hermite(points[:, 0], points[:, 1], self.nu, n=N_HERMITE)[:, None]

    def _compute_reference(self) -> Reference:
        x = np.linspace(-1.0, 1.0, self.nx)
        t = np.linspace(0.0, 0.99, self.nt)
        X, T = np.meshgrid(x, t, indexing="ij")
        points = np.stack([X.ravel(), T.ravel()], axis=1)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, t))
