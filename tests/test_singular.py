"""The singular-ODE problems `legendre`, `hypergeometric`, `accretion` and their references.

Each reference is put through the problem's own residual with 6th-order finite differences (with
the convergence order measured), checked against an independent evaluation (scipy, 40-digit
mpmath, Michel's invariants, the sPINN notebook's data), and checked for regularity at the
singular points; the conditions are shown to select the reference over the other solutions."""

from __future__ import annotations

import math
import re

import mpmath
import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from scipy.optimize import brentq
from scipy.special import hyp2f1

from bench.registry import CONF_DIR, build_problem
from methods.nets import OutputTransform
from problems.base import ConfigError
from problems.fields import Fields
from problems.solvers.accretion import MichelAccretion, bernoulli, mass_flux


# -- helpers ---------------------------------------------------------------------------------
def fd_weights(order: int, half: int) -> np.ndarray:
    """Central weights for the `order`-th derivative on offsets -half..half (accuracy 2*half)."""
    k = np.arange(-half, half + 1, dtype=float)
    rhs = np.zeros(2 * half + 1)
    rhs[order] = math.factorial(order)
    return np.linalg.solve(np.vander(k, increasing=True).T, rhs)


class FDFields(Fields):
    """`Fields` whose derivatives are central finite differences of a numpy function: it puts a
    reference through the problem's own `residual`."""

    def __init__(self, problem, points: np.ndarray, fun, h: float, half: int = 3) -> None:
        self.fun, self.h, self.half = fun, h, half
        pts = torch.as_tensor(points, dtype=torch.float64)
        vals = torch.as_tensor(fun(points), dtype=torch.float64)
        super().__init__(pts, problem.axes, problem.fields, values=vals)

    def _derivative(self, key: tuple[str, ...]) -> torch.Tensor:
        order, j = len(key) - 1, self._field(key[0])
        x = self.points.numpy()
        w = fd_weights(order, self.half)
        acc = sum(
            wk * self.fun(x + k * self.h)[:, j]
            for k, wk in zip(range(-self.half, 1 + self.half), w)
        )
        return torch.as_tensor(acc / self.h**order)


def fd_residual_rms(problem, x: np.ndarray, fun, h: float) -> float:
    r = problem.residual(FDFields(problem, x[:, None], fun, h)).numpy()
    return float(np.sqrt(np.mean(r**2, axis=0)).max())


def orders(rms: list[float]) -> np.ndarray:
    return np.log2(np.array(rms[:-1]) / np.array(rms[1:]))


def torch_fields(problem, points: torch.Tensor, model) -> Fields:
    return Fields(points, problem.axes, problem.fields, model=model)


# -- legendre ---------------------------------------------------------------------------------
def legendre_torch(l: int):
    coef = npleg.leg2poly(np.eye(l + 1)[l])
    return lambda p: sum(float(c) * p[:, :1] ** k for k, c in enumerate(coef))


def q3(x: np.ndarray) -> np.ndarray:
    """Q_3, the second Legendre solution of degree 3 (log-singular at x = +-1)."""
    return (5 * x**3 - 3 * x) / 2 * np.arctanh(x) - 2.5 * x**2 + 2.0 / 3.0


def test_legendre_exact_is_p_l():
    x = np.linspace(-1, 1, 101)[:, None]
    p3 = build_problem("legendre")
    np.testing.assert_allclose(p3.exact(x)[:, 0], (5 * x[:, 0] ** 3 - 3 * x[:, 0]) / 2, atol=1e-15)
    for l in (0, 1, 7, 20):
        y = build_problem("legendre", l=l).exact(x)[:, 0]
        np.testing.assert_allclose(y, npleg.legval(x[:, 0], np.eye(l + 1)[l]), atol=1e-13)
        np.testing.assert_allclose(y[[0, -1]], [(-1) ** l, 1.0], rtol=0, atol=1e-14)


def test_legendre_fd_residual():
    x = np.linspace(-1, 1, 81)
    p3 = build_problem("legendre")
    # A cubic is differentiated exactly by 6th-order stencils: only round-off is left.
    assert max(fd_residual_rms(p3, x, p3.exact, h) for h in (0.04, 0.01)) < 1e-11
    p12 = build_problem("legendre", l=12)
    rms = [fd_residual_rms(p12, x, p12.exact, h) for h in (0.04, 0.02, 0.01)]
    assert np.all(np.abs(orders(rms) - 6) < 0.2), orders(rms)
    assert rms[-1] < 1e-5


