"""The high-dimensional problems `hjb`, `hjb_lin`, `bsb` and the Hopf–Cole quadrature behind `hjb`.

The quadrature is checked against closed forms (d = 1 by the Faddeeva function, d = 2 at x = 0 by
exponential integrals), an independent quadrature over scipy's non-central χ² density, seeded
Monte Carlo estimates within their standard error, the PDE itself (finite differences in d = 2,
autograd through the quadrature in d = 100), and its convergence in the number of nodes. The
closed forms of `hjb_lin` and `bsb` are checked to satisfy their PDEs by autograd.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields
from problems.hjb import MAX_EVAL_ENTRIES
from problems.solvers.hjb_quadrature import hjb_log_u, hjb_log_u_torch, terminal_log

U00_D100 = 4.590161724604  # u(0, 0), d = 100, λ = 1, T = 1 (this quadrature; MC-checked below)


def expectation(u: np.ndarray, lam: float) -> np.ndarray:
    """E[exp(-λ g(X_T))] from u = -(1/λ) ln E[...]."""
    return np.exp(-lam * np.asarray(u))


# -- (1) closed forms ------------------------------------------------------------------------
@pytest.mark.parametrize("x", [0.0, 0.3, -1.7, 4.0])
@pytest.mark.parametrize("tau", [0.01, 0.5, 1.0, 3.0])
def test_d1_matches_voigt_profile(x, tau):
    # d = 1, λ = 1: E[2 / (1 + Y²)], Y ~ N(x, 2τ), is 2π times a Voigt profile (Lorentzian of
    # half-width 1 convolved with that Gaussian): sqrt(2π) Re w((x + i)/(2 sqrt(τ))) / sqrt(2τ).
    s = math.sqrt(2 * tau)
    exact = (
        2
        * math.sqrt(math.pi)
        * special.wofz((x + 1j) / (s * math.sqrt(2))).real
        / (s * math.sqrt(2))
    )
    got = expectation(hjb_log_u(x * x, tau, d=1, lam=1.0), 1.0)
    assert abs(got / exact - 1) < 1e-13


@pytest.mark.parametrize("lam", [1, 2, 5])
@pytest.mark.parametrize("tau", [0.05, 1.0, 10.0])
def test_d2_origin_matches_exponential_integral(lam, tau):
    # d = 2, x = 0: |Y|² ~ Exp(mean mu = 4τ), so E[(1 + |Y|²)^-λ] = e^(1/mu) E_λ(1/mu) / mu.
    mu = 4 * tau
    exact = 2.0**lam * math.exp(1 / mu) * special.expn(lam, 1 / mu) / mu
    got = expectation(hjb_log_u(0.0, tau, d=2, lam=float(lam)), lam)
    assert abs(got / exact - 1) < 1e-13


def test_terminal_time_gives_g_exactly():
    sq = np.array([0.0, 0.5, 3.0, 100.0, 1e4])
    for d, lam in ((1, 1.0), (100, 1.0), (10_000, 50.0)):
        np.testing.assert_allclose(hjb_log_u(sq, 0.0, d, lam), terminal_log(sq), rtol=1e-14)


# -- (2) an independent quadrature over scipy's non-central chi-square density ----------------
def chi2_quadrature(sq_norm: float, tau: float, d: int, lam: float) -> float:
    """u by adaptive quadrature of (2/(1 + 2τS))^λ against the density of S ~ χ'²_d(|x|²/(2τ))."""
    nc = sq_norm / (2 * tau)
    dist = stats.ncx2(d, nc) if nc > 0 else stats.chi2(d)
    f = lambda s: (2 / (1 + 2 * tau * s)) ** lam * dist.pdf(s)  # noqa: E731
    mean, sd = dist.mean(), dist.std()
    edges = [0.0, max(0.0, mean - 12 * sd), mean, mean + 12 * sd, np.inf]
    total = sum(
        integrate.quad(f, a, b, epsabs=0, epsrel=1e-13, limit=400)[0]
        for a, b in zip(edges, edges[1:])
        if b > a
    )
    return -math.log(total) / lam


