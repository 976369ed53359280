"""`diffusion_sorption`: the finite-volume solver against the exact heat-equation solution (no
sorption) and by self-convergence (sorption on), its mass balance and maximum principle, the
data layout and draws, the classical ladder, the discrete residuals of the data (second order in
the grid and the frames), and bad configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import simpson
from scipy.optimize import brentq

from bench.registry import build_problem
from problems.base import ConfigError
from problems.solvers.sorption_fv import (
    average_down,
    boundary_fluxes,
    cell_centres,
    prolong,
    solve,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def orders(errors: list[float]) -> list[float]:
    """Observed orders between successive halvings of h."""
    return [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]


# -- the solver ----------------------------------------------------------------------------------
def test_heat_equation_exact_solution_second_order_in_space():
    """k = 0 (R = 1): u = 1 - x / (1 + D) + a exp(-D lam^2 t) sin(lam x), tan lam = -D lam,
    solves u_t = D u_xx with u(0) = 1 and u + D u_x = 0 at x = 1."""
    phys = build_problem("diffusion_sorption", k=0.0).phys
    d = phys.D
    lam = brentq(lambda z: math.sin(z) + d * z * math.cos(z), 2.5, 3.5)

    def exact(x: np.ndarray, t: float) -> np.ndarray:
        return 1 - x / (1 + d) - 0.5 * math.exp(-d * lam**2 * t) * np.sin(lam * x)

    times = np.array([0.0, 250.0, 500.0])
    errors = []
    for n in (16, 32, 64, 128):
        x = cell_centres(n)
        u = solve(exact(x, 0.0)[None], times, phys, rtol=1e-11, atol=1e-13)[0]
        errors.append(max(np.abs(u[i] - exact(x, t)).max() for i, t in enumerate(times)))
    assert all(1.9 < o < 2.1 for o in orders(errors)), (errors, orders(errors))
    assert errors[-1] < 1e-5, errors


def test_self_convergence_with_sorption_second_order():
    """PDEBench's constant initial states (jumps to both boundary values at t = 0): cell
    averages on 32 cells from n = 64 .. 512 solver cells converge at second order."""
    phys = build_problem("diffusion_sorption").phys
    times = np.linspace(0.0, 500.0, 11)
    sols = {}
    for n in (64, 128, 256, 512):
        u0 = np.repeat([[0.02], [0.15]], n, axis=1)
        sols[n] = average_down(solve(u0, times, phys, rtol=1e-10, atol=1e-13), 32)
    diffs = [np.abs(sols[n] - sols[2 * n]).max() for n in (64, 128, 256)]
    assert all(1.8 < o < 2.2 for o in orders(diffs)), (diffs, orders(diffs))
    assert diffs[-1] < 2e-4, diffs


def test_mass_balance_storage_changes_by_the_boundary_fluxes():
    """d/dt sum_j h S(u_j) = inflow(0) - outflow(1) (S' = R, floor included), integrated over
    [0, 500] by Simpson's rule on frames fine enough for the first cells' fast transients (a
    constant start, jumping to the boundary values, and per-cell noise)."""
    phys = build_problem("diffusion_sorption").phys
    n = 128
    times = np.concatenate([np.linspace(0.0, 5.0, 2001), np.linspace(5.0, 500.0, 991)[1:]])
    rough = np.random.default_rng(0).uniform(0.0, 0.2, n)
    u = solve(np.stack([np.full(n, 0.1), rough]), times, phys, rtol=1e-10, atol=1e-13)
    stored = phys.storage(u).sum(axis=-1) / n
    inflow, outflow = boundary_fluxes(u, phys)
    through = simpson(inflow - outflow, x=times, axis=-1)
    change = stored[:, -1] - stored[:, 0]
    assert np.all(change > 0.05), change
    np.testing.assert_allclose(change, through, rtol=1e-6)
    assert np.all(outflow >= 0) and np.all(inflow > 0)


def test_storage_is_the_antiderivative_of_the_retardation():
    phys = build_problem("diffusion_sorption").phys
    u = np.concatenate([-np.logspace(-3, -9, 7), np.logspace(-9, 0, 19)])
    h = 1e-7 * np.maximum(np.abs(u), 1e-6)
    fd = (phys.storage(u + h) - phys.storage(u - h)) / (2 * h)
    np.testing.assert_allclose(fd, phys.retardation(u), rtol=1e-5)
    assert phys.storage(np.zeros(1))[0] == 0.0


@pytest.mark.parametrize("kind", ["constant", "smooth", "cell noise", "with zeros"])
def test_maximum_principle(kind):
    """Initial states in [0, 1] stay in [0, 1] (to the solver tolerance)."""
    phys = build_problem("diffusion_sorption").phys
    n = 128
    rng = np.random.default_rng(1)
    x = cell_centres(n)
    u0 = {
        "constant": np.full((2, n), [[0.0], [1.0]]),
        "smooth": 0.5 + 0.5 * np.sin(2 * math.pi * x[None] * [[1.0], [3.0]]),
        "cell noise": rng.uniform(0.0, 1.0, (2, n)),
        "with zeros": np.where(rng.random((2, n)) < 0.5, 0.0, 1.0),
    }[kind]
    u = solve(u0, np.linspace(0.0, 500.0, 51), phys)
    assert u.min() > -1e-8 and u.max() < 1 + 1e-8, (u.min(), u.max())
    assert np.all(u[:, -1, 0] > 0.9)  # the inflow has reached the first cell


def test_prolong_and_average_down_are_consistent():
    u = np.random.default_rng(2).random((3, 16))
    np.testing.assert_allclose(average_down(prolong(u, 64), 16), u, atol=1e-14)
    line = 2.0 + 3.0 * cell_centres(8)
    np.testing.assert_allclose(prolong(line, 32), 2.0 + 3.0 * cell_centres(32), atol=1e-14)


# -- data ------------------------------------------------------------------------------------------
def test_data_layout_and_draws():
    p = build_problem("diffusion_sorption")
    calls = []
    data = p.operator_data("test", "smoke", progress=lambda d, t: calls.append((d, t)))
    n = p.data_sizes("smoke")["test"]
    assert calls[-1] == (n, n)
    # the smoke scale's own grid (`smoke`: 64 cells, 26 frames)
    assert data.outputs.shape == (n, 26, 1, 64) and data.inputs.shape == (n, 1, 64)
    assert data.outputs.dtype == np.float32
    np.testing.assert_array_equal(data.inputs[:, 0], data.outputs[:, 0, 0])
    np.testing.assert_allclose(data.grid[0], (np.arange(64) + 0.5) / 64)
    np.testing.assert_array_equal(data.times, np.linspace(0.0, 500.0, 26))
    u0 = data.inputs[:, 0]
    assert np.all(u0.min(axis=1) == u0.max(axis=1)) and 0 <= u0.min() and u0.max() <= 0.2
    assert len(np.unique(u0[:, 0])) == n
    u = data.outputs[:, 1:, 0]
    assert u.min() >= 0 and u.max() <= 1
    assert np.all(u[:, -1, 0] > u[:, 0, 0])  # the contaminant enters from the left
    a, b = p.initial_states(3, seed=7), p.initial_states(5, seed=7)
    np.testing.assert_array_equal(a, b[:3])
    smooth = build_problem("diffusion_sorption", ic="smooth").initial_states(4, seed=7)
    assert smooth.min() >= 0 and smooth.max() <= 0.2 and np.all(np.ptp(smooth, axis=1) > 0.01)


def test_solve_reproduces_the_data_and_the_ladder_is_ordered():
    p = build_problem("diffusion_sorption", n=256, s=64, nt=21)
    data = p.operator_data("val", "smoke")
    truth = data.outputs[:, 1:].astype(np.float64)
    errors = []
    for res in p.classical_ladder():
        pred = p.solve(data.outputs[:, 0], data.inputs, data.times, res)
        assert pred.shape == truth.shape
        errors.append(float(np.linalg.norm(pred - truth) / np.linalg.norm(truth)))
    assert errors[0] < 1e-6, errors
    assert all(b > a for a, b in zip(errors[:-1], errors[1:], strict=True)), errors
    assert errors[-1] > 1e-4, errors


# -- the discrete PDE on the frames ----------------------------------------------------------------
def test_grid_residuals_of_the_reference_fall_at_second_order():
    """A 1024-cell reference, averaged to s = 32, 64, 128 cells at 26, 51, 101 frames: the
    `pde` residual (frames t >= 100, after the initial layers) falls at second order and the
    boundary residuals at least as fast."""
    p = build_problem("diffusion_sorption")
    times = np.linspace(0.0, 500.0, 101)
    u = solve(np.repeat([[0.05], [0.15]], 1024, axis=1), times, p.phys, rtol=1e-10, atol=1e-13)
    rms: dict[str, list[float]] = {"pde": [], "left": [], "right": []}
    for s, stride in ((32, 4), (64, 2), (128, 1)):
        frames = torch.tensor(average_down(u[:, ::stride], s))[:, :, None]
        t = torch.tensor(times[::stride])
        res = p.grid_residuals(p.grid_terms(frames, t))
        masks = p.grid_masks((len(t), s))
        late = (t >= 100).numpy()[:, None]
        for name in rms:
            r = res[name].numpy()[:, masks[name] & late]
            rms[name].append(float(np.sqrt((r**2).mean())))
    assert all(1.8 < o < 2.7 for o in orders(rms["pde"])), rms
    # u_xx rms ~2 on these frames: the residual is small against t_ref D u_xx / R ~ 3e-3
    assert rms["pde"][-1] < 5e-3 * p.t_ref * p.phys.D, rms
    for name in ("left", "right"):
        assert all(o > 1.8 for o in orders(rms[name])) and rms[name][-1] < 1e-5, rms


def test_the_papers_right_boundary_contradicts_the_data():
    """`right_bc: paper` (u - D u_x at x = 1, PI-HC-MoE's) on the same reference data: the data
    satisfy the outflow u + D u_x = 0 to the discretisation's accuracy, so the paper's residual
    there is 2u at the face, over ten times the outflow's; the other residuals are unchanged."""
    ours, paper = (build_problem("diffusion_sorption", right_bc=bc) for bc in ("outflow", "paper"))
    times = np.linspace(0.0, 500.0, 101)
    u = solve(np.repeat([[0.1]], 1024, axis=1), times, ours.phys, rtol=1e-8, atol=1e-11)
    frames = torch.tensor(average_down(u, 128))[:, :, None]
    t = torch.tensor(times)
    masks = ours.grid_masks((len(t), 128))

    def rms(v: torch.Tensor, name: str) -> float:
        return float(np.sqrt((v.numpy()[:, masks[name]] ** 2).mean()))

    terms = ours.grid_terms(frames, t)
    res = {bc: p.grid_residuals(terms) for bc, p in (("outflow", ours), ("paper", paper))}
    outflow, papers = rms(res["outflow"]["right"], "right"), rms(res["paper"]["right"], "right")
    assert outflow < 1e-4 and papers > 10 * outflow
    assert papers == pytest.approx(2 * rms(terms["u_face"], "right"), rel=0.1)
    for k in ("pde", "left"):
        assert torch.equal(res["paper"][k], res["outflow"][k])


def test_grid_terms_are_exact_for_quadratics_and_differentiable():
    """Every stencil is exact for u = a + b x + c x^2 + e t^2 (values at the centres), but
    the first-order BDF1 start of u_t."""
    p = build_problem("diffusion_sorption", s=16)
    x = torch.tensor(cell_centres(16), dtype=torch.float64)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    u = (0.3 + 0.7 * x - 2.0 * x**2 + 0.25 * t[:, None] ** 2)[None, :, None]
    u.requires_grad_(True)
    terms = p.grid_terms(u, t)
    torch.testing.assert_close(terms["u_x"][0], (0.7 - 4.0 * x).expand(5, 16))
    torch.testing.assert_close(terms["u_xx"][0], torch.full((5, 16), -4.0, dtype=torch.float64))
    # backward differences: BDF2 is exact for t^2 from frame 2 on, BDF1 at frame 1
    torch.testing.assert_close(terms["u_t"][0, 2:], (0.5 * t[2:, None]).expand(3, 16))
    torch.testing.assert_close(terms["u_t"][0, 1], (0.25 * t[1]).expand(16))
    face = terms["u_face"][0]
    torch.testing.assert_close(face[:, 0], 0.3 + 0.25 * t**2)
    torch.testing.assert_close(face[:, -1], 0.3 + 0.7 - 2.0 + 0.25 * t**2)
    torch.testing.assert_close(terms["u_x_face"][0, :, -1], torch.full((5,), 0.7 - 4.0).double())
    assert torch.all(face[:, 1:-1] == 0)
    res = p.grid_residuals(terms)
    assert all(r.dtype == torch.float64 and r.shape == (1, 5, 16) for r in res.values())
    sum(r.sum() for r in res.values()).backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()
    masks = p.grid_masks((5, 16))
    assert masks["pde"].sum() == 4 * 14 and not masks["pde"][0].any()
    assert masks["left"][1:, 0].all() and masks["right"][1:, -1].all()


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"n": 1000}, "n = 1000"),
        ({"ic": "noise"}, "ic"),
        ({"n_f": 1.5}, "n_f"),
        ({"D": 0.0}, "D"),
        ({"phi": 1.0}, "phi"),
        ({"nt": 2}, "nt"),
        ({"rtol": 0}, "rtol"),
        ({"s": 2}, "s"),
        ({"right_bc": "dirichlet"}, "right_bc"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        build_problem("diffusion_sorption", **kwargs)


def test_bad_resolution_is_rejected():
    p = build_problem("diffusion_sorption", n=64, s=32, nt=3)
    start, times = np.full((1, 1, 32), 0.1), np.array([0.0, 1.0, 2.0])
    for res in ({"dt": 1.0}, {"n": 48}, {"rtol": 2.0}):
        with pytest.raises(ConfigError):
            p.solve(start, start, times, res)


def test_smoke_scale_has_its_own_coarser_grid_and_the_solver_follows_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    p = build_problem(
        "diffusion_sorption", data={"smoke": {"grid": {"s": 32, "nt": 6}}}, n=64, s=64, t_final=50.0
    )
    d = p.operator_data("test", "smoke")
    assert d.outputs.shape[1:] == (6, 1, 32) and len(d.grid[0]) == 32 and len(d.times) == 6
    again = p.solve(d.outputs[:, 0], d.inputs, d.times, {})
    np.testing.assert_allclose(again, d.outputs[:, 1:], rtol=0, atol=1e-5)
    assert p.data_key("test", 4, "smoke") != p.data_key("test", 4, "standard")
    with pytest.raises(ConfigError, match=r"data.smoke.grid.s = 48 must divide"):
        build_problem("diffusion_sorption", data={"smoke": {"grid": {"s": 48}}}, n=64, s=64)
    with pytest.raises(ConfigError, match=r"data.paper.grid: unknown key\(s\) \['n'\]"):
        build_problem("diffusion_sorption", data={"paper": {"grid": {"n": 48}}})