def test_legendre_regular_at_both_ends_second_solution_is_not():
    p = build_problem("legendre")
    ends = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    cond = {c.name: c for c in p.conditions()}["regular"]
    r = cond.residual(torch_fields(p, ends, legendre_torch(3)))
    torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    # y'(+-1) = (+-1)^(l+1) l(l+1)/2: the reduced equation at the singular points.
    dp = npleg.legval(np.array([-1.0, 1.0]), npleg.legder(np.eye(4)[3]))
    np.testing.assert_allclose(dp, [6.0, 6.0], rtol=1e-14)
    # Q_3 solves the same equation inside (-1, 1) but diverges like log at the ends.
    x = np.linspace(-0.8, 0.8, 33)
    assert fd_residual_rms(p, x, lambda z: q3(z[:, 0])[:, None], 0.0025) < 1e-8
    near = 1 - 10.0 ** -np.arange(2, 12, 3)
    assert np.all(np.diff(q3(near)) > 1.0) and q3(near[-1]) > 10


def test_legendre_residual_and_conditions_on_models():
    p = build_problem("legendre")
    x = p.sample_interior(64, torch.Generator().manual_seed(0))
    r = p.residual(torch_fields(p, x, legendre_torch(3)))
    torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    r = p.residual(torch_fields(p, x, lambda q: q[:, :1] ** 2))
    torch.testing.assert_close(r[:, 0], 2 + 6 * x[:, 0] ** 2, rtol=1e-12, atol=1e-12)
    conds = {c.name: c for c in p.conditions()}
    assert set(conds) == {"norm", "regular"}
    pts = conds["norm"].sample(3, None)
    assert pts.shape == (3, 1) and torch.all(pts == -1)
    assert sorted(conds["regular"].sample(4, None)[:, 0].tolist()) == [-1, -1, 1, 1]
    torch.testing.assert_close(
        conds["norm"].residual(torch_fields(p, pts, legendre_torch(3))),
        torch.zeros(3, 1, dtype=torch.float64),
    )
    wrong = lambda q: legendre_torch(3)(q) + 0.1 * (1 + q[:, :1])  # noqa: E731
    ends = conds["regular"].sample(2, None)
    assert conds["regular"].residual(torch_fields(p, ends, wrong)).abs().min() > 0.1


# -- hypergeometric ---------------------------------------------------------------------------
HYP_CASES = [
    (-2, 1, 1),
    (-1, 0.5, 1.5),
    (-4, 5, 1),
    (-5, 4.5, 0.25),
    (-10, 9.5, 1.5),
    (7.5, -6, 0.5),
]


def test_hypergeometric_default_is_one_minus_x_squared():
    x = np.linspace(0, 2, 101)
    y = build_problem("hypergeometric").exact(x[:, None])[:, 0]
    np.testing.assert_allclose(y, (1 - x) ** 2, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("a", "b", "c"), HYP_CASES)
def test_hypergeometric_matches_scipy_and_mpmath(a, b, c):
    p = build_problem("hypergeometric", a=a, b=b, c=c)
    x = np.linspace(0, 2, 41)
    y = p.exact(x[:, None])[:, 0]
    scale = np.max(np.abs(y))
    np.testing.assert_allclose(y, hyp2f1(a, b, c, x), rtol=0, atol=1e-13 * scale)
    mpmath.mp.dps = 40
    ym = [float(mpmath.hyp2f1(a, b, c, mpmath.mpf(xi))) for xi in (0.3, 0.999, 1.001, 1.7, 2.0)]
    np.testing.assert_allclose(
        p.exact(np.array([[0.3], [0.999], [1.001], [1.7], [2.0]]))[:, 0],
        ym,
        rtol=0,
        atol=1e-13 * scale,
    )


def test_hypergeometric_fd_residual():
    x = np.linspace(0, 2, 81)
    p = build_problem("hypergeometric")
    assert max(fd_residual_rms(p, x, p.exact, h) for h in (0.04, 0.01)) < 1e-11
    p10 = build_problem("hypergeometric", a=-10, b=9.5, c=1.5)
    rms = [fd_residual_rms(p10, x, p10.exact, h) for h in (0.08, 0.04, 0.02)]
    assert np.all(np.abs(orders(rms) - 6) < 0.2), orders(rms)