CHI2_CASES = [  # |x|², τ, d, λ
    (0.0, 1.0, 100, 1.0),
    (0.0, 0.5, 100, 0.5),
    (0.0, 1.0, 100, 10.0),
    (0.0, 1.0, 100, 50.0),
    (100.0, 1.0, 100, 1.0),
    (37.0, 0.2, 100, 1.0),
    (3.0, 0.01, 10, 1.0),
    (1.0, 2.0, 3, 2.5),
    (1000.0, 0.7, 1000, 1.0),
]


@pytest.mark.parametrize(("sq_norm", "tau", "d", "lam"), CHI2_CASES)
def test_matches_noncentral_chi2_quadrature(sq_norm, tau, d, lam):
    got = float(hjb_log_u(sq_norm, tau, d, lam))
    assert abs(got - chi2_quadrature(sq_norm, tau, d, lam)) <= 1e-10 * max(1.0, abs(got))


# -- (3) seeded Monte Carlo within its standard error ----------------------------------------
def mc_gaussian(x: np.ndarray, tau: float, lam: float, n: int, seed: int) -> tuple[float, float]:
    """Mean and standard error of (2/(1 + |x + sqrt(2τ) Z|²))^λ from n Gaussian vectors Z."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(0, n, 10_000):
        y = x + math.sqrt(2 * tau) * rng.standard_normal((10_000, len(x)))
        vals.append((2 / (1 + np.einsum("ij,ij->i", y, y))) ** lam)
    v = np.concatenate(vals)[:n]
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))


def mc_split(
    sq_norm: float, tau: float, d: int, lam: float, n: int, seed: int
) -> tuple[float, float]:
    """As `mc_gaussian`, sampling |x + σZ|² = (|x| + σ Z_1)² + σ² χ²_{d-1} (any d, cheaply)."""
    rng = np.random.default_rng(seed)
    s = math.sqrt(2 * tau)
    rest = s * s * rng.chisquare(d - 1, n) if d > 1 else 0.0
    y2 = (math.sqrt(sq_norm) + s * rng.standard_normal(n)) ** 2 + rest
    v = (2 / (1 + y2)) ** lam
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(n))


MC_POINTS = [  # t, x (d = 100, T = 1): the research notes' check points, and a random one
    (0.0, np.zeros(100)),
    (0.5, np.zeros(100)),
    (0.9, np.zeros(100)),
    (0.0, np.ones(100)),
    (0.3, np.random.default_rng(7).standard_normal(100)),
]


@pytest.mark.parametrize(("t", "x"), MC_POINTS)
def test_monte_carlo_gaussian_vectors_d100(t, x):
    lam = 1.0
    mean, se = mc_gaussian(x, 1.0 - t, lam, n=100_000, seed=1)
    quad = expectation(hjb_log_u(x @ x, 1.0 - t, 100, lam), lam)
    assert abs(quad - mean) < 4 * se
    # The estimate resolves the problem: one more dimension moves E by many standard errors.
    other = expectation(hjb_log_u(x @ x, 1.0 - t, 101, lam), lam)
    assert abs(other - mean) > 8 * se


@pytest.mark.parametrize(
    ("sq_norm", "tau", "d", "lam"),
    [
        (0.0, 1.0, 100, 0.5),
        (0.0, 1.0, 100, 10.0),
        (2.0, 0.3, 1, 1.0),
        (5.0, 0.8, 2, 3.0),
        (900.0, 0.4, 1000, 1.0),
        (1e4, 1.0, 10_000, 1.0),
        (0.0, 1.0, 10_000, 10.0),
    ],
)
def test_monte_carlo_chi2_split(sq_norm, tau, d, lam):
    # Not λ = 50 at d = 100: (1 + 2τS)^-50 is carried by S = O(1), a 1e-80 event under χ²_100,
    # so no Monte Carlo sees it (the χ² quadrature above covers that case).
    mean, se = mc_split(sq_norm, tau, d, lam, n=1_000_000, seed=2)
    quad = expectation(hjb_log_u(sq_norm, tau, d, lam), lam)
    assert abs(quad - mean) < 4 * se
    assert se < 0.01 * mean  # the comparison is sharp


def test_origin_value_d100():
    # u(0, 0) for d = 100, λ = 1: the value the HJB benchmark quotes, MC-checked above.
    assert abs(float(hjb_log_u(0.0, 1.0, 100, 1.0)) - U00_D100) < 1e-11


# -- (4) convergence in the number of nodes ---------------------------------------------------
NODE_CASES = [  # |x|², τ, d, λ: small and large d, λ, τ and |x|
    (0.0, 1.0, 100, 1.0),
    (150.0, 0.3, 100, 1.0),
    (1.0, 0.01, 2, 0.5),
    (0.0, 1.0, 100, 50.0),
    (4e4, 1.0, 10_000, 1.0),
    (10.0, 10.0, 1, 10.0),
]


@pytest.mark.parametrize(("sq_norm", "tau", "d", "lam"), NODE_CASES)
def test_converges_exponentially_in_nodes(sq_norm, tau, d, lam):
    fine = float(hjb_log_u(sq_norm, tau, d, lam, n=4096))
    floor = 1e-13 * max(1.0, abs(fine))
    nodes = (8, 32, 64, 128, 256)
    err = {n: abs(float(hjb_log_u(sq_norm, tau, d, lam, n=n)) - fine) for n in nodes}
    assert err[8] > 1e-4  # too few nodes are visibly wrong: the check has teeth
    for n in (32, 64, 128):  # each doubling gains a factor of 10 or more, down to round-off
        assert err[2 * n] < max(err[n] / 10, floor), err
    assert err[256] < floor
    # The default (step-controlled) rule sits at the converged value.
    assert abs(float(hjb_log_u(sq_norm, tau, d, lam)) - fine) < floor


def test_default_rule_is_independent_of_the_batch():
    sq = np.array([0.0, 5.0, 80.0, 400.0])
    tau = np.array([1.0, 0.5, 0.01, 0.0])
    one_by_one = [float(hjb_log_u(s, t, 100, 1.0)) for s, t in zip(sq, tau)]
    # Padding changes only the summation order: agreement to an ulp or two.
    np.testing.assert_allclose(hjb_log_u(sq, tau, 100, 1.0), one_by_one, rtol=1e-15, atol=0)


def test_torch_and_numpy_versions_agree():
    rng = np.random.default_rng(3)
    sq = rng.uniform(0, 300, 200)
    tau = rng.uniform(0, 1, 200)
    for lam, n in ((1.0, None), (7.0, None), (1.0, 64)):
        got = hjb_log_u_torch(torch.from_numpy(sq), torch.from_numpy(tau), 100, lam, n).numpy()
        np.testing.assert_allclose(got, hjb_log_u(sq, tau, 100, lam, n), rtol=1e-14, atol=0)


# -- (5) the PDE: finite differences in d = 2, autograd through the quadrature in d = 100 ------
def fd_residual(
    x: np.ndarray, t: np.ndarray, h: float, lam: float, pde_lam: float | None = None
) -> np.ndarray:
    """u_t + Δu - λ'|∇u|² (λ' = `pde_lam`, default λ) by centred differences of the d = 2
    quadrature for λ (T = 1)."""

    def u(x1, x2, tt):
        return hjb_log_u(x1**2 + x2**2, 1.0 - tt, 2, lam)

    x1, x2 = x[:, 0], x[:, 1]
    u0 = u(x1, x2, t)
    ut = (u(x1, x2, t + h) - u(x1, x2, t - h)) / (2 * h)
    u1 = (u(x1 + h, x2, t) - u(x1 - h, x2, t)) / (2 * h)
    u2 = (u(x1, x2 + h, t) - u(x1, x2 - h, t)) / (2 * h)
    u11 = (u(x1 + h, x2, t) - 2 * u0 + u(x1 - h, x2, t)) / h**2
    u22 = (u(x1, x2 + h, t) - 2 * u0 + u(x1, x2 - h, t)) / h**2
    return ut + u11 + u22 - (lam if pde_lam is None else pde_lam) * (u1**2 + u2**2)


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a**2)))


@pytest.mark.parametrize("lam", [1.0, 4.0])
def test_pde_by_finite_differences_d2(lam):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    t = rng.uniform(0.1, 0.9, 300)
    # h from 0.04 to 0.01: truncation O(h^2) dominates round-off (~1e-16/h^2).
    res = [rms(fd_residual(x, t, h, lam)) for h in (0.04, 0.02, 0.01)]
    orders = np.log2(np.array(res[:-1]) / np.array(res[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), (res, orders)
    assert res[-1] < 1e-3
    # The PDE with another λ leaves a residual far above the truncation error.
    assert rms(fd_residual(x, t, 0.01, lam, pde_lam=1.1 * lam)) > 100 * res[-1]


def quadrature_model(d: int, lam: float, T: float = 1.0):
    """The quadrature as a torch model of the problem's points (columns x0..x{d-1}, t)."""
    return lambda p: hjb_log_u_torch(p[:, :d].square().sum(1), T - p[:, d], d, lam)[:, None]


