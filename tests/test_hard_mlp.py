"""`hard_moe`'s MLP backbone on single-instance problems (methods/hard_mlp.py): the experts'
boxes, the point system's Jacobian, the lazily re-solved predictor, training through the
harness, and what it refuses (pairs of points, experts that do not fit)."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

from bench.registry import build_method, build_problem
from bench.run import run_cell
from methods.base import Budget
from methods.hard_mlp import BoxExperts, HardPredictor, Trainer, box_blocks
from problems.base import Box, ConfigError

BUDGET = Budget(name="smoke", steps=10, points=64)


def test_experts_own_the_blocks_of_the_box_upper_faces_to_the_upper_block():
    ex = BoxExperts(Box({"x": (-1.0, 1.0), "t": (0.0, 1.0)}), (2, 3))
    pts = torch.tensor(
        [[-0.5, 0.1], [0.5, 0.1], [0.5, 0.5], [0.5, 0.9], [1.0, 1.0], [-1.0, 0.0], [0.0, 0.34]],
        dtype=torch.float64,
    )
    assert ex.of(pts).tolist() == [0, 3, 4, 5, 5, 0, 4]
    assert ex.n == 6


@pytest.mark.parametrize(("problem", "experts"), [("burgers", 2), ("kovasznay", [2, 2])])
def test_jacobian_of_the_point_system_matches_finite_differences(problem, experts):
    p = build_problem(problem)
    tr = Trainer(build_method("hard_moe", basis=3, experts=experts), p, BUDGET)
    system = tr.system(tr.gen)
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(tr.w.shape, generator=gen, dtype=torch.float64)
    F, J = system.residuals_and_jacobian(w)
    torch.testing.assert_close(F, system.residuals(w).detach())
    h = 1e-6
    for e in range(tr.experts.n):
        for k in range(3):
            dw = torch.zeros_like(w)
            dw[0, e, k] = h
            fd = (system.residuals(w + dw) - system.residuals(w - dw)).detach() / (2 * h)
            others = [i for i in range(tr.experts.n) if i != e]
            assert fd[0, others].abs().max() == 0  # an expert's w moves its own rows only
            torch.testing.assert_close(fd[0, e], J[0, e, k], rtol=1e-5, atol=1e-7)


def test_the_predictor_solves_for_the_current_net_not_the_last_step():
    p = build_problem("legendre")
    tr = Trainer(build_method("hard_moe", experts=[1]), p, BUDGET)
    pred = HardPredictor(tr)
    x = p.reference().points[:50]
    pred(x)
    w = tr.model.w.clone()
    with torch.no_grad():
        for q in tr.net.parameters():
            q.mul_(1.1)
    pred(x)
    assert torch.equal(tr.model.w, w)  # no training step since: no new solve
    pred.version += 1  # what a training step does
    pred(x)
    assert not torch.equal(tr.model.w, w)
    # the refreshed coefficients hold the ODE at fresh points as well as at the solve's
    f = pred.fields(torch.as_tensor(x, dtype=torch.float64))
    assert p.residual(f).abs().max() < 1.0


def test_training_makes_the_error_fall_through_the_harness(tmp_path):
    rec = run_cell(
        "hard_moe",
        "legendre",
        overrides=[
            "budget=smoke", "method.experts=[1]", "budget.steps=120", "budget.eval_every=40",
            "threads=1", "tracking.enabled=false", "eval.figures=false", "progress=off",
        ],
        output_dir=tmp_path,
    )  # fmt: skip
    assert rec["status"] == "ok", rec["message"]
    curve = pd.read_csv(tmp_path / "curve.csv")
    first, last = curve["rel_l2"].iloc[0], rec["metrics"]["rel_l2"]
    assert last < 1e-2 and last < first / 10, (first, last)
    assert curve["loss"].iloc[-1] < curve["loss"].iloc[0] / 10
    assert "loss_norm" in curve and "lm_iters" in curve
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"


def test_pairs_of_points_are_not_applicable_and_the_soft_baseline_points_to_pinn():
    why = build_method("hard_moe").applicable(build_problem("burgers_periodic"))
    assert why and "pointwise" in why and "'bc_x'" in why
    assert build_method("hard_moe").applicable(build_problem("burgers")) is None
    soft = build_method("soft_constraint").applicable(build_problem("burgers"))
    assert soft and "method.hard_constraints=false" in soft


def test_experts_per_axis_and_their_defaults():
    m = build_method("hard_moe", experts=4)
    assert box_blocks(m, build_problem("burgers")) == (4, 1)  # axes (x, t): space only
    assert box_blocks(build_method("hard_moe", experts=[2, 3]), build_problem("burgers")) == (
        2,
        3,
    )
    for name in ("kovasznay", "legendre"):  # steady: the blocks must be given
        why = m.applicable(build_problem(name))
        assert why and "give one count per axis" in why
        assert (
            build_method("hard_moe", experts=[1] * len(build_problem(name).axes)).applicable(
                build_problem(name)
            )
            is None
        )
    why = m.applicable(build_problem("hjb"))
    assert why and "sdgd_dims" in why
    build_method("hard_moe", experts=[1, 2, 2])  # a 2-D operator layout: checked per problem
    with pytest.raises(
        ConfigError, match=r"method\.experts=\[2, 2, 2\] needs 2 counts.*\('x', 't'\)"
    ):
        box_blocks(build_method("hard_moe", experts=[2, 2, 2]), build_problem("burgers"))


def test_experts_that_hold_no_condition_are_named_in_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="methods.hard_mlp"):
        Trainer(build_method("hard_moe", experts=[2]), build_problem("adler"), BUDGET)
    assert "expert(s) [1] hold no condition points" in caplog.text


def test_affine_terms_are_found_so_their_jacobian_is_formed_once_per_step():
    for name, expect in (("burgers", [False, True, True]), ("legendre", [True, True, True])):
        p = build_problem(name)
        tr = Trainer(build_method("hard_moe", experts=[1] * len(p.axes)), p, BUDGET)
        assert tr.affine == expect, (name, tr.names)


RUN = """
import torch
torch.set_num_threads(1)
from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.hard_mlp import fit_mlp
m = build_method("hard_moe", experts=2, basis=4, mlp_width=16, lm_iters=20)
losses = []
def report(step, evals=None, predictor=None, **s):
    losses.append(s["loss"])
    return step >= 15
pred = fit_mlp(m, build_problem("burgers"), Budget(name="smoke", steps=15, points=64), report)
print(repr(losses[-1]), repr(float(pred([[0.3, 0.5]])[0, 0])))
"""


def test_runs_do_not_depend_on_the_string_hash_seed():
    """Two processes with different hash seeds (set orders) give bit-identical runs."""
    import os
    import subprocess
    import sys

    out = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(
            [sys.executable, "-c", RUN], capture_output=True, text=True, env=env, check=True
        )
        out.append(res.stdout.strip().splitlines()[-1])
    assert out[0] == out[1]
