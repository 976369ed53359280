"""2-D Navier–Stokes problems: exact solutions satisfy the equations and conditions, the
hard-BC trial functions impose their data, pressure is scored up to a constant, and the
reference solvers are wired in correctly (the solvers' own accuracy: test_cavity_solver.py and
test_ns_spectral.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.registry import build_problem
from bench.scoring import score
from methods.base import Predictor
from methods.nets import OutputTransform, build_net
from problems.base import ConfigError, Reference
from problems.constraints import rectangle_trial, sample_boundary
from problems.fields import Fields


class ExactPredictor(Predictor):
    """A problem's exact solution as a predictor, optionally with its pressure shifted."""

    def __init__(self, problem, shift: float = 0.0) -> None:
        self.problem, self.shift = problem, shift

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack(self.problem._exact_torch(*x.unbind(1)), dim=1)
        return out + torch.tensor([0.0, 0.0, self.shift], dtype=out.dtype)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self._model(torch.as_tensor(points)).numpy()

    def fields(self, points: torch.Tensor) -> Fields:
        return Fields(points.double(), self.problem.axes, self.problem.fields, model=self._model)


@pytest.mark.parametrize("name", ["kovasznay", "taylor_green"])
def test_exact_solution_satisfies_equations_and_conditions(name):
    p = build_problem(name)
    pred = ExactPredictor(p)
    g = torch.Generator().manual_seed(0)
    f = pred.fields(p.sample_interior(500, g))
    assert p.residual(f).abs().max() < 1e-11
    assert p.diagnostics(f)["divergence"].abs().max() < 1e-12
    for c in p.conditions():
        r = c.residual(pred.fields(c.sample(64, g)))
        assert r.abs().max() < 1e-12, c.name
    # and a wrong viscosity breaks the equations (the check can fail)
    p.nu *= 2
    assert p.residual(f).abs().max() > 1e-3


def test_kovasznay_lambda_matches_published_values():
    assert build_problem("kovasznay").lam == pytest.approx(-1.81009812001, abs=1e-11)
    assert build_problem("kovasznay", re=40).lam == pytest.approx(-0.963740544196, abs=1e-11)


def test_pressure_is_scored_up_to_a_constant_and_divergence_is_reported():
    p = build_problem("kovasznay", nx=21, ny=21)
    out, pred = score(p, ExactPredictor(p, shift=3.0), 256, 0, torch.device("cpu"))
    assert out["rel_l2"] < 1e-13 and out["rel_l2/p"] < 1e-13
    assert out["rel_l2_velocity"] < 1e-13
    assert out["divergence_rms"] < 1e-13 and out["residual_rms"] < 1e-12
    # the gauge shifts the pressure only: a shifted velocity is an error
    ref = p.reference()
    bad = ref.values.copy()
    bad[:, 0] += 0.1
    assert np.array_equal(ref.align(bad)[:, :2], bad[:, :2])


def test_align_shifts_per_time_for_unsteady_problems():
    p = build_problem("taylor_green", nx=8, nt=3)
    ref = p.reference()
    assert ref.gauge == (2,) and ref.time_column == 2
    pred = ref.values.copy()
    pred[:, 2] += 1.0 + ref.points[:, 2] ** 2  # a different constant at each time
    assert np.abs(ref.align(pred) - ref.values).max() < 1e-13
    pred[:, 2] += ref.points[:, 0]  # not a constant: stays an error
    assert np.abs(ref.align(pred) - ref.values).max() > 0.1


def test_rectangle_trial_imposes_any_continuous_data():
    from problems.base import Box

    box = Box({"x": (-1.0, 2.0), "y": (0.5, 1.5)})
    data = "x**2 * y + sin(3 * y) - x"
    g = torch.Generator().manual_seed(1)
    net = build_net(box, 1, width=8, depth=2, generator=g)
    for sides in (("lo0", "hi0", "lo1", "hi1"), ("hi0",), ("lo1",)):
        trial = {"u": rectangle_trial(box, "u", data, sides)}
        model = OutputTransform(net, trial, ("x", "y"), ("u",), {})
        pts = sample_boundary(box, 200, g, sides)
        x, y = pts[:, 0], pts[:, 1]
        want = x**2 * y + torch.sin(3 * y) - x
        with torch.no_grad():
            got = model(pts.float()).double()[:, 0]
        assert (got - want).abs().max() < 1e-5, sides
        inside = box.sample(200, g)
        with torch.no_grad():
            assert (model(inside.float())[:, 0].double() - inside[:, 0] ** 2).abs().max() > 1e-3
    with pytest.raises(ValueError, match="sides"):
        rectangle_trial(box, "u", data, ("lo0", "hi1"))


def test_taylor_green_decays_exactly():
    p = build_problem("taylor_green")
    pts = np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 1.0]])
    u = p.exact(pts)[:, 0]
    assert u[1] / u[0] == pytest.approx(math.exp(-2 * p.nu * 1.0), rel=1e-14)


