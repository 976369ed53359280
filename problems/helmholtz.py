"""2-D Helmholtz equation with a manufactured solution: PIG's (Kang et al., ICLR 2025) and
Wang, Teng & Perdikaris's (SISC 2021) benchmark.

    u_xx + u_yy + k^2 u = q(x, y)  on [-1, 1]^2,   u = g on the boundary,
    u = sin(a1 pi x) sin(a2 pi y),  q = (k^2 - (a1^2 + a2^2) pi^2) u,   g = u on the boundary.

For integer a1, a2 the boundary data vanish (g = 0). The default (a1, a2) = (1, 4), k = 1 is the
papers' case (PIG's code writes it sin(4 pi y) sin(pi x)); PIG's hard case is reached with
`problem.a1=10 problem.a2=10`. The reference is exact, on PIG's 250 x 250 test grid.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

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
from problems.constraints import rectangle_trial, sample_boundary
from problems.fields import Fields

if TYPE_CHECKING:
    import sympy

__all__ = ["Helmholtz", "dirichlet_eigenvalue"]


def dirichlet_eigenvalue(k: float, rtol: float = 1e-9) -> tuple[int, int] | None:
    """(m, n) when k^2 is (within `rtol`) an eigenvalue (pi/2)^2 (m^2 + n^2) of -Laplace with
    zero Dirichlet data on [-1, 1]^2 (m, n >= 1); None otherwise."""
    s = (2.0 * k / math.pi) ** 2  # m^2 + n^2 at resonance
    for m in range(1, math.isqrt(int(s)) + 1):
        n = round(math.sqrt(max(s - m * m, 0.0)))
        if n >= 1 and abs(m * m + n * n - s) <= rtol * s:
            return m, n
    return None


class Helmholtz(Problem):
    """Helmholtz on [-1, 1]^2 with u = sin(a1 pi x) sin(a2 pi y) (see the module docstring).

    Arguments:
        a1, a2: frequencies in x and y (> 0; integers or reals: for non-integers the boundary
            data g are not zero).
        k: the wavenumber (>= 0; k^2 must not be a Dirichlet eigenvalue of the square, where the
            solution would not be unique).
        n_collocation: default interior points (PIG: 10,000, resampled every iteration).
        n_boundary: default boundary points, uniform by length over the four sides (PIG uses
            10,000 per side; 1,000 per side is plenty for the data's few oscillations).
        nx, ny: reference grid, linspace(-1, 1, n) each (PIG's test grid: 250 x 250).
    """

    name = "helmholtz"

    axes = ("x", "y")
    fields = ("u",)
    domain = Box({"x": (-1.0, 1.0), "y": (-1.0, 1.0)})
    reference_keys = ("a1", "a2", "nx", "ny")  # k enters q, not u

    def __init__(
        self,
        a1: float = 1.0,
        a2: float = 4.0,
        k: float = 1.0,
        n_collocation: int = 10_000,
        n_boundary: int = 4000,
        nx: int = 250,
        ny: int = 250,
    ) -> None:
        a1 = check_real("a1", a1, minimum=0.0)
        a2 = check_real("a2", a2, minimum=0.0)
        k = check_real("k", k, minimum=0.0, strict=False)
        resonance = dirichlet_eigenvalue(k)
        if resonance is not None:
            raise ConfigError(
                f"k = {k!r}: k^2 is the Dirichlet eigenvalue (pi/2)^2 (m^2 + n^2) with "
                f"(m, n) = {resonance}, so the solution is not unique; choose another k"
            )
        super().__init__(
            a1=a1,
            a2=a2,
            k=k,
            n_collocation=check_int("n_collocation", n_collocation),
            n_boundary=check_int("n_boundary", n_boundary),
            nx=check_int("nx", nx, minimum=2),
            ny=check_int("ny", ny, minimum=2),
        )
        self.a1, self.a2, self.k = a1, a2, k
        self.n_collocation = self.params["n_collocation"]

    @property
    def zero_boundary(self) -> bool:
        """True when the boundary data vanish (a1 and a2 integers)."""
        return self.a1.is_integer() and self.a2.is_integer()

    def exact_torch(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.sin(self.a1 * math.pi * x) * torch.sin(self.a2 * math.pi * y)

    def source(self, x: Tensor, y: Tensor) -> Tensor:
        """q = (k^2 - (a1^2 + a2^2) pi^2) sin(a1 pi x) sin(a2 pi y)."""
        factor = self.k**2 - (self.a1**2 + self.a2**2) * math.pi**2
        return factor * self.exact_torch(x, y)

    def residual(self, f: Fields) -> Tensor:
        """u_xx + u_yy + k^2 u - q, `[N, 1]`."""
        lap = f.d("u", "x", "x") + f.d("u", "y", "y")
        return (lap + self.k**2 * f["u"] - self.source(f.x, f.y))[:, None]

    def symbolic(self) -> list[sympy.Expr]:
        """`residual` in sympy (`core.symbolic` conventions), with pi exact."""
        from core.symbolic import num, sp

        x, y, u, u_xx, u_yy = sp.symbols("x y u u_xx u_yy")
        a1, a2, k = num(self.a1), num(self.a2), num(self.k)
        q = (k**2 - (a1**2 + a2**2) * sp.pi**2) * sp.sin(a1 * sp.pi * x) * sp.sin(a2 * sp.pi * y)
        return [u_xx + u_yy + k**2 * u - q]

    def _boundary_data(self, x: Tensor, y: Tensor) -> Tensor:
        if self.zero_boundary:  # sin(integer pi) is zero; its float value is ~1e-15
            return torch.zeros_like(x)
        return self.exact_torch(x, y)

    def conditions(self) -> list[Condition]:
        """`bc`: u - g on the four sides (g = 0 for integer a1, a2)."""
        return [
            Condition(
                "bc",
                lambda n, g=None: sample_boundary(self.domain, n, g),
                lambda f: (f["u"] - self._boundary_data(f.x, f.y))[:, None],
                self.params["n_boundary"],
            )
        ]

    def trial(self) -> dict[str, str]:
        """Integer a1, a2: u = (1 - x^2)(1 - y^2) N. Otherwise the Coons lifting of the boundary
        data plus a bubble times N (`constraints.rectangle_trial`). Either way the boundary
        condition holds exactly for any net output N, and only boundary values enter."""
        if self.zero_boundary:
            return {"u": "(1 - x**2) * (1 - y**2) * u"}
        data = f"sin({self.a1 * math.pi!r} * x) * sin({self.a2 * math.pi!r} * y)"
        return {"u": rectangle_trial(self.domain, "u", data)}

    def exact(self, points: np.ndarray) -> np.ndarray:
        """u `[M, 1]` at `points` `[M, 2]` (columns x, y)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return self.exact_torch(pts[:, 0], pts[:, 1])[:, None].numpy()

    def _compute_reference(self) -> Reference:
        x = np.linspace(-1.0, 1.0, self.params["nx"])
        y = np.linspace(-1.0, 1.0, self.params["ny"])
        points = grid_points(x, y)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, y))
