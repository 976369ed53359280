"""`nlse_op` and the batched split-step solver: convergence orders on the exact soliton, exact
mass and bounded energy, agreement with the DOP853 reference solver, the operator data
(shapes, cache, exact single-soliton and breather samples through the generation path,
conservation), and the classical solver as a competitor (reproduces the data; coarser rungs
are less accurate)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.registry import build_problem
from problems.base import ConfigError
from problems.solvers.nlse_exact import soliton
from problems.solvers.nlse_spectral import (
    energy,
    grid,
    mass,
    resample,
    solve_nlse,
    split_step,
)

SMALL = {  # few samples per split: tests stay fast
    "smoke": {"train": 4, "val": 2, "test": 12},
    "standard": {"train": 4, "val": 2, "test": 2},
    "paper": {"train": 4, "val": 2, "test": 2},
}


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def soliton_c(x, t, a, x0, v):
    re, im = soliton(x, t, a, x0, v)
    return re + 1j * im


# -- the solver --------------------------------------------------------------------------------
@pytest.mark.parametrize(("scheme", "order"), [("strang", 2), ("yoshida4", 4)])
def test_split_step_converges_to_the_exact_soliton_at_its_order(scheme, order):
    length, n, t = 40.0, 256, 3.0
    x = grid(n, length, -length / 2)
    psi0 = soliton_c(x, 0.0, 1.5, -5.0, 1.0)
    exact = soliton_c(x, t, 1.5, -5.0, 1.0)
    dts = [0.1, 0.05, 0.025]
    runs = [split_step(psi0, length, [t], dt, scheme)[0] for dt in dts]
    errors = [rel(r, exact) for r in runs]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - order) < 0.6), (errors, orders)
    assert errors[-1] < (3e-3 if order == 2 else 1e-4)
    # unitary flows: the grid mass is exact whatever the step; the energy error falls with dt
    m0, h0 = mass(psi0, length), energy(psi0, length)
    assert all(abs(mass(r, length) - m0) < 1e-12 * m0 for r in runs)
    h_err = [abs(energy(r, length) - h0) for r in runs]
    assert h_err[0] > h_err[1] > h_err[2]


def test_split_step_agrees_with_the_dop853_reference_on_a_collision():
    p = build_problem("nlse_op", breather_fraction=0.0, solitons=[3, 3])
    x = grid(p.nx, p.length, p.lo)
    psi0 = p.initial(p.draw(1, seed=5)[0], x)
    times = np.array([1.0, 2.5])
    ref = solve_nlse(psi0, p.length, times, rtol=1e-11)
    errors = [rel(split_step(psi0, p.length, times, dt)[-1], ref[-1]) for dt in (0.02, 0.01)]
    assert errors[1] < 2e-6
    assert errors[0] / errors[1] > 8  # order 4 (16 in theory), against an independent solver


def test_split_step_batch_restart_and_bad_input():
    length, n = 20.0, 64
    x = grid(n, length, -length / 2)
    batch = np.stack([soliton_c(x, 0.0, a, 0.0, v) for a, v in ((1.0, 0.5), (1.3, -0.4))])
    times = np.array([0.0, 0.4, 1.0])
    both = split_step(batch, length, times, 0.01)
    assert both.shape == (2, 3, n)
    one = split_step(batch[1], length, times, 0.01)
    assert np.abs(both[1] - one).max() < 1e-13
    assert np.array_equal(both[:, 0], batch)  # t = 0 returns the initial field
    again = split_step(both[:, 1], length, times[1:] - times[1], 0.01)  # restart at an output
    assert np.abs(again[:, -1] - both[:, -1]).max() < 1e-13
    with pytest.raises(ValueError, match="whole number"):
        split_step(batch, length, [0.105], 0.01)
    with pytest.raises(ValueError, match="scheme"):
        split_step(batch, length, [0.1], 0.01, scheme="rk4")


def test_resample_round_trip_and_interpolation():
    x8, x24 = grid(8, 2 * math.pi), grid(24, 2 * math.pi)

    def band(x):
        return np.exp(1j * x) + 0.5 * np.exp(-3j * x) + 0.25

    up = resample(band(x8), 24)
    assert np.abs(up - band(x24)).max() < 1e-14  # exact interpolation of a resolved field
    assert np.abs(resample(up, 8) - band(x8)).max() < 1e-14
    # truncation removes the modes the coarse grid cannot hold (and the Nyquist mode)
    assert np.abs(resample(band(x24) + np.exp(5j * x24), 8) - band(x8)).max() < 1e-14


# -- operator data -----------------------------------------------------------------------------
def test_generation_shapes_cache_and_seeds():
    p = build_problem("nlse_op")
    calls = []
    d = p.operator_data("train", "smoke", progress=lambda k, n: calls.append((k, n)))
    assert d.inputs.shape == (8, 2, 256) and d.outputs.shape == (8, 26, 2, 256)
    assert d.inputs.dtype == np.float32 and np.array_equal(d.outputs[:, 0], d.inputs)
    assert np.allclose(d.times, np.linspace(0, 5, 26)) and len(d.grid) == 1
    assert calls[-1] == (8, 8) and not d.meta["cached"] and d.meta["seconds"] > 0
    again = p.operator_data("train", "smoke")
    assert again.meta["cached"] and np.array_equal(again.outputs, d.outputs)
    assert len(again.meta["samples"]) == 8
    val = p.operator_data("val", "smoke")  # an independent draw
    assert not np.allclose(val.inputs[:2], d.inputs[:2])
    other = build_problem("nlse_op", data_seed=1).operator_data("train", "smoke")
    assert not np.allclose(other.inputs, d.inputs)
    # the draw: 1-3 solitons, centres at least `separation` apart on the circle
    for s in p.draw(200, seed=3):
        if s["kind"] == "solitons":
            assert 1 <= len(s["A"]) <= 3
            c = np.asarray(s["x0"])
            dist = np.abs(c[:, None] - c[None, :]) % p.length
            dist = np.minimum(dist, p.length - dist) + np.eye(len(c)) * p.length
            assert dist.min() >= p.params["separation"]


@pytest.mark.parametrize(
    "kw",
    [
        {"breather_fraction": 1.0},
        {"breather_fraction": 0.0, "solitons": [1, 1], "amplitude": [1.0, 1.5]},
    ],
)
def test_generated_samples_match_exact_solutions(kw):
    """Breathers are exact on the box; a single soliton of A >= 1 is, up to its image tails
    2 exp(-A length / 2) < 3e-7, exact as the sum of its periodic images."""
    p = build_problem("nlse_op", data=SMALL, **kw)
    d = p.operator_data("val", "smoke")
    x, t = d.grid[0], d.times
    psi = d.outputs[:, :, 0] + 1j * d.outputs[:, :, 1]
    for i, s in enumerate(d.meta["samples"]):
        if s["kind"] == "breather":
            exact = p.breather(s, x, t)
        else:
            (a,), (v,), (x0,), (theta,) = s["A"], s["v"], s["x0"], s["theta"]
            images = [soliton_c(x[None] + k * p.length, t[:, None], a, x0, v) for k in range(-2, 3)]
            exact = np.exp(1j * theta) * sum(images)
        assert np.abs(psi[i] - exact).max() < 3e-6 * np.abs(exact).max()
        assert np.abs(psi[i, -1] - psi[i, 0]).max() > 0.1  # it moved: the check can fail


def test_generated_data_conserves_mass_and_energy():
    p = build_problem("nlse_op")
    d = p.operator_data("train", "smoke")
    psi = (d.outputs[:, :, 0] + 1j * d.outputs[:, :, 1]).astype(np.complex128)
    m, (k, u) = mass(psi, p.length), energy(psi, p.length, parts=True)
    assert np.abs(m / m[:, :1] - 1).max() < 1e-6  # float32 storage
    h = k - u
    assert (np.abs(h - h[:, :1]) / (k + u)[:, :1]).max() < 1e-5


def test_solve_reproduces_the_data_and_coarser_rungs_are_less_accurate():
    p = build_problem("nlse_op", data=SMALL)
    d = p.operator_data("test", "smoke")
    ladder = p.classical_ladder()
    assert ladder[0] == {} and len(ladder) >= 4
    errors = []
    for r in ladder:
        pred = p.solve(d.outputs[:, 0], d.inputs, d.times, r)
        assert pred.shape == d.outputs[:, 1:].shape
        errors.append(rel(pred, d.outputs[:, 1:]))
    assert errors[0] < 1e-6  # the data's own solver, from float32 frames
    assert all(b > a for a, b in zip(errors, errors[1:])), errors
    # from a later frame (the harness starts after the context) and on a finer grid
    fine = p.solve(d.outputs[:, 5], d.inputs, d.times[5:], {"nx": 512, "dt": 0.0025})
    assert rel(fine, d.outputs[:, 6:]) < 1e-4
    with pytest.raises(ConfigError, match="resolution"):
        p.solve(d.outputs[:, 0], d.inputs, d.times, {"grid": 64})
    with pytest.raises(ConfigError, match="resolution.dt"):
        p.solve(d.outputs[:, 0], d.inputs, d.times, {"dt": 0.03})


def test_capabilities():
    p = build_problem("nlse_op")
    assert p.capabilities == {"operator_data", "solve"}
    assert p.context == 1 and p.fields == ("re", "im")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dt", 0.003),
        ("scheme", "rk4"),
        ("solitons", [2, 1]),
        ("amplitude", [0.0, 1.0]),
        ("breather_fraction", 1.5),
        ("breather_a", [0.499, 0.4999]),
        ("separation", 10.0),
        ("nx", 8),
        ("data", {"smoke": {"train": 0}}),
    ],
)
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=key.split("_")[0]):
        build_problem("nlse_op", **{key: value})
