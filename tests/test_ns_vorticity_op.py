"""`ns_vorticity` operator data (the FNO benchmark): shapes and the cache, an exact solution
through the generation path (fields on the forcing's wavenumber shell evolve linearly), the
classical solver as a competitor (it reproduces the data, converges at order 2 in the step, and
coarser rungs are less accurate), Fourier resampling, and the single-instance task untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.operator_eval import grid_residual_rms
from bench.registry import build_problem
from problems.base import ConfigError
from problems.solvers.ns_spectral import fno_forcing, resample
from problems.solvers.ns_spectral import grid as sp_grid

SMALL = {  # few trajectories per split: tests stay fast
    "smoke": {"train": 4, "val": 2, "test": 2},
    "standard": {"train": 4, "val": 2, "test": 2},
    "paper": {"train": 4, "val": 2, "test": 2},
}


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    torch.set_num_threads(1)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_generation_shapes_cache_and_corruption(tmp_path):
    p = build_problem("ns_vorticity")
    assert "operator_data" in p.capabilities and "solve" in p.capabilities
    calls = []
    d = p.operator_data("train", "smoke", progress=lambda k, n: calls.append((k, n)))
    assert d.inputs.shape == (8, 1, 32, 32) and d.outputs.shape == (8, 13, 1, 32, 32)
    assert np.array_equal(d.outputs[:, 0], d.inputs) and d.outputs.dtype == np.float32
    assert np.allclose(d.times, np.arange(13.0)) and np.allclose(d.grid[0], np.arange(32) / 32)
    assert calls[-1] == (8 * 12, 8 * 12) and not d.meta["cached"]
    assert np.abs(d.outputs[:, -1] - d.outputs[:, 0]).max() > 0.1  # the flow evolves
    again = p.operator_data("train", "smoke")
    assert again.meta["cached"] and np.array_equal(again.outputs, d.outputs)
    # a damaged cache file is detected and regenerated, never used
    (path,) = tmp_path.glob("op-ns_vorticity-train-*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    fresh = p.operator_data("train", "smoke")
    assert not fresh.meta["cached"] and np.array_equal(fresh.outputs, d.outputs)
    # the smoke and standard scales differ in their trajectories, so in their keys
    assert p.data_key("train", 8, "smoke") != p.data_key("train", 8, "standard")


def test_shell_fields_evolve_exactly_through_the_generation_path(monkeypatch):
    """Vorticity on the forcing's shell |m|^2 = 2 has u . grad w = 0, so from w0 on it
    w(t) = w* + (w0 - w*) exp(-8 pi^2 nu t) exactly, w* = f / (8 pi^2 nu) (also from w0 = 0)."""
    s, frames = 16, 50
    grid = {"s": s, "t_final": 50.0, "frames": 50}
    p = build_problem("ns_vorticity", data={**SMALL, "smoke": {**SMALL["smoke"], "grid": grid}})
    x = torch.as_tensor(sp_grid(s))
    X, Y = torch.meshgrid(x, x, indexing="ij")
    shell = torch.stack(
        [
            torch.sin(2 * math.pi * X) * torch.sin(2 * math.pi * Y),
            torch.cos(2 * math.pi * (X - Y)),
            torch.zeros_like(X),
            -3.0 * torch.sin(2 * math.pi * (X + Y)),
        ]
    )

    def draw(n: int, size: int, seed: int) -> torch.Tensor:
        assert size == s
        return shell[:n]

    monkeypatch.setattr(p, "draw_initial", draw)
    d = p.operator_data("train", "smoke")
    assert d.outputs.shape == (4, frames + 1, 1, s, s)
    decay = np.exp(-8 * math.pi**2 * p.nu * d.times)[None, :, None, None]
    w_star = (fno_forcing(s) / (8 * math.pi**2 * p.nu)).numpy()
    exact = w_star + (shell.numpy()[:, None] - w_star) * decay
    err = np.abs(d.outputs[:, :, 0] - exact).max()
    assert err < 2e-6 * np.abs(exact).max(), err
    assert np.abs(exact[:, -1] - exact[:, 0]).max() > 0.5  # it changes: the check can fail


def test_solve_reproduces_the_data_and_coarser_rungs_are_less_accurate():
    p = build_problem("ns_vorticity", data=SMALL)
    d = p.operator_data("test", "smoke")
    c = p.context
    start, times, truth = d.outputs[:, c - 1], d.times[c - 1 :], d.outputs[:, c:]
    ladder = p.classical_ladder()
    assert ladder[0] == {} and len(ladder) == 6
    errors = []
    for r in ladder:
        pred = p.solve(start, d.inputs, times, r)
        assert pred.shape == truth.shape and pred.dtype == np.float64
        errors.append(rel(pred, truth))
    assert errors[0] < 1e-6  # the data's own solver, from a float32 frame
    # coarser in time, then in space: each rung on each axis is less accurate
    assert errors[0] < errors[1] < errors[2], errors
    assert errors[2] <= errors[3] * 1.001 and errors[3] < errors[4] < errors[5], errors
    with pytest.raises(ConfigError, match="resolution"):
        p.solve(start, d.inputs, times, {"n": 16})
    with pytest.raises(ConfigError, match="resolution.dt"):
        p.solve(start, d.inputs, times, {"dt": 0.3})


def test_solve_converges_at_second_order_in_the_step():
    p = build_problem("ns_vorticity", data=SMALL)
    d = p.operator_data("val", "smoke")
    times = d.times[:3]
    fine = p.solve(d.outputs[:, 0], d.inputs, times, {"dt": 0.05 / 16})
    errors = [rel(p.solve(d.outputs[:, 0], d.inputs, times, {"dt": dt}), fine) for dt in (0.2, 0.1)]
    errors.append(rel(p.solve(d.outputs[:, 0], d.inputs, times, {"dt": 0.05}), fine))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(orders - 2) < 0.3), (errors, orders)
    euler = rel(p.solve(d.outputs[:, 0], d.inputs, times, {"dt": 0.05, "scheme": "euler"}), fine)
    assert euler > 10 * errors[-1]  # the scheme key is used


def test_resample_is_exact_on_resolved_fields():
    def field(s: int) -> torch.Tensor:
        x = torch.as_tensor(sp_grid(s))
        X, Y = torch.meshgrid(x, x, indexing="ij")
        return torch.sin(2 * math.pi * (X - 2 * Y)) + 0.3 * torch.cos(2 * math.pi * 3 * X) + 0.1

    assert torch.abs(resample(field(12), 40) - field(40)).max() < 1e-13
    assert torch.abs(resample(field(40), 12) - field(12)).max() < 1e-13
    noisy = field(40) + torch.cos(2 * math.pi * 15 * torch.as_tensor(sp_grid(40)))[:, None]
    assert torch.abs(resample(noisy, 12) - field(12)).max() < 1e-13  # high modes removed
    assert resample(field(16), 16) is not None and torch.equal(resample(field(16), 16), field(16))


def test_single_instance_task_and_kolmogorov_are_untouched():
    p = build_problem("ns_vorticity")
    q = build_problem("ns_vorticity", op_s=32, op_dt=0.05, data_seed=3)
    assert p._cache_key() == q._cache_key()  # the operator keys leave the reference alone
    assert p.data_key("train", 8) != q.data_key("train", 8)
    k = build_problem("kolmogorov")
    assert "operator_data" not in k.capabilities and "solve" not in k.capabilities


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"op_dt": 0.03}, "op_t_final / op_frames"),
        ({"op_scheme": "rk4"}, "op_scheme"),
        ({"op_frames": 5}, "op_frames"),
        ({"op_s": 4}, "op_s"),
        ({"data": {"smoke": {"grid": {"n": 3}}}}, "data.smoke.grid"),
        ({"data": {"paper": {"grid": {"frames": 7}}}}, "data.paper.grid.frames"),
        ({"op_device": "tpu"}, "op_device"),
        ({"data_seed": 1.5}, "data_seed"),
        ({"data": {"paper": {"train": -1}}}, "data.paper.train"),
    ],
)
def test_bad_config_names_the_key(kw, key):
    with pytest.raises(ConfigError, match=key):
        build_problem("ns_vorticity", **kw)


def test_grid_residual_of_the_data_falls_at_second_order_in_the_frame_spacing():
    """The discrete vorticity equation (`grid_residuals`) of the solver's trajectories falls at
    second order as the frames are refined (from t = 2 on, after the viscous decay of the
    random field's highest modes, which no frame spacing resolves)."""
    rms = []
    for frames in (12, 24, 48):
        settings = {"s": 32, "t_final": 12.0, "frames": frames}
        p = build_problem("ns_vorticity", data={"smoke": {"grid": settings}}, op_dt=0.0125)
        d = p.generate("test", 2, 5, scale="smoke")
        k = 2 * frames // 12
        # frames k - 2.. given, k.. scored: BDF2 throughout (its BDF1 start left out)
        u, t = d.outputs[:, k - 2 :], d.times[k - 2 :]
        rms.append(grid_residual_rms(p, u, d.inputs, t, skip=2))
    orders = np.log2(np.array(rms[:-1]) / np.array(rms[1:]))
    assert np.all(orders > 1.8) and rms[-1] < 2e-4, (rms, orders)
