"""`burgers_op`: the generating solver against the exact periodic Cole–Hopf solution (with
convergence in dt and in the grid), the data layout and invariants (mean conserved, energy
non-increasing), the PDEBench-like draws, the classical ladder, and bad configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.operator_eval import grid_residual_rms, per_sample_rel_l2
from bench.registry import build_problem
from problems.base import ConfigError
from problems.burgers_op import pdebench_initial
from problems.solvers.periodic_burgers import cole_hopf_periodic

TWO_PI = 2 * math.pi


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def cole_hopf(x: np.ndarray, t: np.ndarray, nu: float) -> np.ndarray:
    """u(x, t) on [0, 1) from u0 = sin 2 pi x: U(X, T) = u(2 pi X, 2 pi T) where u solves
    Burgers on [0, 2 pi) from sin with viscosity 2 pi nu (then U_T + U U_X = nu U_XX)."""
    return np.stack([cole_hopf_periodic(TWO_PI * x, TWO_PI * ti, TWO_PI * nu) for ti in t])


def sine_start(p) -> tuple[np.ndarray, np.ndarray]:
    u0 = np.sin(TWO_PI * p.grid)[None, None]
    return u0, np.stack([u0[:, 0], np.full_like(u0[:, 0], p.nu)], axis=1)


# -- the solver against Cole–Hopf ----------------------------------------------------------------
def test_solver_converges_to_cole_hopf_in_dt_and_in_the_grid():
    p = build_problem("burgers_op", n=256, s=128)
    times = np.array([0.0, 0.1, 0.25, 0.5])  # the shock forms at t = 1 / (2 pi)
    exact = cole_hopf(p.grid, times[1:], p.nu)
    start, inputs = sine_start(p)

    def err(res: dict) -> float:
        return float(np.abs(p.solve(start, inputs, times, res)[0, :, 0] - exact).max())

    in_dt = [err({"dt": dt}) for dt in (0.01, 0.005, 0.0025)]
    orders = [math.log2(a / b) for a, b in zip(in_dt[:-1], in_dt[1:], strict=True)]
    assert all(o > 3.3 for o in orders), (in_dt, orders)
    in_n = [err({"n": n, "dt": 1e-3}) for n in (64, 128, 256)]
    assert in_n[0] > 1e-3 and in_n[-1] < 1e-7, in_n
    assert all(b < a / 50 for a, b in zip(in_n[:-1], in_n[1:], strict=True)), in_n


def test_generated_data_match_cole_hopf(monkeypatch):
    """The whole generation path (grids, times, subsampling, channels, float32) on u0 = sin."""
    p = build_problem("burgers_op")  # defaults: n = 512, s = 256, dt = 2e-3, t in [0, 2]
    sine = np.sin(TWO_PI * np.arange(p.n) / p.n)
    monkeypatch.setattr(p, "initial_states", lambda n, seed: np.tile(sine, (n, 1)))
    data = p.generate("test", 2, seed=0)
    exact = cole_hopf(p.grid, p.times, p.nu)
    assert data.outputs.shape == (2, 41, 1, 256) and data.inputs.shape == (2, 2, 256)
    err = np.abs(data.outputs[:, :, 0] - exact).max()
    assert err < 1e-7, err
    np.testing.assert_array_equal(data.times, np.linspace(0, 2, 41))
    np.testing.assert_array_equal(data.grid[0], np.arange(256) / 256)


# -- data: layout, invariants, draws ---------------------------------------------------------------
def test_data_layout_and_invariants():
    p = build_problem("burgers_op")
    calls = []
    data = p.operator_data("test", "smoke", progress=lambda d, t: calls.append((d, t)))
    n = p.data_sizes("smoke")["test"]
    assert calls[-1] == (n, n)
    assert data.outputs.dtype == np.float32 and data.outputs.shape == (n, 41, 1, 256)
    np.testing.assert_array_equal(data.inputs[:, 0], data.outputs[:, 0, 0])
    np.testing.assert_array_equal(data.inputs[:, 1], np.float32(p.nu))
    u = data.outputs[:, :, 0].astype(np.float64)
    mean = u.mean(axis=-1)  # the spatial mean is conserved
    np.testing.assert_allclose(mean, mean[:, :1].repeat(41, axis=1), atol=1e-6)
    energy = u.var(axis=-1)  # and the energy of the fluctuations decays (viscosity)
    assert np.all(np.diff(energy, axis=1) <= 1e-6 * energy[:, :1])
    assert np.all(energy[:, -1] < 0.9 * energy[:, 0])
    # the initial states vary, with random means (PDEBench's unpicked modes)
    assert np.std(mean[:, 0]) > 1e-2 and np.std(u[:, 0]) > 0.1


def test_draws_depend_only_on_seed_and_index():
    p = build_problem("burgers_op")
    a, b = p.initial_states(3, seed=7), p.initial_states(5, seed=7)
    np.testing.assert_array_equal(a, b[:3])
    assert np.abs(p.initial_states(3, seed=8) - a).max() > 0.1
    # band-limited to the data grid's resolved modes
    spec = np.abs(np.fft.rfft(b, axis=-1))
    assert spec[:, 128:].max() < 1e-9 * spec.max()


def test_pdebench_initial_rules():
    x = np.arange(1024) / 1024
    rng = np.random.default_rng(0)
    draws = np.stack([pdebench_initial(rng, x) for _ in range(2000)])
    assert np.abs(draws).max() <= 4.0  # 4 modes of amplitude <= 1
    assert 0.45 < np.mean(draws.mean(axis=1) > 0) < 0.55  # the random sign
    windowed = np.mean(np.all(np.abs(draws[:, :50]) < 1e-6, axis=1))
    assert 0.06 < windowed < 0.14  # the window (10%) zeroes x < 0.1
    # the picked wavenumbers: at most 2 distinct non-zero ones, each of 1..8
    spec = np.abs(np.fft.rfft(draws[:200], axis=-1)) / 1024
    for row in spec:
        if row[50:].max() < 1e-8:  # skip windowed ones
            peaks = np.flatnonzero(row[1:] > 1e-8) + 1
            assert len(peaks) <= 2 and set(peaks) <= set(range(1, 9)), peaks


# -- the classical solver as a competitor --------------------------------------------------------
def test_classical_ladder_goes_from_exact_to_coarse():
    p = build_problem("burgers_op")
    data = p.operator_data("val", "smoke")
    ladder = p.classical_ladder()
    assert ladder[0] == {} and 4 <= len(ladder) <= 6
    ref = data.outputs[:, 1:].astype(np.float64)
    start = data.outputs[:, 0].astype(np.float64)
    errs = [
        per_sample_rel_l2(p.solve(start, data.inputs, data.times, r), ref).mean() for r in ladder
    ]
    assert errs[0] < 1e-6, errs  # the data's own solver from float32 starts
    assert np.all(np.isfinite(errs)) and errs[-1] > 1e-3, errs
    assert all(b > a for a, b in zip(errs[:-1], errs[1:], strict=True)), errs


def test_data_are_converged_against_a_finer_solve():
    """The data (n = 512, dt = 2e-3) against the same starts solved on twice the grid at a
    quarter of the step: the data's own discretisation error."""
    p = build_problem("burgers_op")
    data = p.operator_data("val", "smoke")
    start = data.outputs[:, 0].astype(np.float64)
    fine = p.solve(start, data.inputs, data.times, {"n": 1024, "dt": 5e-4})
    err = per_sample_rel_l2(data.outputs[:, 1:].astype(np.float64), fine)
    assert err.max() < 1e-6, err


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"nu": -0.1}, "nu"),
        ({"nu": 0}, "nu"),
        ({"t_final": 0}, "t_final"),
        ({"nt": 1}, "nt"),
        ({"n": 510}, "multiple"),
        ({"n": 513, "s": 513}, "even"),
        ({"dt": -1.0}, "dt"),
        ({"k_tot": 70}, "k_tot"),
        ({"data_seed": -1}, "data_seed"),
        ({"data": {"smoke": {"train": 0}}}, r"data\.smoke\.train"),
        ({"data": {"huge": {"train": 1, "val": 1, "test": 1}}}, "unknown scale"),
    ],
)
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        build_problem("burgers_op", **kwargs)


