"""Harness scoring of multi-operator learners (bench/family_eval.py) through a real run: a user
method that integrates the equations it is given is exact on clean data, and the scores move
the way they must under observation noise and corrupted symbols."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import sympy as sp

from bench.family_eval import _rel_l2, solve_decoded
from bench.registry import METHODS, register_method
from bench.run import run_cell
from core.symbolic import encode_system
from methods.base import FamilyPredictor, Method

NAMES = {"t": sp.Symbol("t"), **{f"x{i}": sp.Symbol(f"x{i}") for i in range(3)}}


class _Integrate(FamilyPredictor):
    """Integrates the equations it is given from the first observed state (a classical
    solver that trusts its symbols); writes back the equations it was given."""

    def predict(self, observed, obs_times, query_times, dims, symbols):
        times = np.concatenate([obs_times[:1], query_times])
        out = np.zeros((len(observed), len(query_times), 3))
        for i, (eqs, d) in enumerate(zip(symbols, dims)):
            try:
                out[i, :, :d] = solve_decoded(eqs, observed[i, 0, :d], times, rtol=1e-10)[1:]
            except RuntimeError:
                out[i] = np.nan
        return out

    def equations(self, observed, obs_times, dims, symbols):
        return [encode_system([sp.sympify(e, locals=NAMES) for e in eqs]) for eqs in symbols]


class _Integrator(Method):
    needs = frozenset({"family_data"})

    def __init__(self, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps

    def fit(self, problem, budget, report):
        pred = _Integrate()
        for step in range(1, self.steps + 1):
            if report(step, predictor=pred, loss=1.0 / step):
                break
        return pred


@pytest.fixture
def integrator(tmp_path_factory):
    conf = tmp_path_factory.mktemp("userconf")
    (conf / "method").mkdir()
    (conf / "method" / "user_integrator.yaml").write_text("steps: 3\n")
    register_method("user_integrator")(_Integrator)
    yield f"hydra.searchpath=[file://{conf}]"
    METHODS.pop("user_integrator")


def test_errors_are_relative_over_the_true_components_only():
    ref = np.zeros((2, 4, 3))
    ref[0, :, 0] = 1.0
    ref[1, :, :2] = 2.0
    pred = ref.copy()
    pred[0, :, 1:] = 99.0  # padding components: not scored
    pred[1, :, 0] = 0.0
    np.testing.assert_allclose(_rel_l2(pred, ref, np.array([1, 2])), [0.0, np.sqrt(0.5)])


def test_a_run_scores_extrapolation_equations_and_robustness(tmp_path, integrator):
    rec = run_cell(
        "user_integrator",
        "ode_family",
        overrides=["budget=smoke", "eval.figures=false", "tracking.enabled=false", integrator],
        output_dir=tmp_path,
    )
    assert rec["status"] == "ok", rec.get("message")
    m = rec["metrics"]
    # exact symbols and the exact initial state: the integrator's own tolerance
    assert m["rel_l2"] < 1e-5 and m["rel_l2_systems"] < 1e-5
    assert m["equation_parse_rate"] == 1.0 and m["equation_solve_rate"] == 1.0
    assert m["rel_l2_equations"] < 1e-3  # constants rounded to the token precision
    # noise on the observed start and corrupted symbols hurt, more noise hurts more
    assert m["rel_l2"] < m["rel_l2_noise_0.02"] < m["rel_l2_noise_0.1"]
    assert m["rel_l2_corrupt_coef_0.05"] > 1e-4
    table = pd.read_csv(tmp_path / "robustness.csv")
    assert set(table["kind"]) == {"clean", "noise", "corrupt"} and len(table) == 8
    eqs = pd.read_csv(tmp_path / "equations.csv")
    assert len(eqs) == m["test_samples"] and eqs["decoded"].notna().all()
    with np.load(tmp_path / "predictions.npz") as z:
        assert z["prediction"].shape == z["reference"].shape
        assert z["prediction"].shape[1] == len(z["times"]) - 64  # the scored window only
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve["rel_l2"].notna().any()
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"


def test_decoded_blow_ups_and_stiff_messes_fail_fast():
    t = np.linspace(0.0, 6.0, 50)
    with pytest.raises(RuntimeError):
        solve_decoded(["x0**3"], np.array([1.0]), t)  # finite-time blow-up at t = 0.5
    y = solve_decoded(["-x0"], np.array([1.0]), t, rtol=1e-10)
    np.testing.assert_allclose(y[:, 0], np.exp(-t), rtol=1e-8)
