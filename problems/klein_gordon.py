"""1-D nonlinear Klein–Gordon equation with a manufactured solution: Wang, Teng & Perdikaris
(SISC 43(5), 2021, "gradient pathologies"), their `Klein Gordon/Klein_Gordon.py`.

    u_tt + alpha u_xx + beta u + gamma u^3 = f(x, t),   x in [0, 1], t in [0, 1],
    u = x cos(5 pi t) + (x t)^3   (exact),   f from it;
    u(x, 0) = x,   u_t(x, 0) = 0,   u(0, t) = 0,   u(1, t) = cos(5 pi t) + t^3.

alpha = -1, beta = 0, gamma = 1 as in the paper. The reference is exact, on their 100 x 100
test grid.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from problems.base import Box, Condition, Problem, Reference, check_int, check_real, grid_points
from problems.constraints import sample_boundary
from problems.fields import Fields

if TYPE_CHECKING:
    import sympy

__all__ = ["KleinGordon"]

OMEGA = 5.0 * math.pi


class KleinGordon(Problem):
    """Klein–Gordon with the cubic nonlinearity (see the module docstring).

    Arguments:
        alpha, beta, gamma: the coefficients (any reals; f follows from the exact solution).
        n_collocation: default interior points (Wang et al. draw batches of 128 every step;
            a fixed set needs more).
        n_initial: default points at t = 0, for each of `ic` and `ic_t`.
        n_boundary: default boundary points (x = 0 and x = 1, half each).
        nx, nt: reference grid, linspace(0, 1, n) each (Wang et al.'s 100 x 100).
    """

    name = "klein_gordon"

    axes = ("x", "t")
    fields = ("u",)
    domain = Box({"x": (0.0, 1.0), "t": (0.0, 1.0)})
    reference_keys = ("nx", "nt")  # u does not depend on the coefficients

    def __init__(
        self,
        alpha: float = -1.0,
        beta: float = 0.0,
        gamma: float = 1.0,
        n_collocation: int = 10_000,
        n_initial: int = 500,
        n_boundary: int = 500,
        nx: int = 100,
        nt: int = 100,
    ) -> None:
        super().__init__(
            alpha=check_real("alpha", alpha),
            beta=check_real("beta", beta),
            gamma=check_real("gamma", gamma),
            n_collocation=check_int("n_collocation", n_collocation),
            n_initial=check_int("n_initial", n_initial),
            n_boundary=check_int("n_boundary", n_boundary),
            nx=check_int("nx", nx, minimum=2),
            nt=check_int("nt", nt, minimum=2),
        )
        self.alpha, self.beta, self.gamma = (self.params[k] for k in ("alpha", "beta", "gamma"))
        self.n_collocation = self.params["n_collocation"]

    @staticmethod
    def exact_torch(x: Tensor, t: Tensor) -> Tensor:
        return x * torch.cos(OMEGA * t) + (x * t) ** 3

    def forcing(self, x: Tensor, t: Tensor) -> Tensor:
        """f = u_tt + alpha u_xx + beta u + gamma u^3 of the exact solution."""
        u = self.exact_torch(x, t)
        u_tt = -(OMEGA**2) * x * torch.cos(OMEGA * t) + 6.0 * x**3 * t
        u_xx = 6.0 * x * t**3
        return u_tt + self.alpha * u_xx + self.beta * u + self.gamma * u**3

    def residual(self, f: Fields) -> Tensor:
        """u_tt + alpha u_xx + beta u + gamma u^3 - f, `[N, 1]`."""
        u = f["u"]
        lhs = f.d("u", "t", "t") + self.alpha * f.d("u", "x", "x") + self.beta * u
        return (lhs + self.gamma * u**3 - self.forcing(f.x, f.t))[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions); f is derived from the exact
        solution symbolically, with pi exact."""
        from core.symbolic import num, sp

        x, t, u, u_xx, u_tt = sp.symbols("x t u u_xx u_tt")
        alpha, beta, gamma = num(self.alpha), num(self.beta), num(self.gamma)
        exact = x * sp.cos(5 * sp.pi * t) + (x * t) ** 3
        forcing = sp.diff(exact, t, 2) + alpha * sp.diff(exact, x, 2) + beta * exact
        forcing += gamma * exact**3
        return [u_tt + alpha * u_xx + beta * u + gamma * u**3 - forcing]

    def conditions(self) -> list[Condition]:
        """`ic`: u - x at t = 0; `ic_t`: u_t at t = 0; `bc`: u - g at x = 0 and x = 1, with
        g(0, t) = 0 and g(1, t) = cos(5 pi t) + t^3."""

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            return self.domain.sample(n, generator, t=0.0)

        def sample_bc(n: int, generator: torch.Generator | None = None) -> Tensor:
            return sample_boundary(self.domain, n, generator, ("lo0", "hi0"))

        n_ic = self.params["n_initial"]
        return [
            Condition("ic", sample_ic, lambda f: (f["u"] - f.x)[:, None], n_ic),
            Condition("ic_t", sample_ic, lambda f: f.d("u", "t")[:, None], n_ic),
            Condition(
                "bc",
                sample_bc,
                lambda f: (f["u"] - f.x * (torch.cos(OMEGA * f.t) + f.t**3))[:, None],
                self.params["n_boundary"],
            ),
        ]

    def trial(self) -> dict[str, str]:
        """u = x (cos(5 pi t) + t^3) + x (1 - x) t^2 N: the boundary data lifted linearly in x
        (at t = 0 the lift is x, with zero t-derivative), plus a factor vanishing at x = 0,
        x = 1 and, doubly, at t = 0. All three conditions hold for any net output N."""
        return {"u": "x * (cos(5 * pi * t) + t**3) + x * (1 - x) * t**2 * u"}

    def exact(self, points: np.ndarray) -> np.ndarray:
        """u `[M, 1]` at `points` `[M, 2]` (columns x, t)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return self.exact_torch(pts[:, 0], pts[:, 1])[:, None].numpy()

    def _compute_reference(self) -> Reference:
        x = np.linspace(0.0, 1.0, self.params["nx"])
        t = np.linspace(0.0, 1.0, self.params["nt"])
        points = grid_points(x, t)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, t))
