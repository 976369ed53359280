"""The `burgers` problem and its Cole–Hopf reference: two independent quadratures, published
point values, the PDE itself by finite differences, the Basdevant slope check, caching,
and the residual/conditions against analytic models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields
from problems.solvers.cole_hopf import (
    NU_RAISSI,
    cole_hopf_hermite,
    cole_hopf_hermite_dx,
    cole_hopf_trapezoid,
)

NU = NU_RAISSI


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def raissi_grid() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1.0, 1.0, 256)
    t = np.linspace(0.0, 0.99, 100)
    return np.meshgrid(x, t, indexing="ij")


@pytest.fixture(scope="module")
def u_grid(raissi_grid) -> np.ndarray:
    return cole_hopf_hermite(*raissi_grid, NU, n=128)


# -- (1) two independent quadratures, and node convergence ---------------------------------
def test_hermite_and_trapezoid_agree(raissi_grid, u_grid):
    u_trap = cole_hopf_trapezoid(*raissi_grid, NU)
    assert rel_l2(u_trap, u_grid) <= 1e-10


def test_hermite_converged_in_nodes(raissi_grid, u_grid):
    u_256 = cole_hopf_hermite(*raissi_grid, NU, n=256)
    assert rel_l2(u_256, u_grid) < 1e-12


def test_low_order_hermite_is_not_converged(raissi_grid, u_grid):
    # The research notes' warning: an 8- or 20-node rule is off by percent; the test would see it.
    assert rel_l2(cole_hopf_hermite(*raissi_grid, NU, n=20), u_grid) > 1e-2


@pytest.mark.parametrize("solver", [cole_hopf_hermite, cole_hopf_trapezoid])
def test_initial_condition_is_exact(solver):
    x = np.linspace(-1.0, 1.0, 33)
    np.testing.assert_array_equal(solver(x, 0.0, NU), -np.sin(np.pi * x))


def test_other_viscosity_matches_between_rules():
    x, t = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(0.05, 1.0, 11), indexing="ij")
    nu = 0.05
    assert rel_l2(cole_hopf_trapezoid(x, t, nu), cole_hopf_hermite(x, t, nu)) <= 1e-10


# -- (2) odd symmetry ------------------------------------------------------------------------
def test_odd_symmetry(raissi_grid, u_grid):
    # linspace(-1, 1, 256) is symmetric, so reversing x maps x to -x.
    np.testing.assert_allclose(u_grid[::-1, :], -u_grid, rtol=0, atol=1e-13)


# -- (3) published point values (research notes, problems.md §1) ----------------------------
POINT_VALUES = [  # t, u(-0.5), u(-0.1), u(-0.01)
    (0.25, 0.8031984208, 0.7949743591, 0.1264047020),
    (0.50, 0.5927695344, 0.9581595534, 0.8980496423),
    (0.75, 0.4614132969, 0.8003959925, 0.7610366286),
    (1.00, 0.3761813957, 0.6654815677, 0.5942561676),
]


@pytest.mark.parametrize("solver", [cole_hopf_hermite, cole_hopf_trapezoid])
@pytest.mark.parametrize(("t", "a", "b", "c"), POINT_VALUES)
def test_point_values(solver, t, a, b, c):
    u = solver(np.array([-0.5, -0.1, -0.01]), t, NU)
    np.testing.assert_allclose(u, [a, b, c], rtol=0, atol=1e-9)


# -- (4) the PDE by centred finite differences, away from the shock --------------------------
def fd_residual(x: np.ndarray, t: np.ndarray, h: float) -> np.ndarray:
    u = lambda x, t: cole_hopf_hermite(x, t, NU)  # noqa: E731
    u0 = u(x, t)
    ut = (u(x, t + h) - u(x, t - h)) / (2 * h)
    ux = (u(x + h, t) - u(x - h, t)) / (2 * h)
    uxx = (u(x + h, t) - 2 * u0 + u(x - h, t)) / h**2
    return ut + u0 * ux - NU * uxx


def test_pde_residual_is_second_order():
    rng = np.random.default_rng(0)
    n = 400
    x = rng.uniform(0.2, 1.0, n) * rng.choice([-1.0, 1.0], n)
    t = rng.uniform(0.1, 0.9, n)
    # h from 0.02 to 0.005: truncation O(h^2) ~ 1e-3..1e-5 dominates roundoff (~1e-16/h^2).
    rms = [np.sqrt(np.mean(fd_residual(x, t, h) ** 2)) for h in (0.02, 0.01, 0.005)]
    orders = np.log2(np.array(rms[:-1]) / np.array(rms[1:]))
    assert np.all((orders >= 1.8) & (orders <= 2.2)), orders
    assert rms[-1] < 1e-4


def test_analytic_slope_matches_finite_differences():
    x = np.array([0.0, 0.3, -0.7, 0.95])
    t = np.array([0.5, 0.5, 0.2, 0.9])
    h = 1e-6
    fd = (cole_hopf_hermite(x + h, t, NU) - cole_hopf_hermite(x - h, t, NU)) / (2 * h)
    np.testing.assert_allclose(cole_hopf_hermite_dx(x, t, NU), fd, rtol=1e-7)


# -- (5) Basdevant et al. (1986): steepest slope at x = 0 at t = 1.6037/pi -------------------
def test_basdevant_max_slope_time():
    res = minimize_scalar(
        lambda t: float(cole_hopf_hermite_dx(0.0, t, NU)[()]),
        bounds=(0.4, 0.6),
        method="bounded",
        options={"xatol": 1e-9},
    )
    assert abs(res.x * math.pi - 1.6037) < 1e-3
    assert res.fun < -150.0  # the slope at the shock is about -152


# -- (6) the cached reference through the registry --------------------------------------------
def test_reference_cached_and_callable(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    ref = build_problem("burgers").reference()
    assert ref.points.shape == (25600, 2)
    assert ref.values.shape == (25600, 1)
    assert ref.shape == (256, 100)
    x, t = ref.grid
    np.testing.assert_allclose(t, np.arange(100) * 0.01, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ref.points[101], [x[1], t[1]])  # meshgrid "ij", C order
    np.testing.assert_array_equal(
        ref.values[:, 0], cole_hopf_hermite(*np.meshgrid(x, t, indexing="ij"), NU).ravel()
    )
    assert len(list(tmp_path.glob("ref-burgers-*.npz"))) == 1

    problem = build_problem("burgers")

    def no_recompute():
        raise AssertionError("the second reference should come from the disk cache")

    monkeypatch.setattr(problem, "_compute_reference", no_recompute)
    cached = problem.reference()
    np.testing.assert_array_equal(cached.values, ref.values)
    np.testing.assert_array_equal(cached.points, ref.points)
    assert cached.shape == (256, 100)

    pts = np.array([[-0.5, 0.25], [-0.1, 1.0], [0.3, 0.0], [0.123, 0.456]])
    expected = [0.8031984208, 0.6654815677, -math.sin(0.3 * math.pi)]
    got = cached(pts)
    assert got.shape == (4, 1)
    np.testing.assert_allclose(got[:3, 0], expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got[3, 0], cole_hopf_trapezoid(0.123, 0.456, NU), rtol=0, atol=1e-13)


def test_cache_key_depends_on_nu(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    a = build_problem("burgers", nx=8, nt=4).reference()
    b = build_problem("burgers", nx=8, nt=4, nu=0.05).reference()
    assert len(list(tmp_path.glob("ref-burgers-*.npz"))) == 2
    assert not np.allclose(a.values, b.values)


# -- (7) residual and conditions against analytic models --------------------------------------
def fields_of(model, points: torch.Tensor) -> Fields:
    return Fields(points, ("x", "t"), ("u",), model=model)


RESIDUAL_CASES = [
    # model u(x, t), expected u_t + u u_x - nu u_xx
    (lambda x, t: x * t, lambda x, t: x + x * t * t),
    (lambda x, t: x**2 * t, lambda x, t: x**2 + x**2 * t * 2 * x * t - NU * 2 * t),
    (
        lambda x, t: torch.sin(3 * x) + t,
        lambda x, t: 1 + (torch.sin(3 * x) + t) * 3 * torch.cos(3 * x) + NU * 9 * torch.sin(3 * x),
    ),
]


@pytest.mark.parametrize(("u", "expected"), RESIDUAL_CASES)
def test_residual_expression(u, expected):
    problem = build_problem("burgers")
    pts = problem.sample_interior(64, torch.Generator().manual_seed(0))
    f = fields_of(lambda p: u(p[:, 0], p[:, 1])[:, None], pts)
    r = problem.residual(f)
    assert r.shape == (64, 1)
    want = expected(pts[:, 0], pts[:, 1])
    torch.testing.assert_close(r[:, 0], want, rtol=1e-12, atol=1e-12)


def test_conditions():
    problem = build_problem("burgers")
    conds = {c.name: c for c in problem.conditions()}
    assert set(conds) == {"ic", "bc"}
    assert conds["ic"].n_points == problem.n_initial
    assert conds["bc"].n_points == problem.n_boundary
    gen = torch.Generator().manual_seed(0)

    ic_pts = conds["ic"].sample(50, gen)
    assert ic_pts.shape == (50, 2) and ic_pts.dtype == torch.float64
    assert torch.all(ic_pts[:, 1] == 0) and torch.all(ic_pts[:, 0].abs() <= 1)
    bc_pts = conds["bc"].sample(50, gen)
    assert torch.all(bc_pts[:, 0].abs() == 1) and (bc_pts[:, 0] < 0).sum() == 25
    assert torch.all((bc_pts[:, 1] >= 0) & (bc_pts[:, 1] <= 1))

    exact_ic = lambda p: (-torch.sin(math.pi * p[:, 0]) * (1 + p[:, 1]))[:, None]  # noqa: E731
    for name, pts in (("ic", ic_pts), ("bc", bc_pts)):
        r = conds[name].residual(fields_of(exact_ic, pts))
        assert r.shape == (50, 1)
        torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
        # A wrong model leaves a residual, so the conditions are not vacuous.
        r_one = conds[name].residual(fields_of(lambda p: torch.ones_like(p[:, :1]), pts))
        assert r_one.abs().min() > 0.0


# -- (8) bad parameters ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("nu", -1),
        ("nu", 0.0),
        ("nu", float("nan")),
        ("n_collocation", 0),
        ("n_initial", -5),
        ("n_boundary", 2.5),
        ("nx", 1),
        ("nt", 0),
    ],
)
def test_bad_params_raise(key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem("burgers", **{key: value})


def test_unknown_key_raises():
    with pytest.raises(ConfigError, match="viscosity"):
        build_problem("burgers", viscosity=0.1)


def test_cache_key_ignores_training_point_counts(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    build_problem("burgers", nx=8, nt=4).reference()
    build_problem("burgers", nx=8, nt=4, n_collocation=123, n_boundary=10).reference()
    assert len(list(tmp_path.glob("ref-burgers-*.npz"))) == 1