@pytest.mark.parametrize(("d", "lam"), [(100, 1.0), (100, 10.0), (3, 0.5)])
def test_quadrature_satisfies_the_pde_by_autograd(d, lam):
    problem = build_problem("hjb", d=d, lam=lam, n_eval=1)
    pts = problem.sample_interior(8, torch.Generator().manual_seed(0))
    pts = torch.cat([pts, torch.zeros(1, d + 1)])  # and the origin at t = 0
    f = Fields(pts, problem.axes, problem.fields, model=quadrature_model(d, lam))
    r = problem.residual(f)
    assert r.shape == (9, 1)
    assert r.abs().max() < 1e-12
    assert f.d("u", "t").abs().min() > 0.1  # the terms are O(1); they cancel
    wrong = build_problem("hjb", d=d, lam=1.1 * lam, n_eval=1)
    f = Fields(pts, problem.axes, problem.fields, model=quadrature_model(d, lam))
    assert wrong.residual(f)[:-1].abs().min() > 1e-6  # the origin has ∇u = 0


# -- (6) hjb_lin and bsb: the closed forms satisfy their PDEs ---------------------------------
def lin_model(d: int, T: float):
    return lambda p: (p[:, :d].sum(1) + T - p[:, d])[:, None]


def bsb_model(d: int, T: float, r: float, sigma: float):
    rate = r + sigma**2
    return lambda p: (torch.exp(rate * (T - p[:, d])) * p[:, :d].square().sum(1))[:, None]


