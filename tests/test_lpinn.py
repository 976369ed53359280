"""The `lpinn` method: its error falls, its inverse map solves x0 + D(x0, t) = x, its
characteristics are degree-one lifts, its hyper-parameters are validated, it says when it does not
apply, and it is deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from bench import registry
from bench.monitor import Monitor
from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.lpinn import LagrangianNet, LPINNPredictor, Trainer
from problems.base import Box, Characteristics, ConfigError, Problem, Reference, grid_points

TWO_PI = 2.0 * math.pi
# small nets on a coarse label grid keep each run to seconds on 2 cores
SMALL = dict(width_u=16, depth_u=3, width_x=16, depth_x=2, n_x0=32, n_t=11)


class ToyConvection(Problem):
    """u_t + c u_x = nu u_xx on [0, 2 pi) periodic, t in [0, 1], u0 = sin x (exact solution);
    `axes` may be reversed to check the predictor's column order."""

    name = "toy_convection"
    fields = ("u",)

    def __init__(self, c: float = 10.0, nu: float = 0.0, axes=("x", "t")) -> None:
        super().__init__(c=c, nu=nu, axes=tuple(axes))
        self.c, self.nu, self.axes = c, nu, tuple(axes)
        bounds = {"x": (0.0, TWO_PI), "t": (0.0, 1.0)}
        self.domain = Box({a: bounds[a] for a in self.axes})

    def residual(self, f):
        return (f.d("u", "t") + self.c * f.d("u", "x") - self.nu * f.d("u", "x", "x"))[:, None]

    def conditions(self):
        return []

    def exact(self, points: np.ndarray) -> np.ndarray:
        x, t = points[:, self.axes.index("x")], points[:, self.axes.index("t")]
        return (np.exp(-self.nu * t) * np.sin(x - self.c * t))[:, None]

    def _compute_reference(self) -> Reference:
        grids = {"x": np.linspace(0.0, TWO_PI, 64, endpoint=False), "t": np.linspace(0, 1, 21)}
        g = [grids[a] for a in self.axes]
        pts = grid_points(*g)
        return Reference(pts, self.exact(pts), exact=self.exact, grid=g)

    def reference(self) -> Reference:  # in memory only: no cache files from tests
        if self._reference is None:
            self._reference = self._compute_reference()
        return self._reference

    def characteristics(self) -> Characteristics:
        c = self.c
        return Characteristics(
            "x", (0.0, TWO_PI), lambda u: torch.full_like(u, c), self.nu, torch.sin, True
        )


class TwoFields(ToyConvection):
    fields = ("u", "v")


def _run(problem, budget, seed=0, **overrides):
    method = build_method("lpinn", **{**SMALL, **overrides})
    method.seed, method.dtype = seed, torch.float64
    monitor = Monitor(budget, problem.reference())
    monitor.start()
    predictor = method.fit(problem, budget, monitor)
    monitor.finish()
    return monitor, predictor


@pytest.mark.parametrize(
    "overrides,limit",
    [
        ({}, 1e-3),  # observed 2e-5 (1.0 at step 1)
        # the paper's soft initial conditions train far more slowly: observed 0.033 (1.0)
        ({"hard_ic": False, "adam_steps": 100, "x_scale": 10.0}, 0.1),
    ],
)
def test_error_falls_on_convection(overrides, limit):
    budget = Budget(steps=500, eval_every=50)
    mon, pred = _run(ToyConvection(c=10.0), budget, **{"adam_steps": 200, **overrides})
    errors = [row["rel_l2"] for row in mon.curve]
    assert mon.stop_reason == "steps" and mon.step == 500
    assert errors[-1] < 0.1 * errors[0] and errors[-1] < limit, errors
    assert mon.evals > mon.step  # L-BFGS ran, its line-search evaluations counted
    row = mon.curve[-1]
    terms = ["x", "u"] + ([] if overrides.get("hard_ic", True) else ["ic_x", "ic_u"])
    assert {f"loss_{t}" for t in terms} <= set(row)
    gammas = {"x": 10.0, "u": 1.0, "ic_x": 1000.0, "ic_u": 1000.0}
    assert math.isclose(row["loss"], sum(gammas[t] * row[f"loss_{t}"] for t in terms))
    assert pred.fields(torch.zeros(4, 2, dtype=torch.float64)) is None  # no Eulerian view
    assert pred.n_params() == sum(p.numel() for p in pred.net.parameters()) > 0


