"""Steady lid-driven cavity: second-order MAC finite volumes solved by Newton's method.

    u u_x + v u_y + p_x - (u_xx + u_yy) / Re = 0
    u v_x + v v_y + p_y - (v_xx + v_yy) / Re = 0
    u_x + v_y = 0

on the unit square, no-slip walls, and the lid y = 1 moving with u = lid(x), v = 0 (`lid_profile`).

Space: the staggered (MAC) grid of n x n cells of side h = 1/n: u on vertical faces, v on
horizontal faces, p at cell centres; the advection terms in conservative form with central
averages (Harlow & Welch), the Laplacian by 5-point differences, and the tangential wall velocity
through a quadratic ghost value u_ghost = (8 u_wall - 6 u_1 + u_2) / 3, so the wall shear is
consistent. Everything is second order in h.

Pressure-free solve: on the MAC grid the discretely divergence-free face fields are exactly the
differences of a node-based stream function, u = d psi / dy, v = -d psi / dx (psi = 0 on the
walls). Writing the momentum residual R(u, v) - with the pressure gradient left out - in terms of
psi and applying the discrete curl (the transpose of the map psi -> (u, v)) removes the pressure
and leaves one equation per interior node. Its solution is the MAC solution: the curl's null
space is exactly the range of the discrete gradient, so afterwards G p = -R has an exact
least-squares solution, the cell-centre pressure. This has a third of the saddle-point system's
unknowns and no zero pivots. Newton's method with a sparse LU (SuperLU) solves it; the initial
guess comes from the same problem on a grid half as fine (grid sequencing), and on the coarsest
grid from continuation in Re starting at Stokes flow.

Output: u, v, p on the (n + 1)^2 nodes of the uniform grid, by 4-point Lagrange interpolation
(fourth order) from the faces and cell centres, wall values included exactly. Verified in
tests/test_cavity_solver.py: second-order convergence to a manufactured solution (u, v, p and the
nodal divergence), a finite-difference check of the Newton Jacobian, a discretely divergence-free
MAC field, mirror symmetry of Stokes flow, second-order convergence of the centreline extrema,
and the Re = 100 centreline profiles of Ghia, Ghia & Shin (J. Comput. Phys. 48 (1982) 387).
benchmarks/cavity.py: the Richardson limits of the centreline extrema (its three finest grids) match
the quoted high-accuracy values of Marchi et al. (Re = 100) and Botella & Peyret (Re = 1000) to
about 1e-6.

The uniform lid is discontinuous at the top corners, where the exact pressure and vorticity are
unbounded: the nodal p at the two top corner nodes is an extrapolation and grows with n.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.fft import dctn, idctn
from scipy.interpolate import RectBivariateSpline
from scipy.optimize import minimize_scalar
from scipy.sparse.linalg import splu

__all__ = [
    "LIDS",
    "N_RE100",
    "N_RE1000",
    "CavitySolution",
    "centreline_extrema",
    "lid_profile",
    "solve_cavity",
]

LIDS = ("uniform", "parabolic", "smooth")
"""Lid profiles accepted by `lid_profile` and `solve_cavity`."""

N_RE100 = 512
"""Production cells per side at Re = 100: centreline extrema within 8e-5 of their Richardson
limits already at n = 256 (benchmarks/cavity.py), but whole fields converge more slowly near the
singular corners: on the interior nodes of a 129^2 grid, n = 256 and 512 differ by 1.1e-3 (u),
9.6e-4 (v), 2.4e-3 (p) in relative L2, n = 128 and 256 by 2.1e-3, 2.5e-3 and 2.7e-2, so n = 512
is within about 5e-4 everywhere; about 10 s."""

N_RE1000 = 1024
"""Production cells per side at Re = 1000: centreline extrema within 9e-5 of their Richardson
limits; about 1 min and 4 GB of memory."""

_COARSEST = 32  # grid sequencing stops halving below this many cells per side
_MAX_NEWTON = 30


@dataclass
class CavitySolution:
    """Steady cavity flow at the nodes of the uniform grid (arrays `[nx, ny]`, first index x)."""

    x: np.ndarray  # [n + 1] node x-coordinates, 0 and 1 included
    y: np.ndarray  # [n + 1] node y-coordinates
    u: np.ndarray  # [n + 1, n + 1]; wall values are the boundary conditions (the lid's at y = 1)
    v: np.ndarray  # [n + 1, n + 1]; zero on the walls
    p: np.ndarray  # [n + 1, n + 1]; zero mean over the square (mean of the cell values)
    re: float
    n: int  # cells per side
    iterations: int  # Newton steps (fresh or chord) on the finest grid
    residual: float  # final max-norm of the momentum equations over 4 / (h^2 Re)
    psi: np.ndarray | None = None  # [n + 1, n + 1] discrete stream function; the MAC faces'
    # velocities are its differences, u = d psi / dy, v = -d psi / dx


def lid_profile(kind: str, x: np.ndarray, lid_param: float | None = None) -> np.ndarray:
    """Lid velocity u(x, 1) for a lid `kind` in `LIDS`.

    `uniform`: 1 (also at the corners x = 0, 1). `parabolic`: a x (1 - x), a = `lid_param`
    (default 4). `smooth`: 1 - cosh(r (x - 1/2)) / cosh(r / 2), r = `lid_param` (default 50).
    """
    x = np.asarray(x, dtype=np.float64)
    if kind not in LIDS:
        raise ValueError(f"lid must be one of {LIDS}, got {kind!r}")
    if kind == "uniform":
        if lid_param is not None:
            raise ValueError("lid_param applies to the parabolic and smooth lids; pass None")
        return np.ones_like(x)
    if lid_param is None:
        lid_param = 4.0 if kind == "parabolic" else 50.0
    if isinstance(lid_param, bool) or not isinstance(lid_param, numbers.Real):
        raise ValueError(f"lid_param must be a real number, got {lid_param!r}")
    a = float(lid_param)
    if not math.isfinite(a) or (kind == "smooth" and a <= 0):
        raise ValueError(f"lid_param must be finite (and > 0 for the smooth lid), got {a!r}")
    if kind == "parabolic":
        return a * x * (1.0 - x)
    # cosh(a s) / cosh(a / 2) with s = |x - 1/2| <= 1/2, written without overflow for large a
    s = np.abs(x - 0.5)
    return 1.0 - np.exp(a * (s - 0.5)) * (1.0 + np.exp(-2 * a * s)) / (1.0 + np.exp(-a))


def solve_cavity(
    re: float,
    n: int,
    lid: str = "uniform",
    lid_param: float | None = None,
    tol: float = 1e-10,
) -> CavitySolution:
    """Solve the steady cavity at Reynolds number `re` on n x n MAC cells.

    Arguments:
        re: Reynolds number (> 0); nu = 1 / re.
        n: cells per side, even (so that x = 1/2 and y = 1/2 are grid lines) and >= 4.
        lid: lid profile, one of `LIDS` (see `lid_profile`).
        lid_param: the lid's parameter (None for its default).
        tol: Newton stops when the last update changed no face velocity by more than `tol`.

    Returns:
        `CavitySolution` on the (n + 1) x (n + 1) nodes. `residual` is the final max-norm of
        the discrete momentum equations divided by their viscous diagonal 4 / (h^2 Re), which
        gives it velocity units.

    Cost (one shared 2-core CPU): n = 256 about 2 s; n = 1024 about 1 min and 4 GB of memory,
    nearly all in one sparse LU factorisation.
    """
    re = _check_positive("re", re)
    tol = _check_positive("tol", tol)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 4 or n % 2:
        raise ValueError(f"n must be an even integer >= 4 (cells per side), got {n!r}")
    n = int(n)
    lid_profile(lid, np.zeros(1), lid_param)  # validates lid and lid_param
    return _solve(re, n, lambda x: lid_profile(lid, x, lid_param), tol)


def centreline_extrema(sol: CavitySolution) -> dict[str, float]:
    """Extrema of u on x = 1/2 and of v on y = 1/2, from bicubic spline interpolation of the nodes.

    Returns `u_min` and its `y_u_min`, `v_min` and its `x_v_min`, `v_max` and its `x_v_max`.
    """
    u = RectBivariateSpline(sol.x, sol.y, sol.u, kx=3, ky=3, s=0)
    v = RectBivariateSpline(sol.x, sol.y, sol.v, kx=3, ky=3, s=0)
    lines = {
        "u_min": ("y", lambda s: u(0.5, s, grid=False)),
        "v_min": ("x", lambda s: v(s, 0.5, grid=False)),
        "v_max": ("x", lambda s: -v(s, 0.5, grid=False)),
    }
    out = {}
    for name, (coord, line) in lines.items():
        s = np.linspace(0.0, 1.0, 8 * sol.n + 1)  # bracket the minimum, then refine it
        k = int(np.argmin(line(s)))
        bounds = (s[max(k - 1, 0)], s[min(k + 1, s.size - 1)])
        res = minimize_scalar(line, bounds=bounds, method="bounded", options={"xatol": 1e-12})
        out[name] = float(res.fun) * (-1.0 if name == "v_max" else 1.0)
        out[f"{coord}_{name}"] = float(res.x)
    return out


# -- discretisation ----------------------------------------------------------------------------
# Grid index types along one axis: "N" = interior nodes k h (k = 1..n-1), "C" = cell centres
# (k + 1/2) h (k = 0..n-1). u lives on (N, C), v on (C, N), p on (C, C), psi on (N, N); arrays are
# flattened in C order (index = i * len_y + j), so an operator A_x (x) B_y is kron(A_x, B_y).


class _Operators:
    """Sparse operators of the n x n MAC grid, and the wall data of a lid."""

    def __init__(self, n: int, lid: Callable[[np.ndarray], np.ndarray]) -> None:
        h = 1.0 / n
        self.n, self.h = n, h
        e = np.ones(n)
        # N <- C: difference (c_k - c_{k-1}) / h and average; C <- N with zero end values.
        d_nc = sp.diags([-e[:-1], e[:-1]], [0, 1], shape=(n - 1, n)) / h
        a_nc = sp.diags([e[:-1], e[:-1]], [0, 1], shape=(n - 1, n)) / 2
        d_cn = -d_nc.T
        a_cn = a_nc.T
        lap_n = sp.diags([e[:-2], -2 * e[:-1], e[:-2]], [-1, 0, 1], shape=(n - 1, n - 1)) / h**2
        lap_c = sp.diags([e[:-1], -2 * e, e[:-1]], [-1, 0, 1], shape=(n, n)).tolil()
        lap_c[0, :2] = [-4.0, 4.0 / 3.0]  # quadratic ghost: wall value enters as 8/3 u_wall
        lap_c[n - 1, n - 2 :] = [4.0 / 3.0, -4.0]
        lap_c = lap_c.tocsr() / h**2
        i_n, i_c = sp.identity(n - 1), sp.identity(n)

        def k(a, b):
            return sp.kron(a, b, format="csr")

        self.zu, self.zv = k(i_n, d_cn), -k(d_cn, i_n)  # (u, v) <- psi
        self.acu, self.d1 = k(a_cn, i_c), k(d_nc, i_c)  # u -> cells; cells -> u
        self.anu, self.anv = k(i_n, a_nc), k(a_nc, i_n)  # u, v -> interior nodes
        self.d2, self.d3 = k(i_n, d_cn), k(d_cn, i_n)  # interior nodes -> u, v
        self.acv, self.d4 = k(i_c, a_cn), k(i_c, d_nc)  # v -> cells; cells -> v
        self.lu = k(lap_n, i_c) + k(i_n, lap_c)
        self.lv = k(lap_c, i_n) + k(i_c, lap_n)
        self.g = sp.vstack([k(d_nc, i_c), k(i_c, d_nc)], format="csr")  # cells -> (u, v) faces
        self.lid_nodes = lid(np.linspace(0.0, 1.0, n + 1))  # lid velocity at the lid's nodes
        self.lid_u = self.lid_nodes[1:-1]  # above each interior u column
        bu = np.zeros((n - 1, n))
        bu[:, -1] = 8.0 / 3.0 * self.lid_u / h**2
        self.bu = bu.ravel()
        self.z = sp.vstack([self.zu, self.zv], format="csr")

    def velocities(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.zu @ psi, self.zv @ psi

    def momentum(
        self,
        u: np.ndarray,
        v: np.ndarray,
        re: float,
        fu: np.ndarray | None = None,
        fv: np.ndarray | None = None,
        jacobian: bool = False,
    ) -> tuple:
        """Momentum residual without the pressure, (R_u, R_v), and with `jacobian` dR/d(u, v).

        R_u = d(uu)/dx + d(uv)/dy - (L u + b) / Re - f_x at the interior u faces (v alike):
        each advective flux is a product of two averages, so the Jacobian is exact and short.
        """
        cu, cv = self.acu @ u, self.acv @ v
        nu_, nv_ = self.anu @ u, self.anv @ v
        flux = nu_ * nv_  # u v at interior nodes (zero at wall nodes, where v or u vanishes)
        ru = self.d1 @ (cu * cu) + self.d2 @ flux - (self.lu @ u + self.bu) / re
        rv = self.d3 @ flux + self.d4 @ (cv * cv) - (self.lv @ v) / re
        if fu is not None:
            ru, rv = ru - fu, rv - fv
        if not jacobian:
            return ru, rv
        dg = sp.diags
        j_uu = self.d1 @ dg(2 * cu) @ self.acu + self.d2 @ dg(nv_) @ self.anu - self.lu / re
        j_uv = self.d2 @ dg(nu_) @ self.anv
        j_vu = self.d3 @ dg(nv_) @ self.anu
        j_vv = self.d3 @ dg(nu_) @ self.anv + self.d4 @ dg(2 * cv) @ self.acv - self.lv / re
        jac = sp.bmat([[j_uu, j_uv], [j_vu, j_vv]], format="csr")
        return ru, rv, jac


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


# -- nonlinear solve ----------------------------------------------------------------------------
def _newton(
    ops: _Operators, psi: np.ndarray, re: float, tol: float, force: tuple | None = None
) -> tuple[np.ndarray, int, bool]:
    """Newton's method on F(psi) = Z^T R(Z psi) = 0; returns (psi, steps, converged).

    A fresh Jacobian step is damped by backtracking on |F|. The LU factors are then reused
    (chord steps) while each step is at most a fifth of the previous one: near the solution a
    chord step costs a triangular solve instead of a factorisation, the dominant cost.
    """
    fu, fv = (None, None) if force is None else force

    def system(psi, jacobian):
        u, v = ops.velocities(psi)
        out = ops.momentum(u, v, re, fu, fv, jacobian)
        f = ops.zu.T @ out[0] + ops.zv.T @ out[1]
        return (f, ops.z.T @ out[2] @ ops.z) if jacobian else (f, None)

    def velocity_norm(dpsi):
        du, dv = ops.velocities(dpsi)
        return max(np.max(np.abs(du)), np.max(np.abs(dv)))

    lu, step_prev, slow = None, math.inf, 0
    for it in range(1, _MAX_NEWTON + 1):
        f = system(psi, False)[0]
        fresh = False
        if lu is not None:
            dpsi = lu.solve(-f)
            step = velocity_norm(dpsi)
            if not step <= 0.2 * step_prev:
                lu = None
        if lu is None:
            lu, fresh = _factor(system(psi, True)[1]), True
            dpsi = lu.solve(-f)
            step = velocity_norm(dpsi)
        if not np.isfinite(step):
            return psi, it, False
        if step <= tol:  # at round-off level |F| need not decrease: take the step
            return psi + dpsi, it, True
        lam = 1.0
        if fresh:
            fnorm = np.linalg.norm(f)
            while True:
                ftrial = np.linalg.norm(system(psi + lam * dpsi, False)[0])
                if np.isfinite(ftrial) and ftrial <= (1 - 1e-4 * lam) * fnorm:
                    break
                lam /= 2
                if lam < 1 / 64:
                    return psi, it, False
            slow = slow + 1 if lam * step > 0.5 * step_prev else 0
            if slow >= 6:
                return psi, it, False
        psi = psi + lam * dpsi
        step_prev = lam * step
    return psi, _MAX_NEWTON, False


def _factor(jac: sp.spmatrix):
    """Sparse LU of the Newton matrix, a discrete biharmonic plus advection terms.

    It is nearly structurally symmetric with a dominant diagonal, so a symmetric minimum-degree
    ordering with diagonal pivots suits it: at n = 512 (Re = 1000) it has half the fill of
    SuperLU's default (COLAMD with partial pivoting) and factors faster (benchmarks/cavity.py).
    """
    return splu(
        jac.tocsc(),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.01,
        options={"SymmetricMode": True},
    )


def _solve(
    re: float,
    n: int,
    lid: Callable[[np.ndarray], np.ndarray],
    tol: float,
    forcing: Callable | None = None,
) -> CavitySolution:
    """Grid sequencing n/2^k, ..., n/2, n (coarsest >= 32 cells, or n itself): Re continuation
    on the coarsest grid, then Newton from the prolonged solution on each finer one.

    `forcing(x, y) -> (fx, fy)`, a body force added to the right-hand side, exists to verify
    the solver against manufactured solutions.
    """
    levels = [n]
    while levels[-1] % 4 == 0 and levels[-1] // 2 >= _COARSEST:
        levels.append(levels[-1] // 2)
    psi, coarse = None, 0
    for m in reversed(levels):
        ops = _Operators(m, lid)
        force = None if forcing is None else _face_forcing(m, forcing)
        ok = False
        if psi is not None:
            psi, iterations, ok = _newton(ops, _prolong(psi, coarse, m), re, tol, force)
        if not ok:
            psi, iterations = _continuation(ops, re, tol, force)
        coarse = m
    u, v = ops.velocities(psi)
    ru, rv = ops.momentum(u, v, re, *(force or (None, None)))
    r = np.concatenate([ru, rv])
    p = _pressure(ops, r)
    residual = float(np.max(np.abs(r + ops.g @ p))) * ops.h**2 * re / 4
    return _nodal(ops, psi, u, v, p, re, iterations, residual)


def _continuation(
    ops: _Operators, re: float, tol: float, force: tuple | None
) -> tuple[np.ndarray, int]:
    """Newton from Stokes flow (psi = 0), raising Re towards `re` while Newton fails."""
    psi = np.zeros((ops.n - 1) ** 2)
    done, attempt = 0.0, re
    while True:
        trial, iterations, ok = _newton(ops, psi, attempt, tol, force)
        if ok:
            psi, done = trial, attempt
            if done == re:
                return psi, iterations
            attempt = min(re, 4 * done)
        else:
            attempt = attempt / 4 if done == 0 else math.sqrt(done * attempt)
            if done and attempt < 1.01 * done:
                raise RuntimeError(f"Newton continuation stalled at Re = {done:.4g} < {re:.4g}")


def _prolong(psi: np.ndarray, m: int, n: int) -> np.ndarray:
    """Bicubic interpolation of the interior stream function from m to n cells per side."""
    full = np.zeros((m + 1, m + 1))
    full[1:-1, 1:-1] = psi.reshape(m - 1, m - 1)
    s = np.linspace(0.0, 1.0, m + 1)
    t = np.linspace(0.0, 1.0, n + 1)[1:-1]
    return RectBivariateSpline(s, s, full, kx=3, ky=3, s=0)(t, t).ravel()


def _face_forcing(n: int, forcing: Callable) -> tuple[np.ndarray, np.ndarray]:
    """A body force (fx, fy) = forcing(x, y) at the interior u and v faces (for verification)."""
    h = 1.0 / n
    nodes, cells = np.arange(1, n) * h, (np.arange(n) + 0.5) * h
    xu, yu = np.meshgrid(nodes, cells, indexing="ij")
    xv, yv = np.meshgrid(cells, nodes, indexing="ij")
    return forcing(xu, yu)[0].ravel(), forcing(xv, yv)[1].ravel()


def _pressure(ops: _Operators, r: np.ndarray) -> np.ndarray:
    """Cell pressure with G p = -r in least squares (exact at convergence), zero mean.

    The normal equations G^T G p = -G^T r have the Neumann 5-point Laplacian, which the
    type-II DCT diagonalises: eigenvalues (2 - 2 cos(pi k / n)) / h^2 per direction.
    """
    n, h = ops.n, ops.h
    rhs = -(ops.g.T @ r).reshape(n, n)
    lam = (2.0 - 2.0 * np.cos(np.pi * np.arange(n) / n)) / h**2
    denom = lam[:, None] + lam[None, :]
    denom[0, 0] = 1.0
    coef = dctn(rhs, type=2, norm="ortho") / denom
    coef[0, 0] = 0.0  # the constant mode: zero mean
    return idctn(coef, type=2, norm="ortho").ravel()


# -- output on the nodes ---------------------------------------------------------------------
def _lagrange_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Weights of 4-point Lagrange interpolation from points `src` to `dst` (nearest stencils)."""
    w = np.zeros((dst.size, src.size))
    for row, t in enumerate(dst):
        k = int(np.clip(np.searchsorted(src, t) - 2, 0, src.size - 4))
        s = src[k : k + 4]
        for a in range(4):
            others = np.delete(s, a)
            w[row, k + a] = np.prod((t - others) / (s[a] - others))
    return w