@pytest.mark.parametrize(("a", "b", "c"), HYP_CASES[:3])
def test_hypergeometric_regular_at_singular_points(a, b, c):
    p = build_problem("hypergeometric", a=a, b=b, c=c)
    coef = p.coefficients
    model = lambda q: sum(float(ck) * q[:, :1] ** k for k, ck in enumerate(coef))  # noqa: E731
    conds = {cd.name: cd for cd in p.conditions()}
    pts = conds["regular"].sample(2, None)
    assert pts[:, 0].tolist() == [0.0, 1.0]
    r = conds["regular"].residual(torch_fields(p, pts, model))
    torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    n = conds["norm"].residual(torch_fields(p, conds["norm"].sample(1, None), model))
    torch.testing.assert_close(n, torch.zeros_like(n), rtol=0, atol=1e-15)
    # One-sided derivatives agree across x = 1: no kink where the equation degenerates.
    h = 1e-3
    left = (3 * p.exact([[1.0]]) - 4 * p.exact([[1 - h]]) + p.exact([[1 - 2 * h]])) / (2 * h)
    right = -(3 * p.exact([[1.0]]) - 4 * p.exact([[1 + h]]) + p.exact([[1 + 2 * h]])) / (2 * h)
    np.testing.assert_allclose(left, right, rtol=0, atol=1e-5 * np.max(np.abs(coef)))


def test_hypergeometric_residual_on_models():
    p = build_problem("hypergeometric")
    x = p.sample_interior(64, torch.Generator().manual_seed(1))
    r = p.residual(torch_fields(p, x, lambda q: (1 - q[:, :1]) ** 2))
    torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    r = p.residual(torch_fields(p, x, lambda q: q[:, :1]))  # c - (a+b+1)x - ab x = 1 + 2x
    torch.testing.assert_close(r[:, 0], 1 + 2 * x[:, 0], rtol=1e-12, atol=1e-12)


def test_nonterminating_hypergeometric_is_complex_past_one_and_rejected():
    # 2F1(-1.5, 1; 1; x) = (1 - x)^1.5: complex on (1, 2], so it cannot be a reference there.
    assert abs(hyp2f1(-1.5, 1, 1, 1.5 + 0j).imag) > 0.3
    with pytest.raises(ConfigError, match="terminate"):
        build_problem("hypergeometric", a=-1.5)


# -- accretion --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def acc():
    return build_problem("accretion")


ACC_CASES = [
    {},
    {"Gamma": 5 / 3, "K": 1.0, "r_min": 3.0, "r_max": 30.0, "rho_out": 1e-2},
    {"M": 2.0, "K": 0.01, "Gamma": 1.1, "r_min": 10.0, "r_max": 2000.0, "rho_out": 1.0},
]


@pytest.mark.parametrize("kw", ACC_CASES)
def test_accretion_invariants_constant(kw):
    p = build_problem("accretion", **kw)
    assert p.r_min < p.r_sonic < p.r_max
    r = np.linspace(p.r_min, p.r_max, 2001)
    rho, v = p.exact(r[:, None]).T
    c1, c2 = mass_flux(r, rho, v, p.M), bernoulli(r, rho, v, p.M, p.K, p.Gamma)
    assert np.max(np.abs(c1 / c1[0] - 1)) < 1e-12
    assert np.max(np.abs(c2 / c2[0] - 1)) < 1e-12
    assert np.isclose(rho[-1], p.rho_out, rtol=1e-13)
    inv = p.invariants(r[:, None], np.stack([rho, v], 1))
    assert inv["mass_flux_error"] < 1e-12 and inv["bernoulli_error"] < 1e-12
    # The transonic branch: subsonic outside r_c, supersonic inside, density falling outward.
    mach = v / np.sqrt(p.flow.sound_speed_sq(rho))
    assert np.all((mach > 1) == (r < p.r_sonic)) and np.all(np.diff(rho) < 0)


