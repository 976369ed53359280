"""The batched ETDRK4 solver (`problems/solvers/etdrk4.py`): linear problems against their
exact solutions, the contour-integral coefficients against their closed forms and limits,
fourth-order convergence in dt on a nonlinear problem, the 2/3 rule, shapes and bad input, and
Fourier resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.fft import irfft, rfft

from problems.solvers.etdrk4 import (
    Stepper,
    dealias_mask,
    fourier_resample,
    integrate,
    quadratic_flux,
    solve_on_grid,
    to_grid,
    wavenumbers,
)

TWO_PI = 2 * math.pi


def zero(v: np.ndarray) -> np.ndarray:
    return np.zeros_like(v)


def modes_state(n: int, length: float, amps: dict[int, complex]) -> np.ndarray:
    """Real samples of sum_m Re(a_m e^{i k_m x}) on the n-point grid."""
    x = length * np.arange(n) / n
    return sum((a * np.exp(1j * TWO_PI * m * x / length)).real for m, a in amps.items()) * np.ones(
        n
    )


# -- linear problems: exact ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "symbol"),
    [
        ("diffusion", lambda k: -0.3 * k * k),
        ("ks linear (growing and decaying modes)", lambda k: k * k - k**4),
        ("advection-diffusion (complex symbol)", lambda k: -0.05 * k * k - 1j * 2.0 * k),
    ],
)
def test_linear_problems_match_their_exact_solution(name, symbol):
    n, length = 32, 2 * TWO_PI  # k = m / 2: modes 1 and 2 grow under k^2 - k^4
    amps = {0: 0.7, 1: 1.0 + 0.5j, 2: -0.4j, 5: 0.3, 9: 0.1 - 0.2j}
    u0 = modes_state(n, length, amps)
    k = wavenumbers(n, length)
    times = np.array([0.0, 0.3, 1.0, 2.5])
    got = integrate(u0, symbol(k), zero, times, dt=0.1, dealias=False)
    c0 = rfft(u0)
    exact = np.stack([irfft(c0 * np.exp(symbol(k) * t), n) for t in times])
    assert got.shape == (4, n)
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-12 * np.abs(exact).max())
    # the check can fail: a wrong symbol is far off
    wrong = integrate(u0, 1.1 * symbol(k), zero, times, dt=0.1, dealias=False)
    assert np.abs(wrong - exact).max() > 1e-3


def test_coefficients_match_closed_forms_and_limits():
    h = 0.5
    z = np.array([-40.0, -3.0, -1.5, 1.2, 2.0])  # |z| >= 1: the textbook formulas are accurate
    st = Stepper(z / h, h)
    e = np.exp(z)
    np.testing.assert_allclose(st.Q, h * (np.exp(z / 2) - 1) / z, rtol=1e-13)
    np.testing.assert_allclose(st.f1, h * (-4 - z + e * (4 - 3 * z + z * z)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(st.f2, h * (2 + z + e * (z - 2)) / z**3, rtol=1e-12)
    np.testing.assert_allclose(st.f3, h * (-4 - 3 * z - z * z + e * (4 - z)) / z**3, rtol=1e-12)
    # z -> 0 (where the textbook formulas cancel): ETDRK4 becomes classical RK4
    tiny = Stepper(np.array([0.0, 1e-10, -1e-8]), h)
    np.testing.assert_allclose(tiny.Q, h / 2, rtol=1e-8)
    for f in (tiny.f1, tiny.f2, tiny.f3):
        np.testing.assert_allclose(f, h / 6, rtol=1e-8)
    # a complex symbol takes the full circle: compare with the closed form at |z| >= 1
    zc = np.array([-2.0 + 3.0j, 1.0 - 1.5j])
    stc = Stepper(zc / h, h)
    ec = np.exp(zc)
    np.testing.assert_allclose(stc.f2, h * (2 + zc + ec * (zc - 2)) / zc**3, rtol=1e-12)


# -- nonlinear: fourth order in dt -------------------------------------------------------------
def observed_orders(run, dts, ref) -> list[float]:
    errs = [np.linalg.norm(run(dt) - ref) / np.linalg.norm(ref) for dt in dts]
    return [math.log2(a / b) for a, b in zip(errs[:-1], errs[1:], strict=True)], errs


def test_fourth_order_in_dt_on_viscous_burgers():
    n, length, nu = 32, TWO_PI, 0.1
    k = wavenumbers(n, length)
    x = length * np.arange(n) / n
    u0 = np.stack([0.5 * np.sin(x), 0.3 * np.cos(2 * x) + 0.2])  # a batch of two
    flux = quadratic_flux(n, length)

    def run(dt: float) -> np.ndarray:
        return integrate(u0, -nu * k * k, flux, [1.0], dt)

    orders, errs = observed_orders(run, [0.2, 0.1, 0.05, 0.025], run(1e-3))
    assert all(3.8 < p < 4.3 for p in orders), (orders, errs)
    assert errs[-1] < 1e-8


# -- the 2/3 rule -------------------------------------------------------------------------------
def test_dealiased_quadratic_term_is_exact_on_kept_modes():
    n, length = 48, TWO_PI
    mask = dealias_mask(n)
    assert mask.sum() == 16  # modes 0..15 < 48 / 3
    rng = np.random.default_rng(0)
    c = np.zeros(n // 2 + 1, complex)
    c[:16] = rng.normal(size=16) + 1j * rng.normal(size=16)
    c[0] = c[0].real
    u = irfft(c, n)
    # exact -(u^2/2)_x from a 4x finer grid (no aliasing there), truncated to the kept modes
    fine = 4 * n
    uf = fourier_resample(u, fine)
    exact = quadratic_flux(fine, length)(rfft(uf))[: n // 2 + 1] / 4
    got = quadratic_flux(n, length)(rfft(u))
    np.testing.assert_allclose(got[mask], exact[mask], atol=1e-11 * np.abs(exact).max())
    # without truncating the state first, the product aliases onto kept modes
    c_hi = c.copy()
    c_hi[20] = 1.0  # a mode above n/3: 20 + 20 = 40 aliases onto 48 - 40 = 8
    got_hi = quadratic_flux(n, length)(c_hi)
    exact_hi = quadratic_flux(fine, length)(rfft(fourier_resample(irfft(c_hi, n), fine)))
    assert np.abs(got_hi[mask] - exact_hi[: n // 2 + 1][mask] / 4).max() > 1e-2


def test_integrate_keeps_the_state_in_the_kept_modes():
    n, length = 32, TWO_PI
    rng = np.random.default_rng(1)
    u0 = rng.normal(size=(3, n))
    k = wavenumbers(n, length)
    out = integrate(u0, -0.1 * k * k, quadratic_flux(n, length), [0.0, 0.5], 0.05)
    spec = np.abs(rfft(out, axis=-1))
    assert spec[..., ~dealias_mask(n)].max() < 1e-13
    assert spec[..., dealias_mask(n)].max() > 1e-2
    # the record at t0 is u0 truncated to those modes
    np.testing.assert_allclose(out[:, 0], irfft(rfft(u0) * dealias_mask(n), n), atol=1e-14)
    raw = integrate(u0, -0.1 * k * k, zero, [0.0], 0.05, dealias=False)
    np.testing.assert_allclose(raw[:, 0], u0, atol=1e-14)


# -- shapes, batching, records, bad input -------------------------------------------------------
def test_batch_shapes_and_per_sample_symbols():
    n, length = 16, TWO_PI
    k = wavenumbers(n, length)
    rng = np.random.default_rng(2)
    u0 = rng.normal(size=(2, 3, n))
    flux = quadratic_flux(n, length)
    times = [0.1, 0.35, 0.35, 1.0]  # a repeated time and a record off the step grid
    out = integrate(u0, -0.2 * k * k, flux, times, 0.1)
    assert out.shape == (2, 3, 4, n)
    np.testing.assert_array_equal(out[..., 1, :], out[..., 2, :])
    one = integrate(u0[1, 2], -0.2 * k * k, flux, times, 0.1)
    np.testing.assert_allclose(out[1, 2], one, atol=1e-14)
    # one symbol per sample (different viscosities) = each sample alone
    nus = np.array([0.05, 0.5])[:, None]
    both = integrate(u0[:, 0], -nus * k * k, flux, times, 0.1)
    for i in range(2):
        alone = integrate(u0[i, 0], -nus[i] * k * k, flux, times, 0.1)
        np.testing.assert_allclose(both[i], alone, atol=1e-14)
    assert np.abs(both[0] - both[1]).max() > 1e-2


def test_progress_is_reported_per_record():
    calls = []
    k = wavenumbers(8, TWO_PI)
    integrate(
        np.ones(8), -k * k, zero, [0.1, 0.2, 0.3], 0.1, progress=lambda d, t: calls.append((d, t))
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"u0": np.ones(7)}, "n even"),
        ({"u0": np.full(8, np.nan)}, "non-finite"),
        ({"dt": 0.0}, "dt"),
        ({"dt": float("inf")}, "dt"),
        ({"times": [0.5, 0.2]}, "non-decreasing"),
        ({"times": [-0.1]}, "t0"),
        ({"times": []}, "non-empty"),
        ({"lin": np.zeros(4)}, "5 modes"),
        ({"lin": np.full(5, np.inf)}, "non-finite"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    args = {"u0": np.ones(8), "lin": np.zeros(5), "times": [0.1], "dt": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        integrate(args["u0"], args["lin"], zero, args["times"], args["dt"])


# -- resampling ---------------------------------------------------------------------------------
def test_fourier_resample_is_exact_on_band_limited_states():
    length = TWO_PI
    amps = {0: 0.3, 1: 1.0, 3: 0.5j, 7: -0.25}
    u16 = modes_state(16, length, amps)
    u64 = modes_state(64, length, amps)
    np.testing.assert_allclose(fourier_resample(u16, 64), u64, atol=1e-14)
    np.testing.assert_allclose(fourier_resample(u64, 16), u16, atol=1e-14)
    # refine then coarsen is the identity, also with a Nyquist mode present
    rng = np.random.default_rng(3)
    u = rng.normal(size=(2, 12))
    np.testing.assert_allclose(fourier_resample(fourier_resample(u, 40), 12), u, atol=1e-13)
    np.testing.assert_array_equal(to_grid(u64, 16), u64[::4])
    with pytest.raises(ValueError, match="even"):
        fourier_resample(np.ones(9), 16)


def test_solve_on_grid_converges_in_the_solver_grid():
    """From data-grid samples, the states at later times on the data grid; refining the
    solver grid converges spectrally, a grid coarser than the data grid is less accurate."""
    length, s = TWO_PI, 16
    x = length * np.arange(s) / s
    start = np.stack([0.5 * np.sin(x), 0.3 * np.cos(2 * x) + 0.1])

    def run(n: int) -> np.ndarray:
        return solve_on_grid(start, [0.5, 1.0, 1.5], n, 0.01, length, lambda k: -0.2 * k * k)

    ref = run(128)
    assert ref.shape == (2, 2, s)
    errs = [np.abs(run(n) - ref).max() for n in (8, 16, 32, 64)]
    assert errs[-1] < 1e-10 and errs[0] > 1e-3, errs
    assert all(b < a / 10 for a, b in zip(errs[:-1], errs[1:], strict=True)), errs
    assert solve_on_grid(start, [0.5], 32, 0.05, length, lambda k: -k * k).shape == (2, 0, s)
