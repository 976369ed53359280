"""`ks`: ETDRK4 convergence on Kuramoto–Sivashinsky (Kassam & Trefethen's case), the
conserved spatial mean, agreement with an independent integrator (DOP853 on the same spectral
ODE), the data layout (10 + 10 frames on DyMixOp's grid, past the transient), the classical
ladder, and bad configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.fft import irfft, rfft
from scipy.integrate import solve_ivp

from bench.operator_eval import per_sample_rel_l2
from bench.registry import build_problem
from problems.base import ConfigError
from problems.solvers.etdrk4 import dealias_mask, wavenumbers


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def kassam_trefethen():
    """Their KS case: L = 32 pi, 128 points, u0 = cos(x/16)(1 + sin(x/16)); solver = data grid."""
    p = build_problem("ks", length_pi=32.0, n=128, s=128)
    x = p.grid
    u0 = (np.cos(x / 16) * (1 + np.sin(x / 16)))[None, None]
    return p, u0


def test_etdrk4_converges_at_fourth_order_on_ks():
    p, u0 = kassam_trefethen()
    times = [0.0, 1.0]
    ref = p.solve(u0, u0, times, {"dt": 1e-3})
    errs = [np.abs(p.solve(u0, u0, times, {"dt": dt}) - ref).max() for dt in (0.5, 0.25, 0.125)]
    orders = [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:], strict=True)]
    assert all(3.8 < o < 4.3 for o in orders), (errs, orders)


def test_agrees_with_dop853_on_the_same_spectral_ode():
    p, u0 = kassam_trefethen()
    n, times = p.n, np.array([0.0, 2.0, 5.0])
    k = wavenumbers(n, p.length)
    keep = dealias_mask(n)
    lin = p.symbol(k)

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        v = (y[: n // 2 + 1] + 1j * y[n // 2 + 1 :]) * keep
        u = irfft(v, n)
        dv = lin * v - 0.5j * k * rfft(u * u) * keep
        return np.concatenate([dv.real, dv.imag])

    v0 = rfft(u0[0, 0]) * keep
    sol = solve_ivp(
        rhs, (0, 5), np.concatenate([v0.real, v0.imag]), "DOP853", times, rtol=1e-12, atol=1e-12
    )
    assert sol.success
    ivp = irfft(sol.y[: n // 2 + 1].T + 1j * sol.y[n // 2 + 1 :].T, n, axis=-1)[1:]
    ours = p.solve(u0, u0, times, {"dt": 0.01})[0, :, 0]
    assert np.abs(ours - ivp).max() < 1e-8 * np.abs(ivp).max()
    # the check can fail: a coarse step is visibly off
    assert np.abs(ivp[-1] - p.solve(u0, u0, times, {"dt": 1.0})[0, -1, 0]).max() > 1e-4


def test_spatial_mean_is_conserved():
    p = build_problem("ks")
    rng = np.random.default_rng(0)
    start = rng.uniform(-1, 1, (2, 1, p.s)) + np.array([0.0, 0.3])[:, None, None]
    out = p.solve(start, start, np.arange(0.0, 21.0, 5.0), {})
    means = out[:, :, 0].mean(axis=-1)
    m0 = start[:, 0].mean(axis=-1)
    np.testing.assert_allclose(means, m0[:, None].repeat(4, axis=1), rtol=0, atol=1e-12)
    assert np.abs(out[:, -1] - out[:, 0]).max() > 0.5  # while the state itself moves


def test_data_layout_past_the_transient():
    p = build_problem("ks")
    calls = []
    data = p.operator_data("test", "smoke", progress=lambda d, t: calls.append((d, t)))
    n = p.data_sizes("smoke")["test"]
    assert calls[-1] == (n, n) and p.context == 10
    assert data.outputs.shape == (n, 20, 1, 256) and data.inputs.shape == (n, 1, 256)
    np.testing.assert_array_equal(data.inputs, data.outputs[:, 0])
    np.testing.assert_array_equal(data.times, np.arange(20.0))
    np.testing.assert_allclose(data.grid[0], 64 * math.pi * np.arange(256) / 256)
    u = data.outputs[:, :, 0].astype(np.float64)
    assert np.abs(u.mean(axis=-1)).max() < 1e-6  # mean-free initial states stay mean-free
    # on the attractor: the spectrum peaks near the most unstable wavenumber 1/sqrt(2)
    power = (np.abs(rfft(u, axis=-1)) ** 2).mean(axis=(0, 1))
    k = wavenumbers(256, p.length)
    assert 0.5 < k[np.argmax(power)] < 0.9
    # the frames change from one to the next (it is not a steady state)
    assert per_sample_rel_l2(u[:, 1:], u[:, :-1]).min() > 0.1


def test_draws_depend_only_on_seed_and_index():
    p = build_problem("ks")
    a, b = p.initial_states(2, seed=3), p.initial_states(4, seed=3)
    np.testing.assert_array_equal(a, b[:2])
    np.testing.assert_allclose(a.mean(axis=1), 0.0, atol=1e-15)


def test_classical_ladder_goes_from_exact_to_coarse():
    p = build_problem("ks")
    data = p.operator_data("val", "smoke")
    ladder = p.classical_ladder()
    assert ladder[0] == {} and 4 <= len(ladder) <= 6
    c = p.context
    ref = data.outputs[:, c:].astype(np.float64)
    start = data.outputs[:, c - 1].astype(np.float64)
    times = data.times[c - 1 :] - data.times[c - 1]
    errs = [per_sample_rel_l2(p.solve(start, data.inputs, times, r), ref).mean() for r in ladder]
    assert errs[0] < 1e-5, errs  # the data's own solver from float32 starts
    assert np.all(np.isfinite(errs)) and errs[-1] > 1e-2, errs
    assert all(b > a for a, b in zip(errs[:-1], errs[1:], strict=True)), errs


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"length_pi": 0}, "length_pi"),
        ({"n": 500}, "multiple"),
        ({"dt": 0}, "dt"),
        ({"burn_in": -1.0}, "burn_in"),
        ({"frame_dt": -1.0}, "frame_dt"),
        ({"nt": 10}, "nt"),
        ({"data": {"paper": {"val": -3}}}, r"data\.paper\.val"),
    ],
)
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        build_problem("ks", **kwargs)