def test_accretion_sonic_point(acc):
    rc = acc.r_sonic
    assert abs(rc - 40.5) < 1e-4  # the notebook's rho_out is rho(140.5) for r_c = 40.5, 6 digits
    rho, v = acc.exact(np.array([[rc]]))[0]
    u2 = v**2 * (1 - 2 / rc) / (1 - v**2)
    assert abs(2 * rc * u2 - 1) < 1e-13  # u_c^2 = M/(2 r_c)
    assert abs(v**2 / acc.flow.sound_speed_sq(rho) - 1) < 1e-13  # v = a


def test_accretion_matches_mpmath_near_and_far_from_the_sonic_point(acc):
    f = acc.flow
    mpmath.mp.dps = 40
    rc, M, K, G = (mpmath.mpf(z) for z in (f.r_sonic, f.M, f.K, f.Gamma))
    u2c = M / (2 * rc)
    a2c = u2c / (1 - 3 * u2c)
    theta = a2c / (1 - a2c / (G - 1))
    rho_c = (theta / (G * K)) ** (1 / (G - 1))
    c1, c2 = rho_c * mpmath.sqrt(u2c) * rc**2, (1 + theta / (G - 1)) * mpmath.sqrt(1 - 3 * u2c)
    offsets = [-20, -1, -1e-3, -1e-6, -1e-9, 0, 1e-9, 1e-6, 1e-3, 1, 99]
    r = f.r_sonic + np.array(offsets, dtype=float)
    rho = f.density(r)
    for ri, guess in zip(r, rho):
        ri = mpmath.mpf(ri)

        def eq(x, ri=ri):
            rho_ = mpmath.exp(x)
            u = c1 / (rho_ * ri**2)
            return (1 + G * K * rho_ ** (G - 1) / (G - 1)) * mpmath.sqrt(1 - 2 * M / ri + u**2) - c2

        exact = mpmath.exp(mpmath.findroot(eq, mpmath.log(guess), tol=mpmath.mpf(10) ** -35))
        assert abs(float(guess / exact) - 1) < 1e-13


def test_accretion_regular_through_the_sonic_point(acc):
    # One-sided 4th-order derivatives from both sides of r_c agree: no kink, i.e. no jump to the
    # other solution through the critical point, whose slopes differ at O(1).
    rc, h = acc.r_sonic, 0.05
    k = np.arange(5)
    w = np.array([-25, 48, -36, 16, -3]) / 12
    right = w @ acc.exact((rc + k * h)[:, None]) / h
    left = -(w @ acc.exact((rc - k * h)[:, None])) / h
    np.testing.assert_allclose(left, right, rtol=1e-6)
    rho, v = acc.exact(np.array([[rc]]))[0]
    assert np.all(np.isfinite(right)) and right[0] < 0 and right[1] < 0
    assert abs(right[0]) * rc / rho < 10 and abs(right[1]) * rc / v < 10  # O(1) log-slopes


def test_accretion_fd_residual_converges(acc):
    r = np.linspace(acc.r_min, acc.r_max, 61)
    r = np.sort(np.append(r, acc.r_sonic))  # the singular point itself
    rms = [fd_residual_rms(acc, r, acc.exact, h) for h in (1.6, 0.8, 0.4, 0.2)]
    assert np.all(np.abs(orders(rms) - 6) < 0.3), orders(rms)
    assert rms[-1] < 1e-11


# Rows of `finite_diff_data/accretion.dat` (mehrrero/sPINN): r, rho, v. Rows 39.86 <= r <= 40.97
# are not used: there the file jumps between the two solutions through the critical point.
SPINN_ROWS = [
    (22.0, 0.0020276013237924546, 0.19118344891214814),
    (61.99, 0.0006433524402630759, 0.07472754343883704),
    (101.99, 0.00041208725993307344, 0.04290062873898943),
    (140.5, 0.00032419728102325385, 0.02867082723478357),
]


def test_accretion_matches_the_published_data(acc):
    r, rho, v = np.array(SPINN_ROWS).T
    got = acc.exact(r[:, None])
    # rho_out = 0.000324197 has 6 digits, so r_c sits 1.4e-5 off 40.5: agreement to ~1e-6.
    np.testing.assert_allclose(got[:, 0], rho, rtol=2e-6)
    np.testing.assert_allclose(got[:, 1], v, rtol=2e-6)
    # The notebook's boundary values at r = 140.5.
    assert abs(got[-1, 0] - 0.000324197) < 1e-16 and abs(got[-1, 1] - 0.0286708) < 5e-8