def _nodal(
    ops: _Operators,
    psi: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    p: np.ndarray,
    re: float,
    iterations: int,
    residual: float,
) -> CavitySolution:
    """Face and cell values -> the (n + 1)^2 nodes. Along a wall-normal line the tangential
    velocity's wall values are data points too; p is extrapolated to the walls."""
    n, h = ops.n, ops.h
    nodes = np.linspace(0.0, 1.0, n + 1)
    cells = (np.arange(n) + 0.5) * h
    from_cells_walls = _lagrange_matrix(np.concatenate([[0.0], cells, [1.0]]), nodes)
    from_cells = _lagrange_matrix(cells, nodes)

    uf = np.zeros((n + 1, n + 2))  # x: nodes (u = 0 on the side walls); y: wall, cells, lid
    uf[1:-1, 1:-1] = u.reshape(n - 1, n)
    uf[1:-1, -1] = ops.lid_u
    un = uf @ from_cells_walls.T
    un[:, -1] = ops.lid_nodes  # exact on the lid; the lid owns the top corners
    vf = np.zeros((n + 2, n + 1))  # x: wall, cells, wall; y: nodes (v = 0 on all walls)
    vf[1:-1, 1:-1] = v.reshape(n, n - 1)
    vn = from_cells_walls @ vf
    pn = from_cells @ p.reshape(n, n) @ from_cells.T
    full_psi = np.zeros((n + 1, n + 1))
    full_psi[1:-1, 1:-1] = psi.reshape(n - 1, n - 1)
    return CavitySolution(nodes, nodes.copy(), un, vn, pn, re, n, iterations, residual, full_psi)
