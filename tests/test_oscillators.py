"""The oscillator problems and their references: Jacobi-cn Duffing, the chaotic Duffing's horizon,
Adler's closed form and slip period, and the Adler reduction of the MEMS oscillator (its error
halves with eps); plus residuals, conditions, caching and bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields
from problems.oscillators import MemsSnic
from problems.solvers.ode import integrate
from problems.solvers.oscillator_exact import (
    adler_phase,
    adler_slip_period,
    duffing_cn,
    slow_phase,
    vdp_duffing_limit_cycle,
)

NAMES = ("duffing", "duffing_free", "adler", "adler_slip", "mems_snic")


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def duffing_rhs(alpha: float, beta: float, delta: float = 0.0, gamma: float = 0.0, w: float = 0.0):
    return lambda t, y: (
        y[1],
        gamma * math.cos(w * t) - delta * y[1] - alpha * y[0] - beta * y[0] ** 3,
    )


# -- (1) duffing_free: the Jacobi-cn solution ----------------------------------------------------
CN_CASES = [(1.0, 1.0, 1.5), (-1.0, 1.0, 2.0), (1.0, 0.0, 1.0), (2.0, 0.5, 1.0)]


@pytest.mark.parametrize(("alpha", "beta", "amp"), CN_CASES)
def test_cn_solution_is_the_dop853_limit(alpha, beta, amp):
    t = np.linspace(0.0, 40.0, 801)
    u, v = duffing_cn(t, alpha, beta, amp)
    errs = []
    for rtol in (1e-6, 1e-8, 1e-10, 1e-12):
        y = integrate(duffing_rhs(alpha, beta), [amp, 0.0], t, rtol=rtol)
        errs.append(max(np.abs(y[:, 0] - u).max(), np.abs(y[:, 1] - v).max()))
    # Each hundredfold cut of the tolerance cuts the error at least thirtyfold, down to ~1e-10.
    assert all(b < a / 30 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 5e-10, errs


@pytest.mark.parametrize(("alpha", "beta", "amp"), CN_CASES)
def test_cn_period_and_energy(alpha, beta, amp):
    p = build_problem("duffing_free", alpha=alpha, beta=beta, amplitude=amp)
    T = p.period
    u, v = duffing_cn(np.array([0.0, T / 4, T / 2, 3 * T / 4, T, 7 * T]), alpha, beta, amp)
    np.testing.assert_allclose(u, [amp, 0, -amp, 0, amp, amp], rtol=0, atol=1e-12)
    t = np.linspace(0.0, 50.0, 1001)
    e = p.energy(*duffing_cn(t, alpha, beta, amp))
    np.testing.assert_allclose(e, alpha * amp**2 / 2 + beta * amp**4 / 4, rtol=1e-13)


def test_duffing_free_reference_is_exact():
    p = build_problem("duffing_free")
    ref = p.reference()
    assert ref.values.shape == (1001, 1) and ref.shape == (1001,)
    np.testing.assert_array_equal(ref.grid[0], np.linspace(0.0, 20.0, 1001))
    np.testing.assert_array_equal(ref.values[:, 0], duffing_cn(ref.grid[0], 1.0, 1.0, 1.5)[0])
    assert abs(p.period - 3.864966285404221) < 1e-12


def test_duffing_solver_matches_cn_when_unforced():
    # The `duffing` reference code path (DOP853, self-checked) against the exact solution.
    p = build_problem("duffing", delta=0.0, gamma=0.0, alpha=-1.0, beta=1.0, u0=2.0, v0=0.0)
    ref = p.reference()
    exact = duffing_cn(ref.grid[0], -1.0, 1.0, 2.0)[0]
    assert np.abs(ref.values[:, 0] - exact).max() < 5e-10  # measured 1.2e-10 at t = 50


# -- (2) duffing: the chaotic reference and its horizon ---------------------------------------
def test_chaotic_reference_converged_over_its_horizon():
    p = build_problem("duffing")
    ref = p.reference()
    t = ref.grid[0]
    assert t[-1] == 50.0 and ref.values.shape == (2001, 1)
    y13 = integrate(p.rhs, [0.1, 0.1], t, rtol=1e-13)
    rk45 = integrate(p.rhs, [0.1, 0.1], t, rtol=1e-13, method="RK45")  # a different scheme
    assert np.abs(ref.values[:, 0] - y13[:, 0]).max() < 1e-10
    assert np.abs(ref.values[:, 0] - rk45[:, 0]).max() < 1e-10
    # Convergence: coarser tolerances approach the reference as the tolerance falls.
    errs = [
        np.abs(integrate(p.rhs, [0.1, 0.1], t, rtol=r)[:, 0] - ref.values[:, 0]).max()
        for r in (1e-6, 1e-8, 1e-10)
    ]
    assert errs[0] > 30 * errs[1] > 900 * errs[2], errs
    assert 0.5 < np.abs(ref.values).max() < 2.0  # it leaves the well it started in
    assert ref.values.min() < -0.5 and ref.values.max() > 0.5


def test_chaos_is_real_and_the_horizon_guard_fires():
    # Past t ~ 100 the Lyapunov growth makes rtol 1e-12 and 1e-13 disagree by far more than the
    # 1e-8 the reference accepts (they agree to ~1e-11 up to t = 50, previous test).
    p = build_problem("duffing", t_end=160.0, nt=1601)
    with pytest.raises(ConfigError, match=r"t_end = 160 .* changes by (\S+) ") as err:
        p.reference()
    changed = float(err.value.args[0].split("changes by ")[1].split()[0])
    assert changed > 1e-6


# -- (3) Adler: closed form, slip period, locking ----------------------------------------------
ADLER_CASES = [  # nu, K, phi0
    (1.5, 1.0, 0.0),
    (1.2, 1.0, 10.0),
    (-1.2, 1.0, 1.0),
    (0.5, 1.0, 0.0),
    (0.5, 1.0, 3.0),  # just past the unstable point: one turn, then lock
    (-0.5, 1.0, 2.0),
    (1.0, 1.0, 2.0),  # the saddle-node point itself
    (0.0, 1.0, 1.0),
]


@pytest.mark.parametrize(("nu", "K", "phi0"), ADLER_CASES)
def test_adler_closed_form_is_the_dop853_limit(nu, K, phi0):
    t = np.linspace(0.0, 40.0, 801)
    exact = adler_phase(t, nu, K, phi0)
    assert exact[0] == phi0
    rhs = lambda t, y: (nu - K * math.sin(y[0]),)  # noqa: E731
    errs = [
        np.abs(integrate(rhs, [phi0], t, rtol=r)[:, 0] - exact).max() for r in (1e-8, 1e-10, 1e-12)
    ]
    assert all(b < a / 10 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-9, errs


@pytest.mark.parametrize(("nu", "K"), [(1.2, 1.0), (1.5, 1.0), (-2.0, 0.7), (1.01, 1.0)])
def test_slip_period(nu, K):
    T = adler_slip_period(nu, K)
    assert T == pytest.approx(2 * math.pi / math.sqrt(nu**2 - K**2), rel=1e-15)

    def turned(t, y):  # one full turn of the integrated phase
        return abs(y[0]) - 2 * math.pi

    turned.terminal = True
    sol = solve_ivp(
        lambda t, y: (nu - K * math.sin(y[0]),),
        (0.0, 10 * T),
        [0.0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
        events=turned,
    )
    assert sol.t_events[0][0] == pytest.approx(T, rel=1e-9)
    # The closed form turns by exactly 2 pi sign(nu) per period, from any phase.
    t = np.array([0.3, 2.7])
    shift = adler_phase(t + 3 * T, nu, K, 0.4) - adler_phase(t, nu, K, 0.4)
    np.testing.assert_allclose(shift, 6 * math.pi * math.copysign(1, nu), rtol=1e-12)


def test_snic_scaling():
    # T ~ 2 pi / sqrt(2 K (nu - K)) as nu -> K+: the square-root divergence of the SNIC.
    K = 1.0
    for d in (1e-2, 1e-4, 1e-6):
        assert adler_slip_period(K + d, K) * math.sqrt(2 * K * d) == pytest.approx(
            2 * math.pi, rel=d
        )


def test_locked_limit():
    t = np.array([60.0])
    assert adler_phase(t, 0.5, 1.0, 0.0)[0] == pytest.approx(math.asin(0.5), abs=1e-12)
    assert adler_phase(t, 0.5, 1.0, 3.0)[0] == pytest.approx(
        math.asin(0.5) + 2 * math.pi, abs=1e-12
    )
    ref = build_problem("adler").reference()
    assert ref.values[-1, 0] == pytest.approx(math.asin(0.5) + 2 * math.pi, abs=1e-6)
    assert np.all(np.diff(ref.values[:, 0]) > 0)  # monotone: one turn, then lock


def test_adler_slip_reference():
    p = build_problem("adler_slip")
    ref = p.reference()
    t = ref.grid[0]
    np.testing.assert_array_equal(ref.values[:, 0], adler_phase(t, 1.2, 1.0, 0.0))
    turns = ref.values[-1, 0] / (2 * math.pi)
    assert turns == pytest.approx(30.0 / p.period, abs=0.2)  # about 3.2 slips
    # The bottleneck: the phase creeps near pi/2 (rate nu - K) and races near 3pi/2 (nu + K).
    rate = np.gradient(ref.values[:, 0], t)
    assert rate.min() == pytest.approx(0.2, abs=1e-2) and rate.max() == pytest.approx(2.2, abs=1e-2)


@pytest.mark.parametrize(
    ("name", "nu"), [("adler", 1.2), ("adler", -1.0), ("adler_slip", 0.5), ("adler_slip", 1.0)]
)
def test_adler_regime_is_checked(name, nu):
    with pytest.raises(ConfigError, match=r"\bnu\b"):
        build_problem(name, nu=nu)


# -- (4) mems_snic: the free limit cycle and the Adler reduction --------------------------------
def test_limit_cycle_frequency_and_amplitude_expansions():
    # Omega0 = 1 + 3 eps kappa / 2 + O(eps^2) and amplitude 2 + O(eps): the remainders shrink
    # fourfold and twofold when eps is halved (the shooting is right, and to O(eps^2)).
    rem_w, rem_a = [], []
    for eps in (0.2, 0.1, 0.05):
        amp, period = vdp_duffing_limit_cycle(eps, 1.0, 0.25)
        rem_w.append(abs(2 * math.pi / period - (1 + 1.5 * eps * 0.25)))
        rem_a.append(abs(amp - 2.0))
    assert 3.5 < rem_w[0] / rem_w[1] < 4.5 and 3.5 < rem_w[1] / rem_w[2] < 4.5, rem_w
    assert 1.6 < rem_a[0] / rem_a[1] < 2.4 and 1.6 < rem_a[1] / rem_a[2] < 2.4, rem_a


def test_limit_cycle_is_periodic():
    amp, period = vdp_duffing_limit_cycle(0.2, 1.0, 0.25)
    p = MemsSnic(eps=0.2, mu=1.0, kappa=0.25, f=1e-300, u0=amp, v0=0.0)  # f ~ 0: free
    y = p.trajectory(np.array([period, 5 * period]))
    np.testing.assert_allclose(y, [[amp, 0.0], [amp, 0.0]], rtol=0, atol=1e-9)


def adler_tracking(eps: float, ratio: float, slow_time: float) -> float:
    """Largest |phi_full - phi_Adler| over slow time [0, slow_time], for mu=1, kappa=0.25, f=1,
    with omega = Omega0 + ratio K, starting on the free limit cycle."""
    amp, period = vdp_duffing_limit_cycle(eps, 1.0, 0.25)
    K = eps**2 / 4 * math.sqrt(1 + 0.75**2)
    omega = 2 * math.pi / period + ratio * K
    p = MemsSnic(eps=eps, mu=1.0, kappa=0.25, f=1.0, omega=omega, u0=amp, v0=0.0)
    red = p.reduction()
    assert red.K == pytest.approx(K, rel=1e-14) and red.nu == pytest.approx(ratio * K, rel=1e-9)
    t = np.linspace(0.0, slow_time / eps**2, int(4 * slow_time / eps**2) + 1)
    y = p.trajectory(t, rtol=1e-9)
    phi = slow_phase(t, y[:, 0], y[:, 1], red)
    return float(np.abs(phi - red.phase(t, phi[0])).max())


def test_adler_tracks_the_slow_phase_and_its_error_halves_with_eps():
    # Past the locking range (nu = 2K), over one slip period in slow time eps^2 t:
    # measured max errors 0.53 (eps 0.2), 0.28 (0.1), 0.15 (0.05): O(eps).
    slip = adler_slip_period(2.0, 1.0) / 0.3125  # the period in slow time (K_slow = 0.3125)
    e1, e2 = adler_tracking(0.2, 2.0, slip), adler_tracking(0.1, 2.0, slip)
    assert e2 < 0.33, (e1, e2)
    assert 1.6 < e1 / e2 < 2.4, (e1, e2)


def test_adler_predicts_the_locked_phase_and_its_error_halves_with_eps():
    # Inside the locking range (nu = K/2) the phase settles at asin(nu/K) = pi/6: measured final
    # errors 0.178 (eps 0.2), 0.090 (0.1), 0.045 (0.05): O(eps).
    errs = []
    for eps in (0.2, 0.1):
        amp, period = vdp_duffing_limit_cycle(eps, 1.0, 0.25)
        omega = 2 * math.pi / period + 0.5 * eps**2 / 4 * 1.25
        p = MemsSnic(eps=eps, mu=1.0, kappa=0.25, f=1.0, omega=omega, u0=amp, v0=0.0)
        red = p.reduction()
        assert red.locked
        drive = 2 * math.pi / omega
        end = 25.0 / eps**2  # slow time 25: locked to ~1e-3
        t = np.linspace(end - 10 * drive, end, 801)  # ten drive periods average out the ripple
        y = integrate(p.rhs, [amp, 0.0], np.concatenate([[0.0], t]), rtol=1e-9)[1:]
        phi = slow_phase(t, y[:, 0], y[:, 1], red)
        locked = float(np.angle(np.mean(np.exp(1j * phi[:-1]))))
        errs.append(abs(locked - math.asin(red.nu / red.K)))
    assert errs[1] < 0.12, errs
    assert 1.7 < errs[0] / errs[1] < 2.3, errs


def test_mems_case_reference_and_its_slip():
    p = build_problem("mems_snic")
    ref = p.reference()  # refuses itself unless rtol 1e-12 and 1e-13 agree to 1e-8
    t = ref.grid[0]
    assert ref.values.shape == (7001, 1) and t[-1] == 700.0
    red = p.reduction()
    assert red.nu / red.K == pytest.approx(1.2, rel=1e-8)  # Adler: outside the locking range
    assert red.omega0 == pytest.approx(1.0689488766421, abs=1e-10)
    t_long = np.linspace(0.0, 1250.0, 12501)
    y = p.trajectory(t_long, rtol=1e-10)
    np.testing.assert_allclose(y[:7001, 0], ref.values[:, 0], rtol=0, atol=1e-7)
    phi = slow_phase(t_long, y[:, 0], y[:, 1], red)
    assert phi[0] == pytest.approx(red.offset - math.pi / 2, abs=1e-12)
    # One slip inside the horizon: from -0.93 through the bottleneck (pi/2) and the fast turn.
    assert phi[7000] - phi[0] > 2 * math.pi
    # Slip period (between passages of 3 pi/2 mod 2 pi): 611 against Adler's 758, the O(eps)
    # error of the reduction amplified near the locking edge (module docstring).
    first, second = (t_long[np.argmax(phi > 1.5 * math.pi + k * 2 * math.pi)] for k in (0, 1))
    assert first < 700.0 and second - first == pytest.approx(611.0, abs=2.0)
    assert adler_slip_period(red.nu, red.K) == pytest.approx(757.78, abs=0.01)
    assert 1.5 < np.abs(ref.values).max() < 2.2  # amplitude near the free limit cycle's


# -- (5) residuals and conditions against analytic models ---------------------------------------
def fields(problem, model, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, Fields]:
    pts = problem.sample_interior(n, torch.Generator().manual_seed(seed))
    return pts, Fields(pts, problem.axes, problem.fields, model=model)


RESIDUALS = {  # model, then the expected residual, both functions of t
    "duffing": (
        lambda t: t**2,
        lambda t, p: (
            2 + p.delta * 2 * t + p.alpha * t**2 + p.beta * t**6 - p.gamma * torch.cos(p.omega * t)
        ),
    ),
    "duffing_free": (
        lambda t: torch.sin(t),
        lambda t, p: -torch.sin(t) + p.alpha * torch.sin(t) + p.beta * torch.sin(t) ** 3,
    ),
    "adler": (lambda t: 0.5 * t, lambda t, p: 0.5 - p.nu + p.K * torch.sin(0.5 * t)),
    "adler_slip": (lambda t: t**2, lambda t, p: 2 * t - p.nu + p.K * torch.sin(t**2)),
    "mems_snic": (
        lambda t: t**3,
        lambda t, p: (
            6 * t
            + t**3
            - p.eps * (p.mu * (1 - t**6) * 3 * t**2 - p.kappa * t**9)
            - p.eps**2 * p.f * torch.cos(p.omega * t)
        ),
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_residual_expression(name):
    p = build_problem(name)
    model, expected = RESIDUALS[name]
    pts, f = fields(p, lambda x: model(x[:, 0])[:, None])
    assert torch.all((pts >= 0) & (pts <= p.t_end))
    r = p.residual(f)
    assert r.shape == (32, 1)
    torch.testing.assert_close(r[:, 0], expected(pts[:, 0], p), rtol=1e-12, atol=1e-12)


def fd_residual(problem, shift: float = 0.0) -> float:
    """Largest residual of the reference (+ shift) with centred finite-difference derivatives."""
    ref = problem.reference()
    times, u = ref.grid[0], ref.values[:, 0]
    h = times[1] - times[0]
    d1 = torch.tensor((u[2:] - u[:-2]) / (2 * h))
    d2 = torch.tensor((u[2:] - 2 * u[1:-1] + u[:-2]) / h**2)

    class FD:  # the part of the Fields API that these residuals use
        t = torch.tensor(times[1:-1])

        def __getitem__(self, name):
            return torch.tensor(u[1:-1]) + shift

        def d(self, name, *axes):
            return d1 if len(axes) == 1 else d2

    return problem.residual(FD()).abs().max().item()


HORIZONS = {"duffing": 50.0, "duffing_free": 20.0, "adler": 20.0, "adler_slip": 30.0}


@pytest.mark.parametrize("name", NAMES)
def test_reference_satisfies_the_equation(name):
    # The reference's finite-difference residual is second order in the grid step, so it is
    # the solution of these equations and not of others; a shifted reference is not.
    t_end = HORIZONS.get(name, 100.0)
    coarse, fine = (build_problem(name, t_end=t_end, nt=n) for n in (2001, 4001))
    r1, r2 = fd_residual(coarse), fd_residual(fine)
    assert 3.5 < r1 / r2 < 4.5, (r1, r2)
    assert r2 < 2e-3, r2
    assert fd_residual(fine, shift=0.3) > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_conditions(name):
    p = build_problem(name)
    conds = {c.name: c for c in p.conditions()}
    second_order = name not in ("adler", "adler_slip")
    assert set(conds) == ({"ic", "ic_v"} if second_order else {"ic"})
    field = p.fields[0]
    if name == "duffing_free":
        value, slope = p.amplitude, 0.0
    elif name in ("adler", "adler_slip"):
        value, slope = p.phi0, 0.0
    else:
        value, slope = p.u0, p.v0
    exact = lambda x: (value + slope * x[:, 0] + x[:, 0] ** 2)[:, None]  # noqa: E731
    wrong = lambda x: (value + 0.5 + (slope - 1.0) * x[:, 0])[:, None]  # noqa: E731
    for c in conds.values():
        pts = c.sample(4, torch.Generator().manual_seed(0))
        assert pts.shape == (4, 1) and pts.dtype == torch.float64 and torch.all(pts == 0)
        assert c.n_points >= 1
        r = c.residual(Fields(pts, p.axes, (field,), model=exact))
        torch.testing.assert_close(r, torch.zeros(4, 1, dtype=torch.float64), rtol=0, atol=1e-14)
        assert c.residual(Fields(pts, p.axes, (field,), model=wrong)).abs().min() > 0.4


# -- (6) registry, caching, bad parameters ------------------------------------------------------
@pytest.mark.parametrize("name", ["duffing_free", "adler", "adler_slip"])
def test_reference_is_cached_and_callable(name, tmp_path, monkeypatch):
    a = build_problem(name).reference()
    build_problem(name, n_collocation=17).reference()
    assert len(list(tmp_path.glob(f"ref-{name}-*.npz"))) == 1  # collocation counts don't matter
    p = build_problem(name)
    monkeypatch.setattr(p, "_compute_reference", lambda: pytest.fail("not from the disk cache"))
    b = p.reference()
    np.testing.assert_array_equal(a.values, b.values)
    pts = np.array([[0.123], [4.56]])
    np.testing.assert_array_equal(b(pts), p.exact(pts))  # exact off the grid


def test_integrated_reference_interpolates_between_grid_points():
    p = build_problem("duffing", t_end=10.0, nt=1001)
    ref = p.reference()
    pts = np.array([[0.1234], [5.4321]])
    direct = integrate(p.rhs, [0.1, 0.1], pts[:, 0])[:, :1]
    # A cubic spline on h = 0.01 is good to ~1e-9 here; Reference's RegularGridInterpolator
    # solves for it iteratively at a loose default tolerance, which leaves ~3e-6.
    np.testing.assert_allclose(ref(pts), direct, rtol=0, atol=1e-8)


BAD = [
    ("duffing", "delta", -0.1),
    ("duffing", "beta", -1.0),
    ("duffing", "alpha", float("nan")),
    ("duffing", "omega", -1.0),
    ("duffing", "u0", "a"),
    ("duffing", "t_end", 0.0),
    ("duffing", "nt", 1),
    ("duffing", "n_collocation", 0),
    ("duffing_free", "amplitude", 0.0),
    ("duffing_free", "amplitude", 1.0),  # with alpha = -1 below: trapped in one well
    ("duffing_free", "beta", -1.0),
    ("adler", "K", 0.0),
    ("adler", "phi0", float("inf")),
    ("adler_slip", "nt", 2.5),
    ("mems_snic", "eps", 0.0),
    ("mems_snic", "eps", 1.5),
    ("mems_snic", "mu", -1.0),
    ("mems_snic", "f", 0.0),
    ("mems_snic", "omega", 0.0),
    ("mems_snic", "kappa", True),
]


@pytest.mark.parametrize(("name", "key", "value"), BAD)
def test_bad_params_raise(name, key, value):
    extra = {"alpha": -1.0} if (name, value) == ("duffing_free", 1.0) else {}
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem(name, **{key: value, **extra})


@pytest.mark.parametrize("name", NAMES)
def test_unknown_key_raises(name):
    with pytest.raises(ConfigError, match="problem.damping"):
        build_problem(name, damping=0.1)