@pytest.mark.parametrize("d", [1, 7, 100])
def test_hjb_lin_exact_solution(d):
    for c in (1.0, 1.75, 3.0):
        problem = build_problem("hjb_lin", d=d, c=c, T=0.7, n_eval=1)
        pts = problem.sample_interior(32, torch.Generator().manual_seed(1))
        f = Fields(pts, problem.axes, problem.fields, model=lin_model(d, 0.7))
        r = problem.residual(f)
        assert r.shape == (32, 1)
        torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    # u = Σx + 2(T - t) is off by u_t: residual -1 everywhere.
    bad = lambda p: (p[:, :d].sum(1) + 2 * (0.7 - p[:, d]))[:, None]  # noqa: E731
    r = problem.residual(Fields(pts, problem.axes, problem.fields, model=bad))
    torch.testing.assert_close(r, -torch.ones_like(r), rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [1, 7, 100])
def test_bsb_exact_solution(d):
    for r_, sigma in ((0.05, 0.4), (-0.1, 1.3)):
        problem = build_problem("bsb", d=d, r=r_, sigma=sigma, n_eval=1)
        pts = problem.sample_interior(32, torch.Generator().manual_seed(2))
        f = Fields(pts, problem.axes, problem.fields, model=bsb_model(d, 1.0, r_, sigma))
        res = problem.residual(f)
        assert res.shape == (32, 1)
        scale = f["u"].abs().max()
        assert res.abs().max() < 1e-13 * scale
    # The same closed form with another σ does not solve it.
    f = Fields(pts, problem.axes, problem.fields, model=bsb_model(d, 1.0, r_, 1.1 * sigma))
    assert problem.residual(f).abs().min() > 1e-6