@pytest.mark.skipif("convection" not in registry.problems(), reason="problems/convection.py")
def test_error_falls_on_the_registered_convection_problem():
    p = build_problem("convection", c=30.0, nx=64, nt=21)
    mon, _ = _run(p, Budget(steps=400, eval_every=100), adam_steps=200)
    assert mon.curve[-1]["rel_l2"] < 1e-2 < mon.curve[0]["rel_l2"]


def test_the_smoke_budget_caps_the_label_grid():
    m = build_method("lpinn")
    tr = Trainer(m, ToyConvection(), max_points=Budget.from_dict({"points": 256}).points)
    assert len(tr.points) == tr.n * tr.m <= 256 and tr.m >= 2
    assert m.grid() == (64, 25)  # the default grid when uncapped
    assert build_method("lpinn", n_x0=256, n_t=100).grid(6400) == (128, 50)
    # time-major: the first row is t = t0 at the labels lo + P k / n
    x0 = TWO_PI * torch.arange(tr.n, dtype=torch.float64) / tr.n
    assert torch.equal(tr.points[: tr.n, 0], x0) and bool((tr.points[: tr.n, 1] == 0).all())


def test_hard_initial_conditions_hold_exactly():
    tr = Trainer(build_method("lpinn", **SMALL, hard_ic=True), ToyConvection())
    assert tr.terms == ["x", "u"] and len(tr.losses()) == 2
    out = tr.net(tr.points[: tr.n])
    assert torch.equal(out[:, 0], torch.zeros(tr.n, dtype=out.dtype))
    assert torch.allclose(out[:, 1], torch.sin(tr.points[: tr.n, 0]), rtol=0, atol=1e-15)