def test_cavity_wiring():
    p = build_problem("cavity", n=32, n_eval=17)
    ref = p.reference()
    assert ref.values.shape == (15 * 15, 3) and ref.shape == (15, 15)  # walls excluded
    assert ref.grid[0][0] == pytest.approx(1 / 16) and ref.grid[1][-1] == pytest.approx(15 / 16)
    u, v, pr = (ref.values[:, j].reshape(15, 15) for j in range(3))
    # the lid drags the fluid below it; the primary vortex turns clockwise: u < 0 lower down
    assert u[4:11, -1].min() > 0.3 and u[7, :10].min() < -0.1
    assert np.all(np.isfinite(pr)) and np.ptp(pr) > 0.1
    # the reference is the solver's solution at those nodes
    from problems.solvers.cavity import solve_cavity

    sol = solve_cavity(100.0, 32)
    assert np.array_equal(u, sol.u[2:-2:2, 2:-2:2]) and np.array_equal(pr, sol.p[2:-2:2, 2:-2:2])
    assert "trial" not in p.capabilities  # a uniform lid has no continuous lifting
    assert "trial" in build_problem("cavity", lid="smooth").capabilities


def test_cavity_bad_input_names_the_key():
    with pytest.raises(ConfigError, match="lid"):
        build_problem("cavity", lid="wobbly")
    with pytest.raises(ConfigError, match="n_eval"):
        build_problem("cavity", n=100, n_eval=129)
    with pytest.raises(ConfigError, match="re"):
        build_problem("cavity", re=-1.0)


def test_ns_vorticity_reference_is_consistent():
    p = build_problem("ns_vorticity", s=16, t_final=0.3, nt=4, dt=1e-3)
    ref = p.reference()
    assert ref.shape == (16, 16, 4)
    vals = ref.values.reshape(16, 16, 4, 3)  # x, y, t, field
    w0, u0, v0 = p.initial()
    assert np.abs(vals[:, :, 0, 0] - w0.numpy()).max() == 0.0
    assert np.abs(vals[..., 0].mean(axis=(0, 1))).max() < 1e-12  # zero-mean vorticity
    # the velocity is the curl-inverse of w: spectral curl of (u, v) gives back w at every
    # time, on every mode but the Nyquist ones (whose derivative a real grid cannot represent)
    m = np.fft.fftfreq(16, d=1 / 16)
    kx, ky = np.meshgrid(2 * np.pi * m, 2 * np.pi * m, indexing="ij")
    keep = (np.abs(m)[:, None] < 8) & (np.abs(m)[None, :] < 8)
    for it in range(4):
        uh, vh = np.fft.fft2(vals[:, :, it, 1]), np.fft.fft2(vals[:, :, it, 2])
        wh = np.fft.fft2(vals[:, :, it, 0])
        curl = 1j * kx * vh - 1j * ky * uh
        assert np.abs(curl - wh)[keep].max() < 1e-10 * np.abs(wh).max()
    # the vorticity moves (the reference is a real trajectory, not a copy of w0)
    assert np.abs(vals[:, :, 3, 0] - vals[:, :, 0, 0]).max() > 1e-3
    # initial-condition residual of the reference itself vanishes on grid nodes
    cond = {c.name: c for c in p.conditions()}["ic"]
    pts = cond.sample(32, torch.Generator().manual_seed(0))
    values = Reference(ref.points, ref.values, grid=ref.grid)(pts.numpy())
    fields = Fields(pts, p.axes, p.fields, values=torch.as_tensor(values))
    assert cond.residual(fields).abs().max() < 1e-10


def test_ns_vorticity_rejects_inconsistent_time_step():
    with pytest.raises(ConfigError, match="dt"):
        build_problem("ns_vorticity", t_final=1.0, nt=3, dt=0.3)


def test_kolmogorov_laminar_state_satisfies_the_equations():
    p = build_problem("kolmogorov")
    k, nu, drag, scale = p.k, p.nu, p.drag, p.scale
    amp = scale / (nu * (2 * math.pi * k) ** 2 + drag)

    def laminar(x: torch.Tensor) -> torch.Tensor:
        y = x[:, 1]
        u = amp * torch.sin(2 * math.pi * k * y)
        w = -2 * math.pi * k * amp * torch.cos(2 * math.pi * k * y)
        return torch.stack([w, u, torch.zeros_like(u)], dim=1)

    pts = p.sample_interior(300, torch.Generator().manual_seed(0))
    f = Fields(pts, p.axes, p.fields, model=laminar)
    assert p.residual(f).abs().max() < 1e-10 * amp * k**2
    p.drag = 0.0  # without the drag term it is not steady: the check can fail
    assert p.residual(Fields(pts, p.axes, p.fields, model=laminar)).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="k"):
        build_problem("kolmogorov", k=30)
