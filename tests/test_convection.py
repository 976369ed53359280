"""The periodic 1-D family (`convection`, `convection_diffusion`, `burgers_periodic`): exact
solutions satisfy the equations and conditions, the Fourier series against an independent
method-of-lines solve, the Burgers Cole–Hopf reference against the Fourier–Bessel series and a
dealiased pseudo-spectral solve, and the Lagrangian (characteristic) forms against the Eulerian
exact solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from bench.registry import build_problem
from problems.base import ConfigError
from problems.convection import fourier_modes
from problems.fields import Fields
from problems.solvers.cole_hopf import cole_hopf_trapezoid
from problems.solvers.periodic_burgers import (
    NU_MIN,
    bessel_terms,
    cole_hopf_bessel,
    cole_hopf_periodic,
    solve_burgers_spectral,
)

TWO_PI = 2 * math.pi


def fields_of(model, points: torch.Tensor) -> Fields:
    return Fields(points, ("x", "t"), ("u",), model=model)


def exact_model(p):
    return lambda pts: p.exact_torch(pts[:, 0], pts[:, 1])[:, None]


LINEAR = [
    ("convection", {}),
    ("convection", {"c": 70.0}),
    ("convection_diffusion", {}),
    ("convection_diffusion", {"u0": "gauss"}),
    ("convection_diffusion", {"u0": "gauss", "c": 5.0, "nu": 0.3}),
]


# -- (1) the exact solutions of the linear cases: equations, conditions, reference grid ----------
@pytest.mark.parametrize(("name", "kw"), LINEAR)
def test_linear_exact_satisfies_equation_and_conditions(name, kw):
    p = build_problem(name, **kw)
    g = torch.Generator().manual_seed(0)
    pts = p.sample_interior(400, g)
    r = p.residual(fields_of(exact_model(p), pts))
    assert r.shape == (400, 1)
    assert r.abs().max() < 1e-11 * (1 + p.c)
    # a wrong speed breaks it (the check can fail)
    wrong_speed = build_problem(name, **{**kw, "c": p.c + 1.0})
    assert wrong_speed.residual(fields_of(exact_model(p), pts)).abs().max() > 1e-2
    conds = {c.name: c for c in p.conditions()}
    want = {"ic", "bc_x"} if name == "convection" else {"ic", "bc_x", "bc_x_d"}
    assert set(conds) == want
    for c in conds.values():
        r = c.residual(fields_of(exact_model(p), c.sample(64, g)))
        assert r.abs().max() < 1e-12, c.name
        wrong = c.residual(fields_of(lambda q: q[:, :1] ** 2 * (1 + q[:, 1:]), c.sample(64, g)))
        assert wrong.abs().max() > 1e-3, c.name


def test_reference_grid_is_krishnapriyans(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    p = build_problem("convection", c=50.0)
    ref = p.reference()
    assert ref.shape == (256, 100)
    x, t = ref.grid
    np.testing.assert_array_equal(x, np.linspace(0, TWO_PI, 256, endpoint=False))
    np.testing.assert_array_equal(t, np.linspace(0, 1, 100))
    X, T = np.meshgrid(x, t, indexing="ij")
    np.testing.assert_allclose(ref.values[:, 0], np.sin(X - 50 * T).ravel(), rtol=0, atol=1e-13)


def test_sin_series_is_the_damped_wave():
    p = build_problem("convection_diffusion", c=30.0, nu=0.01)
    x, t = np.meshgrid(np.linspace(0, TWO_PI, 101), np.linspace(0, 1, 51), indexing="ij")
    pts = np.stack([x.ravel(), t.ravel()], axis=1)
    want = np.exp(-0.01 * pts[:, 1]) * np.sin(pts[:, 0] - 30 * pts[:, 1])
    np.testing.assert_allclose(p.exact(pts)[:, 0], want, rtol=0, atol=1e-12)


def test_gauss_series_represents_the_initial_condition():
    p = build_problem("convection_diffusion", u0="gauss")
    x = torch.rand(2000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * TWO_PI
    u0 = p.u0(x)
    series = p.exact_torch(x, torch.zeros_like(x))
    assert (series - u0).abs().max() < 1e-14
    # the amplitudes are those of the periodised Gaussian: A_k = (2 - [k=0]) s/sqrt(2 pi)
    # exp(-s^2 k^2 / 2) (-1)^k, s = pi/4; and LPINN's unperiodised bump differs by <= e^-8
    k, amp = fourier_modes(p.u0)
    s = math.pi / 4
    want = s / math.sqrt(TWO_PI) * np.exp(-(s**2) * k**2 / 2) * (-1.0) ** k * np.where(k, 2, 1)
    np.testing.assert_allclose(amp, want, rtol=0, atol=3e-16)
    assert 8 <= len(k) <= 16
    bump = torch.exp(-((x - math.pi) ** 2) / (2 * s**2))
    assert 3e-4 < (u0 - bump).abs().max() < 3.4e-4


def test_gauss_series_matches_method_of_lines():
    # An independent solve: u_t = -c u_x + nu u_xx with spectral derivatives of grid values
    # in physical space, DOP853 at rtol 1e-12. 64 points resolve u0 (11 modes) with room; the
    # error is the integrator's (measured 5e-12 over t = 1 at c = 30), so 1e-10 leaves margin.
    c, nu, n = 30.0, 0.01, 64
    p = build_problem("convection_diffusion", u0="gauss", c=c, nu=nu)
    x = TWO_PI * np.arange(n) / n
    k = np.fft.rfftfreq(n, 1.0 / n)
    sym = -1j * c * k - nu * k**2

    def rhs(_t, u):
        return np.fft.irfft(sym * np.fft.rfft(u), n)

    times = np.linspace(0, 1, 11)
    u0 = p.u0(torch.as_tensor(x)).numpy()
    sol = solve_ivp(rhs, (0, 1), u0, method="DOP853", t_eval=times, rtol=1e-12, atol=1e-14)
    X, T = np.meshgrid(x, times)
    exact = p.exact(np.stack([X.ravel(), T.ravel()], axis=1))[:, 0].reshape(T.shape)
    assert np.abs(sol.y.T - exact).max() < 1e-10
    assert np.abs(exact[-1]).max() < 0.99 * np.abs(exact[0]).max()  # it did diffuse


# -- (2) the characteristic (Lagrangian) forms -------------------------------------------------
@pytest.mark.parametrize(("name", "kw"), LINEAR)
def test_linear_characteristics_match_the_exact_solution(name, kw):
    p = build_problem(name, **kw)
    ch = p.characteristics()
    assert ch.axis == "x" and ch.period == (0.0, TWO_PI) and ch.constant_speed
    assert ch.nu == (kw.get("nu", 0.01) if name == "convection_diffusion" else 0.0)
    g = torch.Generator().manual_seed(2)
    x0 = (torch.rand(300, generator=g, dtype=torch.float64) * TWO_PI).requires_grad_(True)
    t = torch.rand(300, generator=g, dtype=torch.float64).requires_grad_(True)
    speed = ch.speed(torch.zeros_like(x0))
    torch.testing.assert_close(speed, torch.full_like(x0, p.c))
    U = p.exact_torch(x0 + speed * t, t)  # U(x0, t) = u(X(x0, t), t), X = x0 + c t
    U_t, U_x = torch.autograd.grad(U.sum(), (t, x0), create_graph=True)
    (U_xx,) = torch.autograd.grad(U_x.sum(), x0)
    assert (U_t - ch.nu * U_xx).abs().max() < 1e-11
    torch.testing.assert_close(ch.u0(x0), p.exact_torch(x0, torch.zeros_like(x0)))


@pytest.mark.parametrize("C", [0.0, 2.0])
def test_burgers_characteristics_match_the_exact_solution(C):
    # Along dX/dt = a(U) from X = x0, U = u(X, t) obeys dU/dt = nu u_xx(X, t). Integrate both
    # with u_xx of the exact solution (centred differences, h = 1e-3: error ~1e-9 here) up to
    # t = 0.5, before the shock, and compare U with u(X(t), t).
    p = build_problem("burgers_periodic", C=C)
    ch = p.characteristics()
    assert not ch.constant_speed and ch.nu == p.nu
    h = 1e-3

    def u(x, t):
        return cole_hopf_periodic(x, t, p.nu, C)

    def rhs(t, y):
        X, U = y[:6], y[6:]
        u_xx = (u(X + h, t) - 2 * u(X, t) + u(X - h, t)) / h**2
        return np.concatenate([ch.speed(torch.as_tensor(U)).numpy(), ch.nu * u_xx])

    x0 = np.array([0.3, 1.0, 2.0, 2.8, 4.0, 5.5])
    U0 = ch.u0(torch.as_tensor(x0)).numpy()
    np.testing.assert_allclose(U0, u(x0, 0.0), rtol=0, atol=1e-15)
    times = np.linspace(0, 0.5, 6)
    sol = solve_ivp(rhs, (0, 0.5), np.concatenate([x0, U0]), "DOP853", times, rtol=1e-11)
    X, U = sol.y[:6], sol.y[6:]
    assert np.abs(U - u(X, times[None, :])).max() < 1e-7
    assert np.abs(X[:, -1] - x0 - 0.5 * U0).max() > 1e-4  # diffusion moved U a little


# -- (3) the Burgers reference ------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0, TWO_PI, 256, endpoint=False)
    return np.meshgrid(x, np.linspace(0, 1, 100), indexing="ij")


@pytest.mark.parametrize("nu", [0.01, NU_MIN])
def test_burgers_quadrature_is_converged(grid, nu):
    u = cole_hopf_periodic(*grid, nu)
    assert np.abs(cole_hopf_periodic(*grid, nu, n=360) - u).max() < 1e-14
    # an independent rule (the trapezoid rule in the same variables)
    trap = cole_hopf_trapezoid((grid[0] - math.pi) / math.pi, grid[1] / math.pi, nu / math.pi)
    assert np.abs(trap - u).max() < 1e-10


@pytest.mark.parametrize("nu", [0.1, 0.3, 1.0])
def test_burgers_bessel_series_agrees_at_large_viscosity(grid, nu):
    x, t = grid[0][::8, ::9], grid[1][::8, ::9]
    m = bessel_terms(nu)
    bessel = cole_hopf_bessel(x, t, nu, c=2.5, n_terms=m)
    # the series has converged: more terms change nothing
    assert np.abs(cole_hopf_bessel(x, t, nu, c=2.5, n_terms=2 * m) - bessel).max() <= 1e-14
    # its round-off grows like eps e^{1/nu} (x near pi): ~1e-12 at nu = 0.1
    assert np.abs(bessel - cole_hopf_periodic(x, t, nu, c=2.5)).max() < 1e-11


@pytest.mark.parametrize("C", [0.0, 3.0])
def test_burgers_matches_pseudo_spectral_solve(C):
    # 1024 modes (682 kept by the 2/3 rule) resolve the steepening front at t = 1, nu = 0.01;
    # the measured difference is <= 4e-10 (the integrator's), far below 1e-8.
    n, nu = 1024, 0.01
    x = TWO_PI * np.arange(n) / n
    times = np.linspace(0, 1, 6)
    mol = solve_burgers_spectral(np.sin(x) + C, nu, times)
    exact = cole_hopf_periodic(x[None, :], times[:, None], nu, C)
    assert np.abs(mol - exact).max() < 1e-9
    assert np.abs(np.diff(exact[-1])).max() * n / TWO_PI > 5  # the front did steepen


def test_burgers_is_odd_about_pi(grid):
    u = cole_hopf_periodic(*grid, 0.01)
    # x_j = 2 pi j / 256: 2 pi - x_j is x_{256 - j}
    np.testing.assert_allclose(u[:0:-1], -u[1:], rtol=0, atol=1e-14)
    np.testing.assert_allclose(u[0], 0.0, atol=1e-15)


def test_burgers_pde_by_finite_differences_is_second_order():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, TWO_PI, 300)
    t = rng.uniform(0.05, 0.8, 300)
    nu, C = 0.01, 1.5
    u = lambda x, t: cole_hopf_periodic(x, t, nu, C)  # noqa: E731

    def rms(h):
        u0 = u(x, t)
        ut = (u(x, t + h) - u(x, t - h)) / (2 * h)
        ux = (u(x + h, t) - u(x - h, t)) / (2 * h)
        uxx = (u(x + h, t) - 2 * u0 + u(x - h, t)) / h**2
        return np.sqrt(np.mean((ut + u0 * ux - nu * uxx) ** 2))

    errs = np.array([rms(h) for h in (0.02, 0.01, 0.005)])
    orders = np.log2(errs[:-1] / errs[1:])
    assert np.all((orders > 1.8) & (orders < 2.2)), orders
    assert errs[-1] < 1e-3


def test_burgers_conditions_and_residual():
    p = build_problem("burgers_periodic", C=2.0)
    g = torch.Generator().manual_seed(3)
    conds = {c.name: c for c in p.conditions()}
    assert set(conds) == {"ic", "bc_x", "bc_x_d"}

    def model(q):  # periodic, with the right initial state
        x, t = q[:, 0], q[:, 1]
        return (torch.sin(x) + 2.0 + t * torch.cos(2 * x - t))[:, None]

    for c in conds.values():
        assert c.residual(fields_of(model, c.sample(64, g))).abs().max() < 1e-12, c.name
    pts = p.sample_interior(64, g)
    r = p.residual(fields_of(model, pts))[:, 0]
    x, t = pts[:, 0], pts[:, 1]
    u = torch.sin(x) + 2 + t * torch.cos(2 * x - t)
    u_t = torch.cos(2 * x - t) + t * torch.sin(2 * x - t)
    u_x = torch.cos(x) - 2 * t * torch.sin(2 * x - t)
    u_xx = -torch.sin(x) - 4 * t * torch.cos(2 * x - t)
    torch.testing.assert_close(r, u_t + u * u_x - p.nu * u_xx, rtol=1e-12, atol=1e-12)
    ref = p.reference()
    assert ref.shape == (256, 100)
    np.testing.assert_allclose(ref.values[::100, 0], np.sin(ref.grid[0]) + 2, atol=1e-14)


# -- (4) bad parameters ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("convection", "c", -1.0),
        ("convection", "c", float("inf")),
        ("convection", "n_boundary", 1),
        ("convection", "nx", 1),
        ("convection_diffusion", "nu", -0.01),
        ("convection_diffusion", "u0", "cosine"),
        ("convection_diffusion", "n_collocation", 0),
        ("burgers_periodic", "nu", 0.0),
        ("burgers_periodic", "nu", 1e-4),
        ("burgers_periodic", "C", float("nan")),
        ("burgers_periodic", "nt", 1),
    ],
)
def test_bad_params_raise(name, key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem(name, **{key: value})