# -- (7) residual expressions against polynomial models ---------------------------------------
def quad_model(d: int):
    """u = |x|² + t: u_t = 1, ∇u = 2x, u_{x_i x_i} = 2."""
    return lambda p: (p[:, :d].square().sum(1) + p[:, d])[:, None]


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("hjb", {"lam": 0.7}, lambda x, t, d: 1 + 2 * d - 0.7 * 4 * (x**2).sum(1)),
        (
            "hjb_lin",
            {"c": 1.5},
            lambda x, t, d: 1 + 2 * d - (2 * x.abs()).pow(1.5).mean(1) + 2,
        ),
        (
            "bsb",
            {"r": 0.05, "sigma": 0.4},
            lambda x, t, d: (
                1 + 0.16 * (x**2).sum(1) - 0.05 * ((x**2).sum(1) + t - 2 * (x**2).sum(1))
            ),
        ),
    ],
)
def test_residual_expression(name, params, expected):
    d = 5
    problem = build_problem(name, d=d, n_eval=1, **params)
    pts = problem.sample_interior(40, torch.Generator().manual_seed(3))
    r = problem.residual(Fields(pts, problem.axes, problem.fields, model=quad_model(d)))
    want = expected(pts[:, :d], pts[:, d], d)
    torch.testing.assert_close(r[:, 0], want, rtol=1e-12, atol=1e-12)


# -- (8) terminal condition, sampling, evaluation set ----------------------------------------
EXACT_MODELS = {
    "hjb": lambda d: quadrature_model(d, 1.0),
    "hjb_lin": lambda d: lin_model(d, 1.0),
    "bsb": lambda d: bsb_model(d, 1.0, 0.05, 0.4),
}


@pytest.mark.parametrize("name", sorted(EXACT_MODELS))
def test_terminal_condition(name):
    d = 10
    problem = build_problem(name, d=d, n_eval=1)
    (cond,) = problem.conditions()
    assert cond.name == "tc" and cond.n_points == problem.n_terminal
    pts = cond.sample(64, torch.Generator().manual_seed(4))
    assert pts.shape == (64, d + 1) and pts.dtype == torch.float64
    assert torch.all(pts[:, -1] == problem.T)
    r = cond.residual(Fields(pts, problem.axes, problem.fields, model=EXACT_MODELS[name](d)))
    assert r.shape == (64, 1)
    torch.testing.assert_close(r, torch.zeros_like(r), rtol=0, atol=1e-12)
    r_bad = cond.residual(Fields(pts, problem.axes, problem.fields, model=lambda p: p[:, :1]))
    assert r_bad.abs().min() > 0


@pytest.mark.parametrize(
    ("name", "extra"), [("hjb", {"collocation": "normal"}), ("hjb_lin", {}), ("bsb", {})]
)
def test_sampling_law_and_axes(name, extra):
    problem = build_problem(name, d=50, T=2.0, n_eval=1, **extra)
    assert problem.axes == (*(f"x{i}" for i in range(50)), "t")
    assert problem.fields == ("u",) and problem.time_dependent
    assert problem.domain.axes == problem.axes
    np.testing.assert_array_equal(problem.domain.hi, [3.0] * 50 + [2.0])
    pts = problem.sample_interior(4000, torch.Generator().manual_seed(5))
    again = problem.sample_interior(4000, torch.Generator().manual_seed(5))
    torch.testing.assert_close(pts, again, rtol=0, atol=0)
    x, t = pts[:, :50], pts[:, 50]
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01  # N(0, I): 2e5 draws
    assert x.abs().max() > 3.0  # unbounded in space: the box is only a scale
    assert t.min() >= 0 and t.max() <= 2.0 and abs(t.mean() - 1.0) < 0.05


