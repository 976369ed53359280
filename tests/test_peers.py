"""Peers' own implementations as rows (the optional extra `compare`): `deepxde` runs DeepXDE's
engine on our problem, `neuralop_fno` neuralop's FNO in our operator protocol. With the
packages, each trains through the harness and its error falls; without them, every cell is
`not_applicable` with the install line, and discovering the methods imports neither."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from bench.registry import build_method, build_problem
from bench.run import run_cell
from methods.base import Budget
from methods.deepxde import _import_deepxde, peer_classes
from methods.nets import SpectralConv
from problems.base import ConfigError
from problems.fields import Fields
from tests.conftest import REPO
from tests.test_operator_method import Transport1D

CELL = ["budget=smoke", "threads=1", "tracking.enabled=false", "eval.figures=false"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def dde():
    """DeepXDE, or a skip without the extra. Not `pytest.importorskip`: DeepXDE's import moves
    torch's default device to CUDA where there is one, which `_import_deepxde` undoes."""
    if importlib.util.find_spec("deepxde") is None:
        pytest.skip("needs the optional extra: pip install -e .[compare]")
    return _import_deepxde()


def first_and_final(rec: dict, run_dir) -> tuple[float, float]:
    curve = pd.read_csv(run_dir / "curve.csv")
    return float(curve["rel_l2"].iloc[0]), rec["metrics"]["rel_l2"]


def test_deepxde_adam_then_lbfgs_within_the_budget(tmp_path, dde):
    lbfgs_options = dict(dde.optimizers.LBFGS_options)
    overrides = [*CELL, "budget.steps=300", "budget.eval_every=50", "method.adam_steps=100"]
    rec = run_cell("deepxde", "legendre", overrides=overrides, output_dir=tmp_path / "r")
    assert rec["status"] == "ok", rec.get("message")
    assert rec["dtype"] == "float32"  # dtype=auto: DeepXDE's default float
    m = rec["metrics"]
    assert m["steps"] == 300 and rec["stop_reason"] == "steps"
    assert m["evals"] > 300  # L-BFGS's line searches count
    assert m["import_seconds"] > 0  # importing DeepXDE is not training
    first, final = first_and_final(rec, tmp_path / "r")
    assert final < 0.2 * first
    curve = pd.read_csv(tmp_path / "r" / "curve.csv")
    assert {"loss_pde", "loss_norm", "loss_regular"} <= set(curve.columns)
    # L-BFGS reports once per DeepXDE step; every multiple of eval_every still gets its row
    assert [s // 50 for s in curve["step"]] == [0, 1, 2, 3, 4, 5, 6]
    # DeepXDE's global state is as it was: other cells in the process are unaffected
    assert torch.get_default_dtype() == torch.float32 and dde.config.default_float() == "float32"
    assert dict(dde.optimizers.LBFGS_options) == lbfgs_options


def test_deepxde_in_float64_on_burgers(tmp_path, dde):
    overrides = [*CELL, "budget.steps=150", "budget.eval_every=50", "dtype=float64"]
    rec = run_cell("deepxde", "burgers", overrides=overrides, output_dir=tmp_path / "r")
    assert rec["status"] == "ok", rec.get("message")
    assert rec["dtype"] == "float64" and rec["metrics"]["steps"] == 150
    first, final = first_and_final(rec, tmp_path / "r")
    assert final < 0.8 * first
    assert torch.get_default_dtype() == torch.float32 and dde.config.default_float() == "float32"


def test_deepxde_losses_slice_one_batch_like_a_fields_per_term(dde):
    """DeepXDE's way (derivatives once over all points, sliced per term) gives each term the
    residual our per-block `Fields` gives, periodic pairs and their derivatives included."""
    problem = build_problem("burgers_periodic")
    conds = problem.conditions()
    assert "bc_x_d" in [c.name for c in conds]  # a condition on u_x
    gen = torch.Generator().manual_seed(0)
    sizes = [64] + [16] * len(conds)
    blocks = [problem.sample_interior(64, gen)] + [c.sample(16, gen) for c in conds]
    residuals = [problem.residual] + [c.residual for c in conds]
    ProblemData, _ = peer_classes(dde)
    terms = ["pde"] + [c.name for c in conds]
    data = ProblemData(torch.cat(blocks), sizes, residuals, terms, problem.axes, problem.fields)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net = net.double()
    x, _ = data.train_next_batch()
    x.requires_grad_(True)
    got = data.losses(None, net(x), lambda a, b: (a - b).square().mean(), x, None)
    want = [
        r(Fields(b, problem.axes, problem.fields, model=net)).square().mean()
        for r, b in zip(residuals, blocks)
    ]
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-12, atol=1e-14)


