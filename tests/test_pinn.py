"""The `pinn` method: its error falls, it respects every budget cap, it is deterministic, its
hyper-parameters are validated, and learning-rate annealing moves the weights."""

from __future__ import annotations

import math

import pytest
import torch

from bench.monitor import Monitor
from bench.registry import build_method, build_problem
from methods.base import Budget
from problems.base import ConfigError

# a small net on few points keeps each run to seconds on 2 cores
SMALL = dict(width=16, depth=4, n_collocation=1000, n_points={"ic": 100, "bc": 100})


@pytest.fixture(scope="module")
def burgers():
    return build_problem("burgers")


def _run(problem, budget, seed=0, dtype=torch.float64, **overrides):
    method = build_method("pinn", **{**SMALL, **overrides})
    method.seed, method.dtype = seed, dtype
    monitor = Monitor(budget, problem.reference())
    monitor.start()
    predictor = method.fit(problem, budget, monitor)
    monitor.finish()
    return monitor, predictor


def test_error_falls_on_burgers(burgers):
    budget = Budget(steps=500, eval_every=50)
    mon, pred = _run(burgers, budget, adam_steps=250)
    errors = [row["rel_l2"] for row in mon.curve]
    assert mon.stop_reason == "steps" and mon.step == 500
    assert errors[-1] < 0.5 * errors[0]
    assert errors[-1] < 0.35, errors  # observed 0.26 (0.88 at step 1): Adam, then L-BFGS
    assert mon.evals > mon.step  # L-BFGS line-search evaluations are counted
    row = mon.curve[-1]
    assert {"loss", "loss_pde", "loss_ic", "loss_bc"} <= set(row)
    assert math.isclose(row["loss"], row["loss_pde"] + row["loss_ic"] + row["loss_bc"])
    # the harness scores residuals through the predictor's Fields
    f = pred.fields(burgers.sample_interior(64))
    assert burgers.residual(f).shape == (64, 1)


@pytest.mark.parametrize("evals", [37, 40])
def test_lbfgs_respects_the_evaluation_cap(burgers, evals):
    budget = Budget(steps=10_000, evals=evals, eval_every=5)
    mon, _ = _run(burgers, budget, adam_steps=5)
    assert mon.evals <= evals
    assert mon.evals >= evals - 1  # stops only when no further iteration fits
    assert mon.step > 5  # L-BFGS ran


def test_lbfgs_stops_on_the_step_cap(burgers):
    budget = Budget(steps=12, eval_every=4)
    mon, _ = _run(burgers, budget, adam_steps=4)
    assert mon.stop_reason == "steps" and mon.step == 12


def test_runs_are_deterministic(burgers):
    budget = Budget(steps=60, eval_every=10)

    def curve():
        mon, _ = _run(burgers, budget, seed=3, adam_steps=40, resample_every=7)
        return [{k: v for k, v in row.items() if k != "seconds"} for row in mon.curve]

    first = curve()
    assert first == curve()
    other, _ = _run(burgers, budget, seed=4, adam_steps=40)
    assert other.curve[-1]["rel_l2"] != first[-1]["rel_l2"]


def test_float32_and_both_backends_train(burgers):
    budget = Budget(steps=30, eval_every=10)
    for backend in ("autograd", "taylor"):
        mon, _ = _run(burgers, budget, dtype=torch.float32, derivatives=backend, adam_steps=30)
        errors = [row["rel_l2"] for row in mon.curve]
        assert all(math.isfinite(e) for e in errors) and errors[-1] < errors[0]


def test_modified_mlp_with_fourier_features_trains(burgers):
    budget = Budget(steps=30, eval_every=10)
    mon, _ = _run(burgers, budget, net="modified_mlp", fourier_features=8, adam_steps=30)
    assert mon.curve[-1]["rel_l2"] < mon.curve[0]["rel_l2"]


def test_lra_updates_the_condition_weights(burgers):
    method = build_method("pinn", **SMALL, lra=True, lra_every=10)
    trainer = method.trainer(burgers)
    for _ in range(21):  # updates at Adam steps 0, 10 and 20
        scalars = trainer.adam_step()
    assert trainer.lam[0] == 1.0
    assert all(lam != 1.0 and math.isfinite(lam) and lam > 0 for lam in trainer.lam[1:])
    assert scalars["lambda_ic"] == trainer.lam[1] and scalars["lambda_bc"] == trainer.lam[2]
    # the weighted total is what Adam minimises
    expected = sum(lam * scalars[f"loss_{t}"] for t, lam in zip(trainer.terms, trainer.lam))
    assert math.isclose(scalars["loss"], expected, rel_tol=1e-12)


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"lr": -1}, "method.lr"),
        ({"lr": float("nan")}, "method.lr"),
        ({"width": 0}, "method.width"),
        ({"depth": 2.5}, "method.depth"),
        ({"net": "resnet"}, "method.net"),
        ({"activation": "relu"}, "method.activation"),
        ({"derivatives": "jax"}, "method.derivatives"),
        ({"decay_rate": 1.5}, "method.decay_rate"),
        ({"adam_steps": -1}, "method.adam_steps"),
        ({"lbfgs": "yes"}, "method.lbfgs"),
        ({"resample_every": -2}, "method.resample_every"),
        ({"weights": {"pde": -1.0}}, "method.weights.pde"),
        ({"n_points": {"ic": 0}}, "method.n_points.ic"),
        ({"n_collocation": 0}, "method.n_collocation"),
        ({"lra_alpha": 0}, "method.lra_alpha"),
    ],
)
def test_bad_hyperparameters_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method("pinn", **overrides)
