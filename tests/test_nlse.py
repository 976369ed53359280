"""The NLSE family and its pseudo-spectral solver: exact soliton and Akhmediev breather, mass and
energy conservation, two-soliton collision shifts, linear modulational-instability growth,
spectral convergence, Raissi's published data, and the residual/conditions/invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields
from problems.solvers.nlse_exact import akhmediev, collision_shifts, mi_growth_rate, soliton
from problems.solvers.nlse_spectral import energy, grid, mass, solve_nlse, spectral_dx

CASES = ["nlse", "nlse_soliton", "nlse_two_soliton", "nlse_breather", "nlse_mi"]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def drift(q: np.ndarray) -> float:
    return float(np.max(np.abs(q - q[0])) / abs(q[0]))


def soliton_c(x, t, a, x0, v):
    re, im = soliton(x, t, a, x0, v)
    return re + 1j * im


def breather_c(x, t, a):
    re, im = akhmediev(x, t, a)
    return re + 1j * im


# -- (1) exact solutions, and conservation -----------------------------------------------------
def test_soliton_matches_exact_and_conserves():
    # The nlse_soliton case: A = 2, v = 1 from x0 = -10 on [-25, 25), t to 20, 512 modes.
    length, t = 50.0, np.linspace(0.0, 20.0, 11)
    x = grid(512, length, -25.0)
    psi = solve_nlse(soliton_c(x, 0.0, 2.0, -10.0, 1.0), length, t, rtol=1e-12)
    exact = soliton_c(x[None], t[:, None], 2.0, -10.0, 1.0)
    assert np.max(np.abs(psi - exact)) <= 1e-8  # measured 2.7e-11
    n, h = mass(psi, length), energy(psi, length)
    np.testing.assert_allclose(n[0], 4.0, rtol=1e-12)  # N = 2A
    np.testing.assert_allclose(h[0], 1.0 * 2.0 - 8.0 / 3.0, rtol=1e-12)  # H = A v^2 - A^3/3
    assert drift(n) <= 1e-10 and drift(h) <= 1e-8  # measured 1.4e-13, 1.3e-12


def test_breather_matches_exact_and_conserves():
    a, t_peak = 0.25, 4.0
    length = 2 * math.pi / (2 * math.sqrt(1 - 2 * a))
    x, t = grid(64, length, -length / 2), np.linspace(0.0, 8.0, 17)
    psi = solve_nlse(breather_c(x, -t_peak, a), length, t, rtol=1e-12)
    exact = breather_c(x[None], t[:, None] - t_peak, a)
    assert np.max(np.abs(psi - exact)) <= 1e-8  # measured 1.1e-10 (unstable: errors grow e^t)
    assert abs(np.max(np.abs(psi)) - (1 + math.sqrt(2))) < 1e-8  # the peak, at t = t_peak
    assert drift(mass(psi, length)) <= 1e-10 and drift(energy(psi, length)) <= 1e-8


@pytest.mark.parametrize("name", ["nlse", "nlse_two_soliton", "nlse_mi"])
def test_spectral_references_conserve_mass_and_energy(name):
    problem = build_problem(name)
    ref = problem.reference()
    psi = (ref.values[:, 0] + 1j * ref.values[:, 1]).reshape(problem.nx, problem.nt).T
    assert drift(mass(psi, problem.length)) <= 1e-10  # measured <= 7e-14
    assert drift(energy(psi, problem.length)) <= 1e-8  # measured <= 4e-10 (nlse, rtol 1e-10)


def test_loose_tolerance_is_seen_by_the_conservation_checks():
    length, t = 50.0, np.linspace(0.0, 20.0, 3)
    x = grid(256, length, -25.0)
    psi = solve_nlse(soliton_c(x, 0.0, 2.0, -10.0, 1.0), length, t, rtol=1e-4)
    assert drift(mass(psi, length)) > 1e-10 and drift(energy(psi, length)) > 1e-8


# -- (2) Raissi's case: published data and the whole-line closed form --------------------------
NLS_MAT = [  # (x index, t index, Re h, Im h) from maziarraissi/PINNs main/Data/NLS.mat
    (128, 50, 0.3160844274577973, 2.5098980168770995),
    (128, 100, -3.694460878085543, -1.53004126572907),
    (128, 150, 1.9977591435156792, -1.549589408069919),
    (128, 200, 1.417052866536066, 1.4145615434243357),
    (0, 100, 0.0343090043311709, 0.0263962775872989),
    (64, 75, 0.3008817683852392, 0.09726874764407623),
    (200, 180, 0.1786616753600474, 0.152152203377239),
]


def test_raissi_reference_matches_published_data():
    problem = build_problem("nlse")
    ref = problem.reference()
    assert ref.shape == (256, 201)
    x, t = ref.grid
    np.testing.assert_allclose(x, -5.0 + 10.0 * np.arange(256) / 256, rtol=0, atol=1e-15)
    np.testing.assert_allclose(t, np.linspace(0, math.pi / 2, 201), rtol=0, atol=1e-15)
    vals = ref.values.reshape(256, 201, 2)
    np.testing.assert_allclose(vals[:, 0, 0], 2 / np.cosh(x), rtol=1e-15, atol=0)
    for i, j, re, im in NLS_MAT:
        np.testing.assert_allclose(vals[i, j], [re, im], rtol=0, atol=1e-8)  # measured ~3e-10

    # Whole-line Satsuma–Yajima breather: |h(0, pi/4)| = 4; on [-5, 5] it holds to ~1e-2 only.
    X, T = np.meshgrid(x, t, indexing="ij")
    sy = 4 * np.exp(0.5j * T) * (np.cosh(3 * X) + 3 * np.exp(4j * T) * np.cosh(X))
    sy /= np.cosh(4 * X) + 4 * np.cosh(2 * X) + 3 * np.cos(4 * T)
    h = vals[..., 0] + 1j * vals[..., 1]
    assert abs(abs(h[128, 100]) - 4.0) < 2e-3
    assert 1e-3 < np.linalg.norm(h - sy) / np.linalg.norm(sy) < 3e-2  # periodic != whole line


# -- (3) two-soliton collision -----------------------------------------------------------------
def centroid(x: np.ndarray, psi: np.ndarray, guess: float, half_width: float = 8.0) -> float:
    c = guess
    for _ in range(6):
        w = np.abs(x - c) < half_width
        r = np.abs(psi[w]) ** 2
        c = float(np.sum(x[w] * r) / np.sum(r))
    return c


def test_two_soliton_collision_shifts_match_formula():
    problem = build_problem("nlse_two_soliton")
    a, v, x0 = problem.amplitudes, problem.velocities, problem.positions
    x = grid(problem.nx, problem.length, problem.lo)
    t_end = problem.t_final
    psi = solve_nlse(problem.initial(x), problem.length, [t_end], rtol=problem.rtol)[0]
    free = [x0[j] + v[j] * t_end for j in range(2)]
    measured = np.array([centroid(x, psi, free[j]) - free[j] for j in range(2)])
    predicted = collision_shifts(a, v)  # (+0.2765, -0.3687)
    np.testing.assert_allclose(measured, predicted, rtol=0, atol=1e-6)  # measured 5e-12
    assert np.all(np.abs(predicted) > 0.25)  # so free motion alone would fail the check
    for j in range(2):  # each soliton keeps its mass 2 A_j
        w = np.abs(x - free[j] - predicted[j]) < 8.0
        assert abs(mass(psi[w], w.sum() * problem.length / problem.nx) - 2 * a[j]) < 1e-8


# -- (4) modulational instability --------------------------------------------------------------
def test_breather_growth_rate_is_the_mi_rate():
    for a in (0.1, 0.25, 0.4):
        w, b = 2 * math.sqrt(1 - 2 * a), math.sqrt(8 * a * (1 - 2 * a))
        assert abs(mi_growth_rate(w, 1.0) - b) < 1e-14


@pytest.mark.parametrize("j", [2, 5, 8, 11, 13])
def test_seeded_mode_follows_linear_mi_theory(j):
    # Plane wave of power P0 plus eps cos(k x). Linearised, psi = sqrt(P0)(1 + (p + i q) cos kx)
    # e^{i P0 t} with p' = k^2/2 q, q' = (2 P0 - k^2/2) p: p = eps cosh(s t), s^2 = k^2/4 (4P0-k^2).
    power, eps, n = 1.0, 1e-9, 64
    length = 8 * 2 * math.pi / math.sqrt(2 * power)  # as nlse_mi: the fastest mode is j = 8
    k = 2 * math.pi * j / length
    x, t = grid(n, length, -length / 2), np.linspace(0.0, 10.0, 11)
    psi = solve_nlse(math.sqrt(power) * (1 + eps * np.cos(k * x)), length, t, rtol=1e-13)
    c = np.fft.fft(psi * np.exp(-1j * power * t)[:, None], axis=1) / n / math.sqrt(power)
    measured = np.abs(c[:, j]) * 2
    s2 = k * k / 4 * (4 * power - k * k)
    s = math.sqrt(abs(s2))
    if s2 > 0:
        p, q = np.cosh(s * t), (2 * power - k * k / 2) / s * np.sinh(s * t)
    else:
        p, q = np.cos(s * t), (2 * power - k * k / 2) / s * np.sin(s * t)
    expected = eps * np.hypot(p, q)
    np.testing.assert_allclose(measured, expected, rtol=1e-5)
    if s2 > 0:  # late-time logarithmic slope is the growth rate
        slope = np.log(measured[-1] / measured[-3]) / (t[-1] - t[-3])
        assert abs(slope - mi_growth_rate(k, power)) < 2e-3 * max(1.0, 1 / s)
    else:
        assert np.max(measured) < 3 * eps  # outside the band |k| < 2 sqrt(P0): no growth


def test_mi_case_grows_at_the_fastest_rate_then_saturates():
    problem = build_problem("nlse_mi")
    ref = problem.reference()
    psi = (ref.values[:, 0] + 1j * ref.values[:, 1]).reshape(problem.nx, problem.nt).T
    t = ref.grid[1]
    c = np.abs(np.fft.fft(psi, axis=1)) / problem.nx
    unstable = c[:, 1 : problem.noise_modes + 1] + c[:, -problem.noise_modes :][:, ::-1]
    early = (t > 2.0) & (t < 4.0)  # linear stage: the largest mode grows at about P0 = 1
    top = unstable[early].max(axis=1)
    slope = np.polyfit(t[early], np.log(top), 1)[0]
    assert 0.85 < slope < 1.05
    assert np.abs(psi).max() > 2.5  # nonlinear stage: breathers well above the background


def test_mi_reference_is_converged_in_resolution():
    coarse, fine = (build_problem("nlse_mi", nx=nx, nt=3).reference() for nx in (512, 768))
    # x = lo + L j / n: every 2nd point of 512 is every 3rd point of 768.
    np.testing.assert_allclose(coarse.grid[0][::2], fine.grid[0][::3], rtol=0, atol=1e-12)
    a = coarse.values.reshape(512, 3, 2)[::2, -1]
    b = fine.values.reshape(768, 3, 2)[::3, -1]
    assert np.max(np.abs(a - b)) < 1e-7  # measured ~5e-9 at t = 10


# -- (5) convergence ---------------------------------------------------------------------------
def test_spectral_convergence_in_space():
    a, t_peak = 0.25, 4.0
    length = 2 * math.pi / (2 * math.sqrt(1 - 2 * a))
    t = np.array([0.0, 4.0])  # error measured at the peak
    errors = []
    for n in (16, 24, 32, 40, 48, 56):
        x = grid(n, length, -length / 2)
        psi = solve_nlse(breather_c(x, -t_peak, a), length, t, rtol=1e-13)[-1]
        errors.append(np.max(np.abs(psi - breather_c(x, 0.0, a))))
    errors = np.array(errors)
    # Geometric decay (measured 1e-2, 8e-5, 1.1e-6, 2.2e-8, 4.9e-10, 1.2e-11): each +8 modes
    # divides the error by > 30; an algebraic rate n^-p would need p > 10 from 48 to 56.
    ratios = errors[:-1] / errors[1:]
    assert np.all(ratios > 30), (errors, ratios)
    assert errors[-1] < 1e-10 and errors[0] > 1e-3


def test_convergence_in_tolerance():
    length, t = 50.0, np.array([0.0, 5.0])
    x = grid(512, length, -25.0)
    exact = soliton_c(x, 5.0, 2.0, -10.0, 1.0)
    errs = [
        np.max(np.abs(solve_nlse(soliton_c(x, 0, 2.0, -10.0, 1.0), length, t, rtol=r)[-1] - exact))
        for r in (1e-6, 1e-9, 1e-12)
    ]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-9 and errs[0] < 1e-3


# -- (6) solver interface ----------------------------------------------------------------------
def test_batch_equals_single_solves_and_shapes():
    length = 2 * math.pi
    x = grid(32, length)
    batch = np.stack([np.exp(1j * x) * (1 + 0.1 * np.cos(x)), 0.5 + 0.2 * np.sin(2 * x)])
    t = np.array([0.0, 0.5, 1.0])
    out = solve_nlse(batch[None], length, t)
    assert out.shape == (1, 2, 3, 32) and out.dtype == np.complex128
    for b in range(2):
        np.testing.assert_array_equal(out[0, b], solve_nlse(batch[b], length, t))
    np.testing.assert_array_equal(out[0, :, 0], batch)  # t = 0 returns the input exactly


def test_dealiasing_leaves_a_resolved_solution_unchanged():
    a, length = 0.25, math.pi * math.sqrt(2)
    x, t = grid(96, length, -length / 2), np.array([0.0, 4.0])
    psi0 = breather_c(x, -4.0, a)
    plain = solve_nlse(psi0, length, t, rtol=1e-12)
    filtered = solve_nlse(psi0, length, t, rtol=1e-12, dealias=True)
    assert np.max(np.abs(plain - filtered)) < 1e-8


@pytest.mark.parametrize(
    "kwargs",
    [{"times": [1.0, 0.5]}, {"times": [-1.0]}, {"length": 0.0}, {"rtol": 0.0}, {"psi0": [1.0]}],
)
def test_solver_rejects_bad_input(kwargs):
    args = {"psi0": np.ones(8), "length": 1.0, "times": [0.0, 1.0], **kwargs}
    with pytest.raises(ValueError):
        solve_nlse(**args)


def test_spectral_derivative_and_energy_of_a_plane_wave():
    length, n = 2 * math.pi, 16
    x = grid(n, length)
    psi = 0.5 * np.exp(3j * x)
    np.testing.assert_allclose(spectral_dx(psi, length), 3j * psi, atol=1e-13)
    kin, pot = energy(psi, length, parts=True)  # K = 1/2 * 9 * 0.25 L, U = 1/2 * 0.0625 L
    np.testing.assert_allclose([kin, pot], [0.5 * 9 * 0.25 * length, 0.5 * 0.0625 * length])


# -- (7) the problems: residual, conditions, invariants, config --------------------------------
def torch_exact(problem):
    def model(p: torch.Tensor) -> torch.Tensor:
        x, t = p[:, 0], p[:, 1]
        if problem.name == "nlse_soliton":
            re, im = soliton(x, t, problem.amplitude, problem.x0, problem.velocity, torch)
        else:
            re, im = akhmediev(x, t - problem.t_peak, problem.a, torch)
        return torch.stack([re, im], dim=1)

    return model


def fields_of(problem, model, points):
    return Fields(points, problem.axes, problem.fields, model=model)


@pytest.mark.parametrize("name", ["nlse_soliton", "nlse_breather"])
def test_residual_vanishes_on_exact_solutions(name):
    problem = build_problem(name)
    pts = problem.sample_interior(256, torch.Generator().manual_seed(0))
    r = problem.residual(fields_of(problem, torch_exact(problem), pts))
    assert r.shape == (256, 2) and r.dtype == torch.float64
    assert r.abs().max() < 1e-10


def test_residual_expression_and_signs():
    # psi = exp(i (w t + k x)) with amplitude r: i psi_t + psi_xx/2 + |psi|^2 psi
    # = (-w - k^2/2 + r^2) psi; zero exactly on the dispersion relation w = r^2 - k^2/2.
    problem = build_problem("nlse")
    pts = problem.sample_interior(64, torch.Generator().manual_seed(1))
    rr, k, w = 1.3, 2.0, 0.7

    def model(p):
        ph = w * p[:, 1] + k * p[:, 0]
        return torch.stack([rr * torch.cos(ph), rr * torch.sin(ph)], dim=1)

    r = problem.residual(fields_of(problem, model, pts))
    m = model(pts)
    factor = -w - k * k / 2 + rr * rr
    torch.testing.assert_close(r, factor * m, rtol=1e-12, atol=1e-12)


def test_conditions_on_exact_and_wrong_models():
    problem = build_problem("nlse_breather")
    conds = {c.name: c for c in problem.conditions()}
    assert list(conds) == ["ic", "bc", "bc_x"]
    assert conds["ic"].n_points == problem.n_initial and conds["bc"].n_points == problem.n_boundary
    gen = torch.Generator().manual_seed(0)
    ic_pts = conds["ic"].sample(40, gen)
    assert torch.all(ic_pts[:, 1] == 0)
    bc_pts = conds["bc"].sample(41, gen)  # odd: 20 pairs and an unused point
    lo, hi = problem.domain.bounds["x"]
    assert torch.all(bc_pts[:20, 0] == lo) and torch.all(bc_pts[20:40, 0] == hi)
    assert torch.equal(bc_pts[:20, 1], bc_pts[20:40, 1])
    exact = torch_exact(problem)
    for name, pts, rows in (("ic", ic_pts, 40), ("bc", bc_pts, 20), ("bc_x", bc_pts, 20)):
        r = conds[name].residual(fields_of(problem, exact, pts))
        assert r.shape == (rows, 2)
        assert r.abs().max() < 1e-12
        # Not vacuous: a non-periodic field, different from psi0, violates every condition.
        cubic = lambda p: (p[:, :1] ** 3 + p[:, :1] ** 2).expand(-1, 2)  # noqa: E731
        wrong = conds[name].residual(fields_of(problem, cubic, pts))
        assert wrong.abs().max() > 1e-2
    single = conds["bc"].residual(fields_of(problem, exact, conds["bc"].sample(1, gen)))
    assert single.shape == (1, 2) and torch.all(single == 0)


@pytest.mark.parametrize("name", CASES)
def test_ic_condition_matches_the_reference(name):
    problem = build_problem(name)
    ref = problem.reference()
    x = ref.grid[0]
    at0 = ref.values.reshape(problem.nx, problem.nt, 2)[:, 0]
    np.testing.assert_allclose(at0[:, 0] + 1j * at0[:, 1], problem.initial(x), atol=1e-13)
    re, im = problem._initial(torch.from_numpy(x), torch)
    np.testing.assert_allclose(re.numpy() + 1j * im.numpy(), problem.initial(x), atol=1e-14)
    inv = problem.invariants(ref.points, ref.values)
    assert inv["mass_drift"] < 1e-10 and inv["energy_drift"] < 1e-8


def test_invariants_measure_mass_and_energy_separately():
    problem = build_problem("nlse_breather")
    ref = problem.reference()
    x, t = ref.grid
    inv = problem.invariants(ref.points, 1.01 * ref.values)
    np.testing.assert_allclose(inv["mass_drift"], 1.01**2 - 1, rtol=1e-9)
    # A boost psi e^{i kappa x} (kappa a box wavenumber) keeps the mass and changes the energy
    # by kappa P + kappa^2 N / 2 (P = Im int conj(psi) psi_x).
    kappa = 2 * math.pi / problem.length
    psi = ref.values[:, 0] + 1j * ref.values[:, 1]
    boosted = psi * np.exp(1j * kappa * ref.points[:, 0])
    inv = problem.invariants(ref.points, np.stack([boosted.real, boosted.imag], 1))
    assert inv["mass_drift"] < 1e-12
    psi0 = problem.initial(x)
    n0 = mass(psi0, problem.length)
    k0, u0 = energy(psi0, problem.length, parts=True)
    momentum = np.sum(np.imag(np.conj(psi0) * spectral_dx(psi0, problem.length))) * (
        problem.length / problem.nx
    )
    expected = abs(kappa * momentum + kappa**2 * n0 / 2) / (k0 + u0)
    np.testing.assert_allclose(inv["energy_drift"], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="grid"):
        problem.invariants(ref.points[::2], ref.values[::2])


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("nlse", "nx", 4),
        ("nlse", "rtol", 0.0),
        ("nlse", "n_boundary", 1),
        ("nlse_soliton", "amplitude", -1.0),
        ("nlse_soliton", "length", 30.0),  # the soliton's tail would reach the boundary
        ("nlse_soliton", "t_final", float("nan")),
        ("nlse_two_soliton", "amplitudes", [2.0]),
        ("nlse_two_soliton", "velocities", "fast"),
        ("nlse_two_soliton", "length", 40.0),
        ("nlse_breather", "a", 0.5),
        ("nlse_breather", "t_peak", 9.0),
        ("nlse_mi", "noise_modes", 256),
        ("nlse_mi", "seed", -1),
        ("nlse_mi", "power", 0),
    ],
)
def test_bad_params_raise(name, key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem(name, **{key: value})


def test_cache_key_ignores_training_point_counts(tmp_path):
    build_problem("nlse_breather", nx=16, nt=3).reference()
    build_problem("nlse_breather", nx=16, nt=3, n_collocation=7, n_boundary=10).reference()
    assert len(list(tmp_path.glob("ref-nlse_breather-*.npz"))) == 1
    build_problem("nlse_breather", nx=16, nt=3, a=0.3).reference()
    assert len(list(tmp_path.glob("ref-nlse_breather-*.npz"))) == 2