def test_forward_collocation_law():
    """hjb's default law: at time t, x ~ N(0, (1 + 2vt) I), v ~ U[0, 1], so E|x|^2/d = 1 + t
    and the spread reaches 1 + 2t; the terminal points stay N(0, I)."""
    problem = build_problem("hjb", d=50, T=2.0, n_eval=1)
    pts = problem.sample_interior(20_000, torch.Generator().manual_seed(5))
    r2, t = pts[:, :50].square().mean(dim=1), pts[:, 50]
    for lo in (0.0, 0.5, 1.0, 1.5):
        band = (t >= lo) & (t < lo + 0.5)
        mid = lo + 0.25
        assert abs(r2[band].mean() - (1 + mid)) < 0.05, lo
        assert r2[band].max() > 1 + 1.6 * mid  # the spread reaches toward 1 + 2t
    tc = problem.conditions()[0].sample(4000, torch.Generator().manual_seed(6))
    assert abs(tc[:, :50].square().mean() - 1) < 0.01
    with pytest.raises(ConfigError, match="problem.collocation must be one of 'forward', 'normal'"):
        build_problem("hjb", collocation="uniform")


def test_evaluation_set():
    problem = build_problem("hjb", d=20, n_eval=3000, eval_seed=3)
    pts = problem.evaluation_points()
    assert pts.shape == (3000, 21)
    np.testing.assert_array_equal(problem.points_of_interest()["origin"], np.zeros((1, 21)))
    same = build_problem("hjb", d=20, n_eval=3000, eval_seed=3, n_collocation=7)
    np.testing.assert_array_equal(same.evaluation_points(), pts)
    other_seed = build_problem("hjb", d=20, n_eval=3000).evaluation_points()
    assert not np.allclose(other_seed, pts)
    x, t = pts[:, :20], pts[:, 20]
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02
    assert 0 <= t.min() and t.max() <= 1 and abs(t.mean() - 0.5) < 0.02

    bsb = build_problem("bsb", n_eval=10)
    assert bsb.evaluation_points().shape == (10, 101)
    x0 = bsb.points_of_interest()["x0"]
    np.testing.assert_array_equal(x0[0, :4], [1.0, 0.5, 1.0, 0.5])
    assert x0[0, -1] == 0.0
    np.testing.assert_allclose(bsb.exact(x0)[:, 0], [math.exp(0.21) * 62.5], rtol=1e-15)


