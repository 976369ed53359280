"""The lid-driven cavity reference solver (problems/solvers/cavity.py): second-order convergence to
a manufactured solution (u, v, p and the divergence of the nodal field), an exact Newton
Jacobian, a discretely divergence-free MAC field, mirror symmetry of Stokes flow, second-order
convergence of the centreline extrema, Ghia et al.'s Re = 100 profiles, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial import Polynomial
from scipy.interpolate import RectBivariateSpline

from problems.solvers import cavity
from problems.solvers.cavity import centreline_extrema, lid_profile, solve_cavity


def orders(errors: list[float]) -> np.ndarray:
    """Observed orders log2(e_h / e_{h/2}) over grids refined by 2."""
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# -- (1) manufactured solution -------------------------------------------------------------------
# psi = 16 x^2 (1-x)^2 (y^3 - y^2): no-slip on the bottom and sides, u = 16 x^2 (1-x)^2 on the lid,
# smooth up to the corners; p = cos(pi x) cos(pi y) has zero mean. The body force that makes
# them a steady solution is computed from the polynomials' exact derivatives.
X = Polynomial([0, 0, 1]) * Polynomial([1, -1]) ** 2
Y = Polynomial([0, 0, -1, 1])
RE_MMS = 100.0


def mms_exact(x, y):
    u = 16 * X(x) * Y.deriv()(y)
    v = -16 * X.deriv()(x) * Y(y)
    return u, v, np.cos(np.pi * x) * np.cos(np.pi * y)


def mms_forcing(x, y):
    xd = [16 * X.deriv(k)(x) if k else 16 * X(x) for k in range(4)]
    yd = [Y.deriv(k)(y) if k else Y(y) for k in range(4)]
    u, v = xd[0] * yd[1], -xd[1] * yd[0]
    ux, uy, vx, vy = xd[1] * yd[1], xd[0] * yd[2], -xd[2] * yd[0], -xd[1] * yd[1]
    lap_u, lap_v = xd[2] * yd[1] + xd[0] * yd[3], -(xd[3] * yd[0] + xd[1] * yd[2])
    px = -np.pi * np.sin(np.pi * x) * np.cos(np.pi * y)
    py = -np.pi * np.cos(np.pi * x) * np.sin(np.pi * y)
    return u * ux + v * uy + px - lap_u / RE_MMS, u * vx + v * vy + py - lap_v / RE_MMS


def test_manufactured_solution_converges_at_second_order():
    errors = []
    for n in (16, 32, 64):
        sol = cavity._solve(RE_MMS, n, lambda x: 16 * X(x), 1e-12, mms_forcing)
        assert sol.residual <= 1e-12  # measured <= 2.2e-15
        ue, ve, pe = mms_exact(*np.meshgrid(sol.x, sol.y, indexing="ij"))
        h = 1.0 / n
        div = (sol.u[2:, 1:-1] - sol.u[:-2, 1:-1] + sol.v[1:-1, 2:] - sol.v[1:-1, :-2]) / (2 * h)
        errors.append(
            [np.abs(sol.u - ue).max(), np.abs(sol.v - ve).max(), np.abs(sol.p - pe).max()]
            + [np.abs(div).max()]
        )
    errors = np.array(errors)
    # measured max errors at n = 64: u 4.5e-4, v 4.2e-4, p 4.9e-4, nodal divergence 5.3e-3
    assert np.all(errors[-1, :3] < 1e-3)
    p = orders(errors)  # rows: (16 -> 32, 32 -> 64); columns: u, v, p, divergence
    assert np.all((p[:, :3] > 1.85) & (p[:, :3] < 2.2)), p  # measured 1.97 .. 2.06
    assert np.all((p[:, 3] > 1.6) & (p[:, 3] < 2.4)), p  # measured 1.78, 1.89


def test_newton_jacobian_matches_finite_differences():
    # The momentum residual is quadratic in (u, v): central differences are exact up to
    # round-off, so the analytic Jacobian must match them closely.
    ops = cavity._Operators(8, lambda x: lid_profile("parabolic", x))
    rng = np.random.default_rng(0)
    size = 2 * 7 * 8
    w, d = rng.standard_normal(size), rng.standard_normal(size)
    ru, rv, jac = ops.momentum(w[:56], w[56:], 50.0, jacobian=True)

    def residual(z):
        return np.concatenate(ops.momentum(z[:56], z[56:], 50.0))

    eps = 1e-4
    fd = (residual(w + eps * d) - residual(w - eps * d)) / (2 * eps)
    np.testing.assert_allclose(np.concatenate([ru, rv]), residual(w))
    assert np.abs(jac @ d - fd).max() <= 1e-9 * np.abs(fd).max()


# -- (2) properties of the cavity solution ------------------------------------------------------
def test_mac_field_is_divergence_free_and_walls_hold_the_boundary_conditions():
    n, re = 32, 100.0
    sol = solve_cavity(re, n, lid="parabolic")
    h = 1.0 / n
    u_faces = np.diff(sol.psi, axis=1) / h  # [n + 1, n]: x = i h, y = (j + 1/2) h
    v_faces = -np.diff(sol.psi, axis=0) / h  # [n, n + 1]
    div = np.diff(u_faces, axis=0) / h + np.diff(v_faces, axis=1) / h
    assert np.abs(div).max() <= 1e-12  # measured 1.8e-15 (the faces' scale is 1)
    assert np.all(sol.psi[[0, -1], :] == 0) and np.all(sol.psi[:, [0, -1]] == 0)
    # the nodal fields are those faces interpolated: midpoints agree to O(h^2)
    assert np.abs(0.5 * (sol.u[:, :-1] + sol.u[:, 1:]) - u_faces).max() < 2e-2  # measured 5e-3
    # wall values are the boundary conditions, exactly
    np.testing.assert_array_equal(sol.u[:, -1], lid_profile("parabolic", sol.x))
    assert not np.any(sol.u[:, 0]) and not np.any(sol.u[[0, -1], :-1])
    assert not np.any(sol.v[[0, -1], :]) and not np.any(sol.v[:, [0, -1]])
    # pressure: zero mean over the square (midpoint rule on the cells; nodes to O(h^2))
    assert abs(np.mean(sol.p[1:-1, 1:-1])) < 1e-2


def test_stokes_limit_is_mirror_symmetric():
    # Stokes flow is symmetric about x = 1/2 (u even, v odd); advection breaks it at O(Re).
    def asymmetry(re):
        sol = solve_cavity(re, 16)
        return max(np.abs(sol.u - sol.u[::-1]).max(), np.abs(sol.v + sol.v[::-1]).max())

    a3, a4, a6 = asymmetry(1e-3), asymmetry(1e-4), asymmetry(1e-6)
    assert a3 <= 1e-5  # measured 3.75e-6
    assert abs(a3 / a4 - 10.0) <= 0.01 and abs(a4 / a6 - 100.0) <= 0.1  # exactly linear in Re
    sol = solve_cavity(1e-6, 16)
    np.testing.assert_array_equal(sol.u[:, -1], 1.0)
    assert not np.any(sol.u[:, 0]) and not np.any(sol.v[[0, -1], :])


def test_grid_sequencing_finds_the_same_discrete_solution(monkeypatch):
    direct = solve_cavity(400.0, 64)  # levels 32 -> 64
    monkeypatch.setattr(cavity, "_COARSEST", 128)
    single = solve_cavity(400.0, 64)  # Re continuation on n = 64 itself
    assert np.abs(direct.u - single.u).max() <= 1e-9
    assert np.abs(direct.p - single.p).max() <= 1e-8


# -- (3) centreline extrema: convergence order and published values --------------------------------
def test_centreline_extrema_converge_at_second_order():
    ext = [centreline_extrema(solve_cavity(100.0, n, lid="parabolic")) for n in (16, 32, 64)]
    for key in ("u_min", "v_min", "v_max", "y_u_min", "x_v_max"):
        f = [e[key] for e in ext]
        p = math.log2((f[0] - f[1]) / (f[1] - f[2]))
        assert 1.6 <= p <= 2.6, (key, p)  # measured 1.92, 2.09, 2.02, 2.14, 2.03


# Ghia, Ghia & Shin, J. Comput. Phys. 48 (1982), Tables I and II, Re = 100 (also transcribed in
# CliMA/Oceananigans.jl validation/lid_driven_cavity/plot_lid_driven_cavity.py): u on x = 1/2 at
# y_ghia, and v on y = 1/2 at x_ghia, values at their 129-grid nodes.
Y_GHIA = [0.0547, 0.0625, 0.0703, 0.1016, 0.1719, 0.2813, 0.4531, 0.5, 0.6172, 0.7344, 0.8516]
Y_GHIA += [0.9531, 0.9609, 0.9688, 0.9766]
U_GHIA = [-0.03717, -0.04192, -0.04775, -0.06434, -0.10150, -0.15662, -0.21090, -0.20581]
U_GHIA += [-0.13641, 0.00332, 0.23151, 0.68717, 0.73722, 0.78871, 0.84123]
X_GHIA = [0.0625, 0.0703, 0.0781, 0.0938, 0.1563, 0.2266, 0.2344, 0.5, 0.8047, 0.8594, 0.9063]
X_GHIA += [0.9453, 0.9531, 0.9609, 0.9688]
V_GHIA = [0.09233, 0.10091, 0.10890, 0.12317, 0.16077, 0.17507, 0.17527, 0.05454, -0.24533]
V_GHIA += [-0.22445, -0.16914, -0.10313, -0.08864, -0.07391, -0.05906]


def test_ghia_re100_centrelines():
    sol = solve_cavity(100.0, 64)
    u = RectBivariateSpline(sol.x, sol.y, sol.u)(0.5, Y_GHIA, grid=False)
    v = RectBivariateSpline(sol.x, sol.y, sol.v)(X_GHIA, 0.5, grid=False)
    # Ghia's values carry their own ~1% discretisation error (a converged solution differs
    # from them by up to 0.009 at x = 0.86): bound the difference by 1.2% of the lid speed.
    assert np.abs(u - U_GHIA).max() <= 0.012  # measured 0.0042
    assert np.abs(v - V_GHIA).max() <= 0.012  # measured 0.0092
    # at Ghia's extremal nodes, relative to their values
    assert abs(u[6] / U_GHIA[6] - 1) <= 0.02  # y = 0.4531: measured 1.0%
    assert abs(v[6] / V_GHIA[6] - 1) <= 0.025  # x = 0.2344: measured 2.0%
    assert abs(v[8] / V_GHIA[8] - 1) <= 0.04  # x = 0.8047: measured 3.1%, Ghia's largest error
    ext = centreline_extrema(sol)
    assert abs(ext["y_u_min"] - 0.4531) <= 0.01 and abs(ext["x_v_max"] - 0.2344) <= 0.01
    assert abs(ext["x_v_min"] - 0.8047) <= 0.01  # measured 0.458, 0.237, 0.811


def test_re1000_converges_by_continuation():
    sol = solve_cavity(1000.0, 64)
    assert sol.residual <= 1e-10  # measured 1.6e-14
    ext = centreline_extrema(sol)
    # n = 64 is coarse for Re = 1000 (u_min -0.371 vs Ghia's -0.383): the vortex is in place
    assert abs(ext["u_min"] / -0.38289 - 1) <= 0.05
    assert abs(ext["y_u_min"] - 0.1719) <= 0.01 and abs(ext["x_v_min"] - 0.9063) <= 0.01


# -- (4) lid profiles and bad input -----------------------------------------------------------
def test_lid_profiles():
    x = np.linspace(0.0, 1.0, 101)
    np.testing.assert_array_equal(lid_profile("uniform", x), 1.0)
    np.testing.assert_allclose(lid_profile("parabolic", x), 4 * x * (1 - x))
    np.testing.assert_allclose(lid_profile("parabolic", x, 2.0), 2 * x * (1 - x))
    naive = 1 - np.cosh(50 * (x - 0.5)) / np.cosh(25)
    np.testing.assert_allclose(lid_profile("smooth", x), naive, atol=1e-14)
    steep = lid_profile("smooth", x, 5000.0)  # cosh(2500) overflows; the profile does not
    assert np.all(np.isfinite(steep)) and steep[0] == 0 == steep[-1] and steep[50] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(re=0.0), "re"),
        (dict(re=-5.0), "re"),
        (dict(re=float("nan")), "re"),
        (dict(re=True), "re"),
        (dict(n=3), "n must be an even integer"),
        (dict(n=2), "n must be an even integer"),
        (dict(n=33), "n must be an even integer"),
        (dict(n=32.0), "n must be an even integer"),
        (dict(lid="cosine"), "lid must be one of"),
        (dict(lid_param=4.0), "lid_param"),
        (dict(lid="smooth", lid_param=0.0), "lid_param"),
        (dict(lid="parabolic", lid_param=float("inf")), "lid_param"),
        (dict(tol=0.0), "tol"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(re=100.0, n=16) | kwargs
    with pytest.raises(ValueError, match=match):
        solve_cavity(**args)