def subsonic_solution(p, v_out: float):
    """The everywhere-subsonic flow with rho(r_max) = rho_out and v(r_max) = v_out, solved
    point by point with brentq (independent of the package solver)."""
    M, K, G = p.M, p.K, p.Gamma
    c1 = float(mass_flux(p.r_max, p.rho_out, v_out, M))
    c2 = float(bernoulli(p.r_max, p.rho_out, v_out, M, K, G))

    def one(r: float) -> tuple[float, float]:
        def parts(x: float) -> tuple[float, float, float]:
            rho = math.exp(x)
            u2 = (c1 / (rho * r * r)) ** 2
            theta = G * K * rho ** (G - 1)
            h = 1 + theta / (G - 1)
            v2 = u2 / (1 - 2 * M / r + u2)
            return math.log(h * math.sqrt(1 - 2 * M / r + u2) / c2), theta / h - v2, v2

        xs = brentq(lambda x: parts(x)[1], -40, 10, xtol=1e-15)
        assert parts(xs)[0] < 0  # the flow stays subsonic here
        x = brentq(lambda x: parts(x)[0], xs, 10, xtol=1e-15)
        return math.exp(x), math.sqrt(parts(x)[2])

    return lambda pts: np.array([one(float(r)) for r in np.asarray(pts)[:, 0]])


def test_accretion_needs_the_sonic_condition(acc):
    # A slower, everywhere-subsonic flow through the same rho_out solves the same ODEs on the
    # whole interval: rho(r_max) alone does not make the problem well posed; `sonic` does.
    v_out = float(acc.exact(np.array([[acc.r_max]]))[0, 1])
    sub = subsonic_solution(acc, 0.9 * v_out)
    r = np.linspace(acc.r_min, acc.r_max, 13)
    assert fd_residual_rms(acc, r, sub, 0.5) < 1e-8
    conds = {c.name: c for c in acc.conditions()}
    assert set(conds) == {"outer", "sonic"}

    def cond_residual(name: str, fun) -> np.ndarray:
        pts = conds[name].sample(2, None)
        assert pts.shape == (2, 1)
        f = Fields(pts, acc.axes, acc.fields, values=torch.as_tensor(fun(pts.numpy())))
        return conds[name].residual(f).numpy()

    assert np.max(np.abs(cond_residual("outer", acc.exact))) < 1e-14
    assert np.max(np.abs(cond_residual("sonic", acc.exact))) < 1e-12
    assert np.max(np.abs(cond_residual("outer", sub))) < 1e-12
    assert np.min(np.abs(cond_residual("sonic", sub))) > 0.05


def test_accretion_residual_is_the_derivative_of_the_invariants(acc):
    M, K, G = acc.M, acc.K, acc.Gamma
    r = acc.sample_interior(32, torch.Generator().manual_seed(2)).requires_grad_(True)

    def model(p):
        rr = p[:, :1]
        return torch.cat([1e-3 * (rr / 40) ** -1.4, 0.1 * (rr / 40) ** -0.6], dim=1)

    got = acc.residual(torch_fields(acc, r, model))
    rho, v = model(r).unbind(1)
    rr = r[:, 0]
    theta = G * K * rho ** (G - 1)
    h = 1 + theta / (G - 1)
    a2 = theta / h
    ln_c1 = torch.log(rho * v * rr**2) + 0.5 * torch.log((1 - 2 * M / rr) / (1 - v**2))
    ln_c2 = torch.log(h) + 0.5 * torch.log((1 - 2 * M / rr) / (1 - v**2))
    d1 = torch.autograd.grad(ln_c1.sum(), r, retain_graph=True)[0][:, 0]
    d2 = torch.autograd.grad(ln_c2.sum(), r)[0][:, 0]
    want = torch.stack([rr * (v**2 * d1 - d2), -rr * (a2 * d1 - d2)], dim=1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-13)


def test_accretion_invariants_flag_a_wrong_prediction(acc):
    r = np.linspace(acc.r_min, acc.r_max, 50)[:, None]
    vals = acc.exact(r) * np.array([1.01, 1.0])
    inv = acc.invariants(r, vals)
    assert inv["mass_flux_error"] > 5e-3