# -- (9) the cached reference through the registry --------------------------------------------
def test_reference_cached_and_callable(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    ref = build_problem("hjb", n_eval=500).reference()
    assert ref.points.shape == (500, 101) and ref.values.shape == (500, 1)
    assert abs(ref.exact(np.zeros((1, 101)))[0, 0] - U00_D100) < 1e-11
    sq = np.einsum("ij,ij->i", ref.points[:, :100], ref.points[:, :100])
    np.testing.assert_array_equal(ref.values[:, 0], hjb_log_u(sq, 1.0 - ref.points[:, 100], 100))
    assert ref(ref.points[:5]).shape == (5, 1)

    problem = build_problem("hjb", n_eval=500, n_collocation=10, n_terminal=3)

    def no_recompute():
        raise AssertionError("the second reference should come from the disk cache")

    monkeypatch.setattr(problem, "_compute_reference", no_recompute)
    np.testing.assert_array_equal(problem.reference().values, ref.values)
    build_problem("hjb", n_eval=500, lam=2.0).reference()
    build_problem("hjb_lin", n_eval=500, c=1.1).reference()
    build_problem("hjb_lin", n_eval=500, c=1.9, n_collocation=5).reference()  # c: same solution
    assert len(list(tmp_path.glob("ref-hjb-*.npz"))) == 2
    assert len(list(tmp_path.glob("ref-hjb_lin-*.npz"))) == 1


@pytest.mark.parametrize("name", ["hjb", "hjb_lin", "bsb"])
def test_large_dimension_reference(monkeypatch, tmp_path, name):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    problem = build_problem(name, d=10_000, n_eval=200)
    ref = problem.reference()
    assert ref.points.shape == (200, 10_001)
    assert np.all(np.isfinite(ref.values))
    if name == "hjb":  # g is about ln(d) there; u(0, 0) = -ln E[2/(1 + 2χ²_d)] ≈ ln(d + 1/2)
        assert abs(ref.exact(np.zeros((1, 10_001)))[0, 0] - math.log(10_000.5)) < 1e-3


# -- (10) bad parameters ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("hjb", "d", 0),
        ("hjb", "d", 2.5),
        ("hjb", "d", True),
        ("hjb", "T", 0.0),
        ("hjb", "T", float("nan")),
        ("hjb", "lam", 0.0),
        ("hjb", "lam", -1.0),
        ("hjb", "n_collocation", 0),
        ("hjb", "n_terminal", -3),
        ("hjb", "n_eval", 0),
        ("hjb", "eval_seed", -1),
        ("hjb_lin", "c", 0.5),
        ("hjb_lin", "c", float("inf")),
        ("bsb", "sigma", 0.0),
        ("bsb", "r", float("nan")),
        ("bsb", "r", "0.05"),
    ],
)
def test_bad_params_raise(name, key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem(name, **{key: value})


def test_evaluation_set_size_is_capped():
    with pytest.raises(ConfigError, match=r"n_eval .*1999"):
        build_problem("hjb", d=10_000)
    assert MAX_EVAL_ENTRIES // 10_001 == 1999
    build_problem("hjb", d=10_000, n_eval=1999)


def test_unknown_key_raises():
    with pytest.raises(ConfigError, match="lambda"):
        build_problem("hjb", **{"lambda": 1.0})


# -- (11) the quantity of interest, scored apart ------------------------------------------------
def test_point_of_interest_is_scored_apart_from_rel_l2():
    """u(0, 0) is reported as rel_err_origin, from the predictor at that point, and stays out
    of the evaluation set (rel_l2)."""
    from bench.scoring import score
    from methods.base import TorchPredictor

    problem = build_problem("hjb", d=10, n_eval=50)
    const = 1.25

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Parameter(torch.tensor(const, dtype=torch.float64))

        def forward(self, x):
            return self.c.expand(len(x), 1)

    predictor = TorchPredictor(Constant(), problem.axes, problem.fields)
    out, pred = score(problem, predictor, 0, 0, torch.device("cpu"))
    u00 = problem.exact(np.zeros((1, 11)))[0, 0]
    assert out["rel_err_origin"] == pytest.approx(abs(const - u00) / abs(u00), rel=1e-12)
    values = problem.reference().values[:, 0]
    assert pred.shape == (50, 1)
    rel = np.linalg.norm(const - values) / np.linalg.norm(values)
    assert out["rel_l2"] == pytest.approx(rel, rel=1e-12)


@pytest.mark.parametrize("name", ["hjb", "hjb_lin", "bsb"])
def test_trial_inputs_closed_forms_match_autograd(name):
    """The trial inputs' closed-form derivatives (what the forward-mode backend uses) equal
    autograd's through their values, on every axis and axis pair, t included."""
    d = 4
    problem = build_problem(name, d=d)
    x = problem.sample_interior(7, torch.Generator().manual_seed(3)).requires_grad_(True)
    for key, inp in problem.trial_inputs().items():
        (g,) = torch.autograd.grad(inp.value(x).sum(), x, create_graph=True)
        torch.testing.assert_close(inp.gradient(x.detach()), g.detach(), msg=key)
        for i in range(d + 1):
            if not g.requires_grad:  # affine: no curvature
                assert all(inp.second(x.detach(), i, j) == 0.0 for j in range(d + 1))
                continue
            (h,) = torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)
            for j in range(d + 1):
                got = torch.as_tensor(inp.second(x.detach(), i, j), dtype=x.dtype)
                torch.testing.assert_close(got.expand(7), h[:, j], msg=f"{key} {i} {j}")
