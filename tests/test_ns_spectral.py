"""The 2-D periodic vorticity solver (FNO Navier–Stokes): exact laminar states (FNO and
Kolmogorov forcing), Taylor–Green decay, the advection term and velocity against closed forms,
the zero vorticity mean, time-step convergence orders, energy/enstrophy conservation with
dealiasing, the GRF's distribution, batch independence and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from problems.solvers.ns_spectral import (
    SCHEMES,
    advection,
    fno_forcing,
    grf,
    grid,
    kolmogorov_forcing,
    solve_vorticity,
    stream_function,
    velocity,
)

TWO_PI = 2.0 * math.pi


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These grids are tiny: intra-op threads only add a synchronisation per FFT, which costs
    # milliseconds when other processes hold the cores (measured: 4 s with 1 thread, 20-80 s
    # with 2 on a loaded 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mesh(s: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(grid(s), dtype=torch.float64)
    return torch.meshgrid(x, x, indexing="ij")


def cn_factor(z: float) -> float:
    """Crank–Nicolson's decay factor per step for w' = -(z / dt) w."""
    return (1.0 - 0.5 * z) / (1.0 + 0.5 * z)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def band_limit(w: torch.Tensor) -> torch.Tensor:
    """w with the modes that the 2/3 rule removes set to zero."""
    s = w.shape[-1]
    mx = torch.fft.fftfreq(s, 1.0 / s, dtype=torch.float64)[:, None]
    my = torch.fft.rfftfreq(s, 1.0 / s, dtype=torch.float64)[None, :]
    keep = (3 * mx.abs() < s) & (3 * my.abs() < s)
    return torch.fft.irfft2(torch.where(keep, torch.fft.rfft2(w), 0.0), s=(s, s))


# -- (1) exact solutions -----------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_fno_laminar_state_is_steady(scheme):
    nu, s = 1e-3, 32
    f = fno_forcing(s)
    w_star = f / (8 * math.pi**2 * nu)  # amplitude 0.1 sqrt(2) / (8 pi^2 nu) = 1.79
    x, y = mesh(s)
    phase = TWO_PI * (x + y)
    torch.testing.assert_close(f, 0.1 * (torch.sin(phase) + torch.cos(phase)), rtol=0, atol=1e-15)
    _, w = solve_vorticity(w_star[None], f, nu, 0.01, 2, dt=1e-4, scheme=scheme)
    assert float((w - w_star).abs().max()) <= 1e-12  # measured 6.4e-14 (100 steps)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fno_spin_up_from_rest(scheme):
    # w(t) = w* (1 - exp(-8 pi^2 nu t)) exactly; CN replaces exp(-z) per step by cn_factor(z),
    # z = 8 pi^2 nu dt, an O(z^3) error per step. nu is large so that it shows above round-off.
    nu, s, t_final = 0.05, 16, 1.0
    f = fno_forcing(s)
    w_star = f / (8 * math.pi**2 * nu)
    errors = []
    for steps in (50, 100):
        dt = t_final / steps
        times, w = solve_vorticity(torch.zeros(1, s, s), f, nu, t_final, 10, dt=dt, scheme=scheme)
        np.testing.assert_allclose(times, np.linspace(0.1, 1.0, 10), rtol=1e-14)
        rate = 8 * math.pi**2 * nu
        cn = torch.as_tensor(1.0 - cn_factor(rate * dt) ** (np.round(times / dt)))
        exact = torch.as_tensor(1.0 - np.exp(-rate * times))
        # the discrete solution to round-off, and the continuous one to CN's error
        torch.testing.assert_close(w[0], cn[:, None, None] * w_star, rtol=0, atol=1e-13)
        errors.append(float((w[0] - exact[:, None, None] * w_star).abs().max()))
    assert 1e-6 < errors[0] < 3e-5  # measured 6.7e-6 (|w*| = 0.036), as predicted
    assert 3.9 < errors[0] / errors[1] < 4.1  # CN: second order in dt


@pytest.mark.parametrize("scheme", SCHEMES)
def test_taylor_green_decays_exactly(scheme):
    nu, s, dt = 0.01, 16, 0.02
    x, y = mesh(s)
    w0 = torch.sin(TWO_PI * x) * torch.sin(TWO_PI * y)
    times, w = solve_vorticity(w0[None], None, nu, 1.0, 5, dt=dt, scheme=scheme)
    z = 8 * math.pi**2 * nu * dt
    cn = torch.as_tensor(cn_factor(z) ** np.round(times / dt))
    torch.testing.assert_close(w[0], cn[:, None, None] * w0, rtol=0, atol=1e-14)
    exact = torch.as_tensor(np.exp(-8 * math.pi**2 * nu * times))
    err = float((w[0] - exact[:, None, None] * w0).abs().max())
    assert 1e-6 < err < 3e-5  # measured 7.4e-6 = CN's error n z^3 / 12 e^{-8 pi^2 nu t}, n = 50


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kolmogorov_laminar_state_with_drag(scheme):
    nu, drag, k, scale, s = 0.01, 0.1, 2, 0.7, 16
    f = kolmogorov_forcing(s, k=k, scale=scale)
    x, y = mesh(s)
    torch.testing.assert_close(
        f, -TWO_PI * k * scale * torch.cos(TWO_PI * k * y), rtol=0, atol=1e-14
    )
    damping = nu * (TWO_PI * k) ** 2 + drag
    w_star = f / damping
    u, v = velocity(w_star)
    torch.testing.assert_close(u, scale * torch.sin(TWO_PI * k * y) / damping, rtol=0, atol=1e-14)
    torch.testing.assert_close(v, torch.zeros_like(v), rtol=0, atol=1e-14)
    _, w = solve_vorticity(w_star[None], f, nu, 1.0, 1, dt=2e-2, scheme=scheme, drag=drag)
    assert float((w - w_star).abs().max()) <= 1e-12  # measured 2.7e-15
    # without the drag it is not steady: the drag term is really applied
    _, w = solve_vorticity(w_star[None], f, nu, 1.0, 1, dt=2e-2, scheme=scheme)
    assert float((w - w_star).abs().max()) > 0.1


def test_velocity_stream_function_and_advection_match_closed_forms():
    # w = A sin 2 pi x + B cos 4 pi y: psi = A sin(2 pi x) / 4 pi^2 + B cos(4 pi y) / 16 pi^2,
    # u = psi_y = -B sin(4 pi y) / 4 pi, v = -psi_x = -A cos(2 pi x) / 2 pi,
    # u . grad w = 3/2 A B cos(2 pi x) sin(4 pi y).
    a, b, s = 0.8, -1.3, 16
    x, y = mesh(s)
    w = a * torch.sin(TWO_PI * x) + b * torch.cos(2 * TWO_PI * y)
    psi = a * torch.sin(TWO_PI * x) / (4 * math.pi**2) + b * torch.cos(2 * TWO_PI * y) / (
        16 * math.pi**2
    )
    torch.testing.assert_close(stream_function(w), psi, rtol=0, atol=1e-15)
    u, v = velocity(w)
    torch.testing.assert_close(u, -b * torch.sin(2 * TWO_PI * y) / (2 * TWO_PI), rtol=0, atol=1e-15)
    torch.testing.assert_close(v, -a * torch.cos(TWO_PI * x) / TWO_PI, rtol=0, atol=1e-15)
    adv = 1.5 * a * b * torch.cos(TWO_PI * x) * torch.sin(2 * TWO_PI * y)
    for dealias in (True, False):
        torch.testing.assert_close(advection(w, dealias), adv, rtol=0, atol=1e-14)
    # a batch of fields, and a constant added to w changes nothing
    torch.testing.assert_close(advection(torch.stack((w, 2.0 + w))), torch.stack((adv, adv)))


def test_euler_is_the_fno_generator_step():
    # One step of FNO's update: w_h <- (-dt F_h + dt f_h + (1 - dt nu lap / 2) w_h)
    # / (1 + dt nu lap / 2), with F = u . grad w dealiased.
    nu, dt, s = 1e-3, 1e-4, 32
    w0, f = grf(2, s, seed=4), fno_forcing(s)
    m = torch.fft.fftfreq(s, 1.0 / s, dtype=torch.float64)
    lap = 4 * math.pi**2 * (m[:, None] ** 2 + m[None, :] ** 2)
    w_h, f_h, n_h = (torch.fft.fft2(a) for a in (w0, f, advection(w0)))
    expected = (-dt * n_h + dt * f_h + (1 - 0.5 * dt * nu * lap) * w_h) / (1 + 0.5 * dt * nu * lap)
    _, w = solve_vorticity(w0, f, nu, dt, 1, dt=dt, scheme="euler")
    torch.testing.assert_close(w[:, 0], torch.fft.ifft2(expected).real, rtol=0, atol=1e-14)


# -- (2) invariants ----------------------------------------------------------------------------
def test_vorticity_mean_stays_zero_and_decays_with_drag():
    nu, s, dt = 1e-3, 32, 2e-2
    w0, f = grf(2, s, seed=1), fno_forcing(s)
    _, w = solve_vorticity(w0, f, nu, 1.0, 10, dt=dt)
    assert float(w.std()) > 0.1  # the field itself is O(0.2)
    assert float(w.mean(dim=(-2, -1)).abs().max()) <= 1e-14  # measured 7e-18
    # a mean is not removed by the solver: with drag it decays at CN's rate, without it stays
    drag = 0.5
    times, w = solve_vorticity(w0 + 0.3, f, nu, 1.0, 10, dt=dt, drag=drag)
    expected = 0.3 * cn_factor(drag * dt) ** np.round(times / dt)
    np.testing.assert_allclose(w.mean(dim=(-2, -1)).numpy(), np.stack([expected] * 2), atol=1e-14)
    _, w = solve_vorticity(w0 + 0.3, f, nu, 1.0, 1, dt=dt)
    np.testing.assert_allclose(w.mean(dim=(-2, -1)).numpy(), 0.3, rtol=0, atol=1e-14)


def energy_enstrophy(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u, v = velocity(w)
    return 0.5 * (u**2 + v**2).mean(dim=(-2, -1)), 0.5 * (w**2).mean(dim=(-2, -1))


@pytest.mark.parametrize("scheme, bound", [("heun", 1e-7), ("cnab2", 1e-6)])
def test_inviscid_dealiased_flow_conserves_energy_and_enstrophy(scheme, bound):
    # Without viscosity the 2/3-truncated (Galerkin) system conserves energy and enstrophy
    # exactly for a band-limited field; only the time stepper's error remains, falling with dt.
    # The undealiased collocation scheme does not: its aliasing error does not fall with dt.
    s = 32
    w0 = band_limit(5.0 * grf(2, s, seed=3))
    e0, z0 = energy_enstrophy(w0)
    drifts = {}
    for dealias in (True, False):
        for dt in (2e-3, 1e-3):
            _, w = solve_vorticity(w0, None, 0.0, 0.5, 5, dt=dt, scheme=scheme, dealias=dealias)
            e, z = energy_enstrophy(w)
            drifts[dealias, dt] = max(
                float(((e - e0[:, None]) / e0[:, None]).abs().max()),
                float(((z - z0[:, None]) / z0[:, None]).abs().max()),
            )
    assert drifts[True, 2e-3] < bound  # measured 1.8e-8 (heun), 9.0e-8 (cnab2)
    assert drifts[True, 1e-3] < drifts[True, 2e-3] / 3.5  # measured ratios 8.0 and 4.7
    assert drifts[False, 1e-3] > 1e-6  # measured 5.2e-6 (aliasing)
    assert drifts[False, 1e-3] > 0.8 * drifts[False, 2e-3]


# -- (3) convergence ---------------------------------------------------------------------------
def test_time_step_convergence_orders():
    # The FNO setting (GRF initial field, FNO forcing, nu = 1e-3) on 32^2 to t = 0.5. Errors at
    # dt, dt/2, dt/4 against heun at dt/16 (whose own error is ~1/256 of heun's at dt).
    nu, s, t_final, dt = 1e-3, 32, 0.5, 0.02
    w0, f = grf(2, s, seed=1), fno_forcing(s)
    ref = solve_vorticity(w0, f, nu, t_final, 1, dt=dt / 16, scheme="heun")[1]
    bands = {"euler": (0.9, 1.15), "heun": (1.85, 2.2), "cnab2": (1.85, 2.2)}
    for scheme, (lo, hi) in bands.items():
        errors = [
            rel(solve_vorticity(w0, f, nu, t_final, 1, dt=dt / 2**j, scheme=scheme)[1], ref)
            for j in range(3)
        ]
        orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
        # measured: euler 6.2e-4, orders 1.007 1.004; heun 1.2e-5, 2.01 2.07;
        # cnab2 2.0e-5, 2.00 2.02
        assert np.all((lo < orders) & (orders < hi)), (scheme, errors, orders)
        assert errors[0] < (2e-3 if scheme == "euler" else 5e-5), (scheme, errors)


def test_spatial_convergence_is_spectral():
    # A smooth (entire) initial field: grid errors at the shared points fall faster than any
    # power of 1/s. Reference: 64^2.
    nu, t_final, dt = 0.01, 0.5, 1e-2
    fine = 64

    def w0(s: int) -> torch.Tensor:
        x, y = mesh(s)
        return (torch.exp(torch.sin(TWO_PI * x)) * torch.cos(TWO_PI * y) + torch.sin(TWO_PI * y))[
            None
        ]

    ref = solve_vorticity(w0(fine), fno_forcing(fine), nu, t_final, 1, dt=dt)[1][0, 0]
    errors = []
    for s in (8, 16, 32):
        w = solve_vorticity(w0(s), fno_forcing(s), nu, t_final, 1, dt=dt)[1][0, 0]
        errors.append(float((w - ref[:: fine // s, :: fine // s]).abs().max()))
    # measured 3.1e-2, 1.3e-5, 9.5e-12
    assert errors[0] > 1e-3 and errors[1] < 1e-4 and errors[2] < 1e-10, errors


# -- (4) the Gaussian random field -------------------------------------------------------------
def mode_power(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |c_m|^2 over samples of the Fourier coefficients of w = sum c_m e^{2 pi i m.x}, and
    |m|^2, both [s, s]."""
    s = w.shape[-1]
    c = torch.fft.fft2(w) / s**2
    m = torch.fft.fftfreq(s, 1.0 / s, dtype=torch.float64)
    return (c.abs() ** 2).mean(0), m[:, None] ** 2 + m[None, :] ** 2


