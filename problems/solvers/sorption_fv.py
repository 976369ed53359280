"""Cell-centred finite volumes for 1-D diffusion–sorption (Freundlich isotherm), batched.

    R(u) u_t = D u_xx  on (0, 1),   u(t, 0) = u_left,   u(t, 1) + D u_x(t, 1) = 0,
    R(u) = 1 + K n_f u^(n_f - 1),   K = ((1 - phi) / phi) rho_s k.

R is the derivative of the total (dissolved + sorbed) storage S(u) = u + K u^n_f, so the PDE is
the conservation law S(u)_t + F_x = 0 with the diffusive flux F = -D u_x. Each of the n cells
(width h = 1/n, centres (j + 1/2) h) obeys h R(u_j) u_j' = F_{j-1/2} - F_{j+1/2} exactly as
d/dt (h S(u_j)) = F_{j-1/2} - F_{j+1/2}, so the total storage changes only by the boundary
fluxes (`storage`, `boundary_fluxes`; tests/test_diffusion_sorption.py checks the balance).

Fluxes: inside, F = -D (u_{j+1} - u_j) / h. The boundaries use linear ghost cells: Dirichlet,
ghost = 2 u_left - u_0, i.e. F_{1/2} = -2 D (u_0 - u_left) / h; Robin, the ghost g with
(u_{n-1} + g)/2 + D (g - u_{n-1})/h = 0, i.e. the outflow F_{n+1/2} = 2 D u_{n-1} / (2 D + h)
(>= 0 for u >= 0). The matrix is an M-matrix, so the semi-discrete scheme keeps u in
[min(u0, 0), max(u0, u_left)]. The scheme converges at second order in h (tests).

u^(n_f - 1) is singular at u = 0: R uses (max(u, 0) + eps)^(n_f - 1) with eps = 1e-6 (PDEBench's
floor, `(c + 1e-6)**(n_f - 1)`; PI-HC-MoE's residual uses the same), and S is the matching
antiderivative so that S' = R holds exactly, floor included.

Time: scipy's BDF (variable order 1-5) on all trajectories of a batch at once, as one system
with the exact block-tridiagonal Jacobian (sparse LU): the initial layers (u0 need not match
the boundary values) are resolved by the adaptive step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.integrate import solve_ivp

__all__ = [
    "Sorption",
    "average_down",
    "boundary_fluxes",
    "cell_centres",
    "prolong",
    "solve",
]


@dataclass(frozen=True)
class Sorption:
    """Physical parameters (PDEBench's defaults) and the singularity floor `eps`."""

    D: float = 5e-4
    phi: float = 0.29
    rho_s: float = 2880.0
    k: float = 3.5e-4
    n_f: float = 0.874
    u_left: float = 1.0
    eps: float = 1e-6

    @property
    def K(self) -> float:
        """The Freundlich storage coefficient ((1 - phi) / phi) rho_s k."""
        return (1.0 - self.phi) / self.phi * self.rho_s * self.k

    def retardation(self, u: np.ndarray) -> np.ndarray:
        """R(u) = 1 + K n_f (max(u, 0) + eps)^(n_f - 1)."""
        return 1.0 + self.K * self.n_f * (np.maximum(u, 0.0) + self.eps) ** (self.n_f - 1.0)

    def retardation_du(self, u: np.ndarray) -> np.ndarray:
        """dR/du (0 for u < 0, where the floor holds R constant)."""
        a = self.K * self.n_f * (self.n_f - 1.0) * (np.maximum(u, 0.0) + self.eps) ** (self.n_f - 2)
        return np.where(u > 0, a, 0.0)

    def storage(self, u: np.ndarray) -> np.ndarray:
        """S(u) with S(0) = 0 and S' = R (floor included): dissolved + sorbed mass per volume."""
        up = np.maximum(u, 0.0)
        sorbed = self.K * ((up + self.eps) ** self.n_f - self.eps**self.n_f)
        return u + sorbed + np.minimum(u, 0.0) * (self.retardation(0.0 * u) - 1.0)


def cell_centres(n: int) -> np.ndarray:
    """The centres (j + 1/2) / n of n equal cells on [0, 1]."""
    return (np.arange(n, dtype=np.float64) + 0.5) / n


def average_down(u: np.ndarray, s: int) -> np.ndarray:
    """Cell averages on s cells of values on n cells (the last axis; s divides n)."""
    n = u.shape[-1]
    if n % s:
        raise ValueError(f"{s} cells do not divide {n}")
    return u.reshape(*u.shape[:-1], s, n // s).mean(axis=-1)


def prolong(u: np.ndarray, n: int) -> np.ndarray:
    """Values on n cells from cell averages on s cells (the last axis; s divides n, s >= 3):
    piecewise-linear reconstruction with central slopes (one-sided in the end cells), which
    keeps every cell average and is exact for linear profiles."""
    s = u.shape[-1]
    if n % s:
        raise ValueError(f"{s} cells do not divide {n}")
    r = n // s
    if r == 1:
        return u.copy()
    slope = np.empty_like(u)  # per coarse cell width
    slope[..., 1:-1] = (u[..., 2:] - u[..., :-2]) / 2
    slope[..., 0] = u[..., 1] - u[..., 0]
    slope[..., -1] = u[..., -1] - u[..., -2]
    offset = (np.arange(r) + 0.5) / r - 0.5  # fine centres relative to the coarse centre
    return (u[..., None] + slope[..., None] * offset).reshape(*u.shape[:-1], n)


def boundary_fluxes(u: np.ndarray, p: Sorption) -> tuple[np.ndarray, np.ndarray]:
    """(inflow at x = 0, outflow at x = 1) of the scheme, for states `u` `[..., n]`."""
    h = 1.0 / u.shape[-1]
    inflow = 2.0 * p.D * (p.u_left - u[..., 0]) / h
    outflow = 2.0 * p.D * u[..., -1] / (2.0 * p.D + h)
    return inflow, outflow


def _operator(n: int, batch: int, p: Sorption) -> tuple[sp.csc_matrix, np.ndarray]:
    """A, b with (A u + b)_j = (F_{j-1/2} - F_{j+1/2}) / h for `batch` stacked states."""
    h = 1.0 / n
    c = p.D / h**2
    main = np.full((batch, n), -2.0 * c)
    main[:, 0] = -3.0 * c  # Dirichlet: -c (to the right) - 2c (to the face)
    main[:, -1] = -c - c * 2.0 * h / (2.0 * p.D + h)  # Robin outflow
    off = np.full((batch, n), c)
    off[:, -1] = 0.0  # no coupling between samples
    m = batch * n
    a = sp.diags([main.ravel(), off.ravel()[:-1], off.ravel()[:-1]], [0, -1, 1], (m, m))
    b = np.zeros((batch, n))
    b[:, 0] = 2.0 * c * p.u_left
    return a.tocsc(), b.ravel()


def solve(
    u0: np.ndarray,
    times: np.ndarray,
    p: Sorption,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> np.ndarray:
    """States `[B, len(times), n]` at `times` (times[0] = the start) from cell values `u0`
    `[B, n]`, by BDF with the exact sparse Jacobian; all B trajectories share the steps."""
    u0 = np.atleast_2d(np.asarray(u0, dtype=np.float64))
    batch, n = u0.shape
    times = np.asarray(times, dtype=np.float64)
    a, b = _operator(n, batch, p)

    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return (a @ u + b) / p.retardation(u)

    def jac(t: float, u: np.ndarray) -> sp.csc_matrix:
        r = p.retardation(u)
        flux = a @ u + b
        return (sp.diags(1.0 / r) @ a + sp.diags(-p.retardation_du(u) * flux / r**2)).tocsc()

    if len(times) == 1:
        return u0[:, None].copy()
    sol = solve_ivp(
        rhs,
        (times[0], times[-1]),
        u0.ravel(),
        method="BDF",
        t_eval=times,
        jac=jac,
        rtol=rtol,
        atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"the sorption solver failed: {sol.message}")
    return sol.y.reshape(batch, n, len(times)).transpose(0, 2, 1)