def test_bad_resolution_is_refused():
    p = build_problem("burgers_op")
    start, inputs = sine_start(p)
    with pytest.raises(ConfigError, match="resolution keys"):
        p.solve(start, inputs, [0.0, 0.1], {"grid": 64})
    with pytest.raises(ConfigError, match="even integer"):
        p.solve(start, inputs, [0.0, 0.1], {"n": 63})
    with pytest.raises(ValueError, match="nu channel"):
        p.solve(start, inputs * 2, [0.0, 0.1], {})


def test_grid_residual_of_the_data_falls_at_second_order_in_the_frame_spacing():
    """The discrete PDE (`grid_residuals`: second-order time differences between frames,
    spectral space derivatives) of exact trajectories falls as the frames are refined, at
    second order once the initial states' fastest-decaying modes are gone (t >= 0.1)."""
    tiny = {s: {"train": 2, "val": 2, "test": 4} for s in ("smoke", "standard", "paper")}
    rms = []
    for nt in (11, 21, 41):
        p = build_problem("burgers_op", n=128, s=64, nt=nt, k_tot=2, t_final=0.5, data=tiny)
        d = p.generate("test", 4, 3)
        k = 2 * (nt - 1) // 10
        # frames k - 2.. given, k.. scored: BDF2 throughout (its BDF1 start left out)
        u, t = d.outputs[:, k - 2 :], d.times[k - 2 :]
        rms.append(grid_residual_rms(p, u, d.inputs, t, skip=2))
    orders = np.log2(np.array(rms[:-1]) / np.array(rms[1:]))
    assert orders[-1] > 1.8 and rms[-1] < 0.08, (rms, orders)