def test_solver_rejects_an_out_of_range_density():
    with pytest.raises(ValueError, match="must lie in"):
        MichelAccretion.through(140.5, 1e-6, 1.0, 0.1, 4 / 3, 20.0, 140.5)


# -- all three: trial functions, caching, bad input ---------------------------------------------
TRIALS = {
    "legendre": {"y": "(-1)**l + (1 - exp(-(x + 1))) * y"},
    "hypergeometric": {"y": "1 + x * y"},
    "accretion": {"rho": "rho_out + (r_max - r) / r * exp(-rho)", "v": "exp(-v)"},
}
HARD_POINT = {"legendre": (-1.0, [-1.0]), "hypergeometric": (0.0, [1.0])}


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_documented_trial_functions(name):
    """The trial functions quoted in the module docstring and YAML parse in the PINN's syntax and
    enforce what they claim."""
    text = (CONF_DIR / "problem" / f"{name}.yaml").read_text()
    import problems.singular as module

    for field, expr in TRIALS[name].items():
        assert f'{field}: "{expr}"' in text and f'{field}: "{expr}"' in module.__doc__
    p = build_problem(name)
    net = torch.nn.Linear(1, len(p.fields)).double()
    params = {k: v for k, v in p.params.items() if isinstance(v, (int, float))}
    model = OutputTransform(net, TRIALS[name], p.axes, p.fields, params)
    if name in HARD_POINT:
        x0, want = HARD_POINT[name]
        out = model(torch.tensor([[x0]], dtype=torch.float64))
        torch.testing.assert_close(out[0], torch.tensor(want, dtype=torch.float64))
    else:
        out = model(torch.tensor([[p.r_max], [p.r_min]], dtype=torch.float64)).detach()
        assert abs(float(out[0, 0]) - p.rho_out) < 1e-18
        assert torch.all(out[:, 1] > 0) and float(out[1, 0]) > p.rho_out


@pytest.mark.parametrize(
    ("name", "n", "k"), [("legendre", 201, 1), ("hypergeometric", 201, 1), ("accretion", 1000, 2)]
)
def test_reference_cached_and_callable(monkeypatch, tmp_path, name, n, k):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    p = build_problem(name)
    ref = p.reference()
    assert ref.points.shape == (n, 1) and ref.values.shape == (n, k) and ref.shape == (n,)
    lo, hi = p.domain.lo[0], p.domain.hi[0]
    assert ref.grid[0][0] == lo and ref.grid[0][-1] == hi
    np.testing.assert_array_equal(ref.values, p.exact(ref.points))
    cached = build_problem(name, n_collocation=7).reference()  # training counts share the cache
    assert len(list(tmp_path.glob(f"ref-{name}-*.npz"))) == 1
    np.testing.assert_array_equal(cached.values, ref.values)
    pts = np.array([[lo + 0.3 * (hi - lo)]])
    np.testing.assert_array_equal(cached(pts), p.exact(pts))


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("legendre", "l", -1),
        ("legendre", "l", 2.5),
        ("legendre", "l", True),
        ("legendre", "n_collocation", 0),
        ("legendre", "nx", 1),
        ("hypergeometric", "a", 0.5),  # non-terminating with b = 1
        ("hypergeometric", "a", -21),  # degree above the cap
        ("hypergeometric", "b", float("nan")),
        ("hypergeometric", "c", 0),
        ("hypergeometric", "c", -1.5),
        ("hypergeometric", "c", 4.5),  # c - a - b = 5.5 > 2
        ("hypergeometric", "c", 1.5),  # c - a - b = 2.5: (x - 1)^2.5 is C^2 at x = 1
        ("hypergeometric", "nx", 0),
        ("accretion", "M", 0.0),
        ("accretion", "K", -1.0),
        ("accretion", "Gamma", 1.0),
        ("accretion", "Gamma", 2.0),
        ("accretion", "r_min", 2.0),
        ("accretion", "r_max", 10.0),
        ("accretion", "rho_out", 0.0),
        ("accretion", "rho_out", 1e-6),  # sonic point beyond r_max
        ("accretion", "rho_out", 1.0),  # sonic point inside r_min
        ("accretion", "nr", 1),
    ],
)
def test_bad_params_raise(name, key, value):
    with pytest.raises(ConfigError, match=rf"(?<![\w.-])(problem\.)?{re.escape(key)}\b"):
        build_problem(name, **{key: value})