# -- the displacement form and its inverse --------------------------------------------------------
class Hand(nn.Module):
    """A hand-set branch `[N, 3] -> [N, 1]` of (cos theta, sin theta, s)."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))  # a dtype for predictors

    def forward(self, z):
        return self.fn(z[:, 0], z[:, 1], z[:, 2])[:, None] + self.dummy


def _hand_net(d, u=lambda c, s, t: c + 2 * s + t):
    return LagrangianNet(Hand(u), Hand(d), (0.0, TWO_PI), (0.0, 1.0))


@pytest.mark.parametrize(
    "c,amp,monotone",
    [(10.0, 0.3, True), (70.0, 0.9, True), (50.0, 2.0, False)],  # X_x0 = 1 + amp t cos x0
)
def test_the_predictor_inverts_the_characteristics(c, amp, monotone):
    net = _hand_net(lambda cs, sn, s: c * s + amp * sn * s)
    pred = LPINNPredictor(net, ("x", "t"), "x")
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([TWO_PI * torch.rand(4000, generator=g), torch.rand(4000, generator=g)], 1)
    pts = torch.cat([pts, torch.tensor([[0.0, 0.0], [0.0, 1.0], [TWO_PI - 1e-12, 0.7]])])
    x0, t = pred.labels(pts.numpy())
    x, t_ref = pts[:, 0], pts[:, 1]
    assert torch.equal(t, t_ref)
    with torch.no_grad():
        err = (x0 + net.displacement(x0, t) - x).abs().max().item()
        u = net.state(x0, t)
    assert err < 1e-10
    np.testing.assert_array_equal(pred(pts.numpy())[:, 0], u.numpy())
    if monotone:  # the unique solution: a scalar root finder agrees
        for i in range(0, len(pts), 400):
            xi, ti = float(x[i]), float(t[i])
            root = brentq(lambda y, xi=xi, ti=ti: y + (c + amp * math.sin(y)) * ti - xi, -c - 7, 7)
            assert abs(float(x0[i]) - root) < 1e-10


def test_the_predictor_follows_the_problems_axis_order():
    net = _hand_net(lambda cs, sn, s: 30 * s + 0.5 * sn * s)
    pts = np.random.default_rng(0).uniform([0, 0], [TWO_PI, 1], size=(500, 2))
    a = LPINNPredictor(net, ("x", "t"), "x")(pts)
    b = LPINNPredictor(net, ("t", "x"), "x")(pts[:, ::-1].copy())
    np.testing.assert_array_equal(a, b)


def test_characteristics_are_degree_one_lifts():
    tr = Trainer(build_method("lpinn", **SMALL, hard_ic=False), ToyConvection(c=30.0))
    p = tr.points
    shifted = p + torch.tensor([TWO_PI, 0.0], dtype=p.dtype)
    with torch.no_grad():
        X = p[:, 0] + tr.net(p)[:, 0]  # noqa: N806
        X_shift = shifted[:, 0] + tr.net(shifted)[:, 0]  # noqa: N806
        U, U_shift = tr.net(p)[:, 1], tr.net(shifted)[:, 1]  # noqa: N806
    torch.testing.assert_close(X_shift, X + TWO_PI, rtol=0, atol=1e-12)
    torch.testing.assert_close(U_shift, U, rtol=0, atol=1e-12)


def test_exact_diffusion_matches_the_papers_for_straight_characteristics():
    """With D independent of x0 (X_x0 = 1), (U_x0 / X_x0)_x0 / X_x0 = U_x0x0."""
    p = ToyConvection(c=5.0, nu=0.1)
    res = {}
    for form in ("paper", "exact"):
        tr = Trainer(build_method("lpinn", **SMALL, diffusion=form), p)
        tr.net.x_branch = Hand(lambda cs, sn, s: 5.0 * s + s * s)
        res[form] = tr.residuals()[1]
    torch.testing.assert_close(res["paper"], res["exact"], rtol=1e-12, atol=1e-12)


# -- configuration and applicability --------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value",
    [
        ("width_u", 0),
        ("depth_x", 1.5),
        ("activation", "relu"),
        ("gamma_ic", -1.0),
        ("norm", "l1"),
        ("diffusion", "chain"),
        ("hard_ic", "yes"),
        ("x_scale", 0.0),
        ("n_t", 1),
        ("lr", float("nan")),
        ("decay_rate", 1.5),
        ("adam_steps", -1),
        ("lbfgs_max_eval", 1),
    ],
)
def test_bad_values_are_rejected_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"method\.{key}"):
        build_method("lpinn", **{key: value})


def test_not_applicable_reasons_are_one_clear_line():
    m = build_method("lpinn")
    reason = m.applicable(build_problem("burgers"))
    assert reason and "characteristics" in reason and "\n" not in reason
    reason = m.applicable(TwoFields())
    assert reason and "one field" in reason and "\n" not in reason
    assert m.applicable(ToyConvection()) is None
    assert m.applicable(ToyConvection(axes=("t", "x"))) is None


def test_same_seed_same_run():
    budget = Budget(steps=60, eval_every=20)
    runs = [_run(ToyConvection(), budget, adam_steps=30) for _ in range(2)]
    (m1, p1), (m2, p2) = runs

    def strip(curve):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in curve]

    assert strip(m1.curve) == strip(m2.curve)
    pts = ToyConvection().reference().points
    np.testing.assert_array_equal(p1(pts), p2(pts))
    m3, _ = _run(ToyConvection(), budget, seed=1, adam_steps=30)
    assert strip(m3.curve) != strip(m1.curve)