def test_deepxde_trains_on_the_points_of_our_pinn():
    problem = build_problem("burgers")
    budget = Budget(name="smoke", points=256)
    pinn = build_method("pinn", hard_constraints=False, derivatives="autograd")
    points, sizes = build_method("deepxde").training_points(problem, budget)
    assert torch.equal(points, torch.cat(pinn.trainer(problem, budget).batch))
    assert sizes == [256, 200, 200]


def test_neuralop_fno_cell_trains(tmp_path):
    pytest.importorskip("neuralop")
    overrides = [*CELL, "budget.steps=150", "budget.eval_every=50"]
    overrides += ["method.width=12", "method.modes=8", "method.layers=2", "method.lr=3e-3"]
    overrides += ["method.batch_size=4", "method.rollout_train=1", "method.val_every=50"]
    rec = run_cell("neuralop_fno", "burgers_op", overrides=overrides, output_dir=tmp_path / "r")
    assert rec["status"] == "ok", rec.get("message")
    assert rec["dtype"] == "float32" and rec["metrics"]["steps"] == 150
    first, final = first_and_final(rec, tmp_path / "r")
    assert final < 0.8 * first
    assert np.isfinite(rec["metrics"]["rel_l2_one_step"]) and rec["metrics"]["import_seconds"] > 0


@pytest.mark.parametrize("grid", [(32,), (16, 16)])
def test_neuralop_fno_keeps_our_frequencies(grid):
    """neuralop's `n_modes` as we set it keeps exactly the Fourier modes our `fno` keeps."""
    pytest.importorskip("neuralop")
    method = build_method("neuralop_fno", modes=4)
    method.dtype = torch.float32
    net = method.build_net(1, 1, len(grid), grid, None)
    theirs, ours = net.fno_blocks.convs[0], SpectralConv(1, 1, 4, len(grid))
    theirs.bias = None  # a constant offset, not a mode
    axes = torch.meshgrid(*[torch.arange(n) * 2 * torch.pi / n for n in grid], indexing="ij")

    def kept(layer: torch.nn.Module) -> set[tuple[int, ...]]:
        out = set()
        for k in np.ndindex(*(17,) * len(grid)):
            phase = sum((ki - 8) * a for ki, a in zip(k, axes))
            for wave in (torch.cos(phase), torch.sin(phase)):
                with torch.no_grad():
                    if layer(wave[None, None].float()).abs().max() > 1e-5:
                        out.add(tuple(ki - 8 for ki in k))
        return out

    assert kept(theirs) == kept(ours)


def test_neuralop_fno_keeps_complex_weights_and_refuses_float64():
    """The shared model preparation keeps neuralop's complex spectral weights complex (torch's
    `Module.to(dtype)` would drop their imaginary parts); float64 is refused."""
    pytest.importorskip("neuralop")
    method = build_method("neuralop_fno", width=8, modes=4, layers=1)
    method.dtype = torch.float32
    model, _, _ = method.prepare(Transport1D(), Budget(name="smoke"))
    weights = [p for p in model.parameters() if p.is_complex()]
    assert weights and all(w.dtype == torch.complex64 and w.imag.abs().max() > 0 for w in weights)
    method.dtype = torch.float64
    with pytest.raises(ConfigError, match="dtype=float32 or auto"):
        method.prepare(Transport1D(), Budget(name="smoke"))


def test_without_the_extra_cells_are_not_applicable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepxde", None)  # `import deepxde` fails, as uninstalled
    monkeypatch.setitem(sys.modules, "neuralop", None)
    install = "needs the optional extra: pip install -e .[compare]"
    for method, problem in (("deepxde", "burgers"), ("neuralop_fno", "burgers_op")):
        reason = build_method(method).applicable(build_problem(problem))
        assert reason == f"method {method!r} {install}"
    rec = run_cell("deepxde", "burgers", overrides=CELL, output_dir=tmp_path / "r")
    assert rec["status"] == "not_applicable" and install in rec["message"]


def test_discovering_the_methods_imports_no_peer():
    code = (
        "import sys; from bench import registry; registry.load_all(); "
        "assert {'deepxde', 'neuralop_fno'} <= set(registry.METHODS); "
        "print(sorted({'deepxde', 'neuralop'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