def fno_recipe(n: int, s: int, alpha: float, tau: float, seed: int) -> torch.Tensor:
    """The FNO generator's construction, written out: complex white noise (E|xi|^2 = 1) times
    s^2 sqrt(2) sigma (4 pi^2 |m|^2 + tau^2)^(-alpha/2), inverse FFT, real part."""
    gen = torch.Generator().manual_seed(seed)
    sigma = tau ** (alpha - 1.0)
    _, m2 = mode_power(torch.zeros(1, s, s))
    root = s**2 * math.sqrt(2.0) * sigma * (4 * math.pi**2 * m2 + tau**2) ** (-alpha / 2)
    root[0, 0] = 0.0
    re, im = (torch.randn(n, s, s, generator=gen, dtype=torch.float64) for _ in range(2))
    return torch.fft.ifft2(root * torch.complex(re, im) / math.sqrt(2.0)).real


@pytest.mark.parametrize("alpha", [2.5, 2.0, 3.5])
def test_grf_spectrum_matches_its_covariance(alpha):
    # E|c_m|^2 = sigma^2 (4 pi^2 |m|^2 + tau^2)^(-alpha), sigma = tau^(alpha - 1): a log-log fit
    # over all modes gives slope -alpha and intercept 2 log sigma; each shell's mean power
    # matches the formula. The FNO generator's construction has the same spectrum.
    n, s, tau = 32, 64, 7.0
    sigma = tau ** (alpha - 1.0)
    for w in (grf(n, s, alpha=alpha, tau=tau, seed=5), fno_recipe(n, s, alpha, tau, seed=5)):
        power, m2 = mode_power(w)
        lam = 4 * math.pi**2 * m2 + tau**2
        nonzero = m2 > 0
        slope, intercept = np.polyfit(torch.log(lam[nonzero]), torch.log(power[nonzero]), 1)
        assert abs(slope + alpha) < 0.02  # measured 0.0035
        assert abs(intercept - 2 * math.log(sigma)) < 0.1  # measured 0.025
        ratio = power / (sigma**2 * lam ** (-alpha))
        shell = torch.round(m2.sqrt())
        shells = [float(ratio[shell == k].mean()) for k in range(1, s // 2)]
        assert 0.8 < min(shells) and max(shells) < 1.2, shells  # measured 0.90 .. 1.08
        assert float(power[0, 0]) < 1e-30


def test_grf_scale_zero_mean_and_seeds():
    s = 32
    w = grf(64, s, seed=11)
    assert w.shape == (64, s, s) and w.dtype == torch.float64
    assert float(w.mean(dim=(-2, -1)).abs().max()) < 1e-15
    # grid variance = sum over the nonzero modes of sigma^2 (4 pi^2 |m|^2 + tau^2)^(-alpha)
    _, m2 = mode_power(w)
    var = 7.0**3 * float((4 * math.pi**2 * m2[m2 > 0] + 49.0).pow(-2.5).sum())
    assert 0.8 < float(w.var()) / var < 1.2  # measured 0.93 (std 0.185)
    assert torch.equal(grf(2, s, seed=2), grf(2, s, seed=2))
    assert not torch.allclose(grf(2, s, seed=2), grf(2, s, seed=3))
    assert grf(1, s, dtype=torch.float32).dtype == torch.float32


# -- (5) batching, snapshots and input checks --------------------------------------------------
def test_batch_equals_one_by_one():
    nu, s, dt = 1e-3, 32, 1e-2
    w0 = grf(3, s, seed=8)
    f = torch.stack([fno_forcing(s), kolmogorov_forcing(s, k=2), -fno_forcing(s)])
    for scheme in SCHEMES:
        _, batch = solve_vorticity(w0, f, nu, 0.2, 2, dt=dt, scheme=scheme)
        for i in range(3):
            _, one = solve_vorticity(w0[i : i + 1], f[i], nu, 0.2, 2, dt=dt, scheme=scheme)
            torch.testing.assert_close(batch[i : i + 1], one, rtol=0, atol=1e-13)
        assert not torch.allclose(batch[0], batch[2])


def test_snapshot_times_and_shapes():
    s = 16
    w0 = grf(2, s).to(torch.float32)  # computed in float64 all the same
    times, w = solve_vorticity(w0, fno_forcing(s), 1e-3, 0.05, 5, dt=1e-3)
    np.testing.assert_allclose(times, [0.01, 0.02, 0.03, 0.04, 0.05], rtol=1e-14)
    assert w.shape == (2, 5, s, s) and w.dtype == torch.float64
    # snapshot i is the state after i * steps / n steps: restarting from it reproduces the next
    _, full = solve_vorticity(w0, fno_forcing(s), 1e-3, 0.05, 5, dt=1e-3, scheme="euler")
    _, part = solve_vorticity(w0, fno_forcing(s), 1e-3, 0.03, 3, dt=1e-3, scheme="euler")
    _, again = solve_vorticity(full[:, 2], fno_forcing(s), 1e-3, 0.02, 2, dt=1e-3, scheme="euler")
    torch.testing.assert_close(part, full[:, :3], rtol=0, atol=1e-15)
    torch.testing.assert_close(again, full[:, 3:], rtol=0, atol=1e-13)


W0 = torch.zeros(2, 16, 16)
F = torch.zeros(16, 16)

BAD = [
    (lambda: solve_vorticity(W0, F, -1e-3, 1.0, 10), "nu"),
    (lambda: solve_vorticity(W0, F, float("nan"), 1.0, 10), "nu"),
    (lambda: solve_vorticity(W0, F, 1e-3, 0.0, 10), "t_final"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 10, dt=0.0), "dt"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 10, dt=3e-3), "whole number of steps"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 3, dt=1e-2), "n_snapshots"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 0, dt=1e-2), "n_snapshots"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 2.5, dt=1e-2), "n_snapshots"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 10, scheme="rk4"), "scheme"),
    (lambda: solve_vorticity(W0, F, 1e-3, 1.0, 10, drag=-1.0), "drag"),
    (lambda: solve_vorticity(W0[0], F, 1e-3, 1.0, 10), "batch axis"),
    (lambda: solve_vorticity(torch.zeros(2, 16, 8), F, 1e-3, 1.0, 10), "square"),
    (lambda: solve_vorticity(torch.zeros(2, 2, 2), None, 1e-3, 1.0, 10), "grid size of w0"),
    (lambda: solve_vorticity(W0 * float("inf"), F, 1e-3, 1.0, 10), "w0 must be finite"),
    (lambda: solve_vorticity(W0, torch.zeros(3, 16, 16), 1e-3, 1.0, 10), "forcing"),
    (lambda: solve_vorticity(W0.to(torch.complex128), F, 1e-3, 1.0, 10), "real"),
    (lambda: grf(0, 16), "n must"),
    (lambda: grf(2, 3), "s must"),
    (lambda: grf(2, 16, alpha=-1.0), "alpha"),
    (lambda: grf(2, 16, tau=0.0), "tau"),
    (lambda: grf(2, 16, sigma=-2.0), "sigma"),
    (lambda: grid(2), "s must"),
    (lambda: kolmogorov_forcing(16, k=0), "k must"),
    (lambda: kolmogorov_forcing(12, k=4), "s > 3 k"),
    (lambda: velocity(torch.zeros(16)), "square"),
]


@pytest.mark.parametrize("call, match", BAD)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
