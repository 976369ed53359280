"""Operator cells end to end through the harness (`run_cell`, as the CLI composes them):
data generated once and cached, scored on the test split, written and tracked."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from bench.run import run_cell

TINY_FNO = [
    "method.width=8",
    "method.modes=4",
    "method.proj=16",
    "method.batch_size=4",
    "method.rollout_train=2",
    "method.val_every=20",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_fno_cell_writes_scores_and_tracks(tmp_path, cache):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["budget=smoke", "budget.steps=40", "budget.eval_every=20", "threads=1"]
    overrides += [*TINY_FNO, f"tracking.uri={uri}"]
    rec = run_cell("fno", "burgers_op", overrides=overrides, output_dir=tmp_path / "run")
    assert rec["status"] == "ok", rec.get("message")
    assert rec["dtype"] == "float32"  # dtype=auto: operator learners' precision
    m = rec["metrics"]
    for key in (
        "rel_l2",
        "rel_l2_std",
        "rel_l2_one_step",
        "rel_l2_final_time",
        "inference_seconds_per_sample",
        "data_seconds",
        "speedup_at_matched_error",
        "n_params",
        "train_seconds",
        "pde_residual",  # burgers_op has grid residuals: the discrete PDE of the prediction
        "pde_residual_data",  # ... and of the true frames
    ):
        assert np.isfinite(m[key]), key
    assert m["steps"] == 40 and m["data_cached"] == 0.0 and m["data_seconds"] > 0
    run = tmp_path / "run"
    growth = pd.read_csv(run / "rollout_error.csv")
    assert len(growth) == m["rollout_steps"] and (growth["rel_l2_mean"] > 0).all()
    # the harness's curve (test samples) beside the method's own validation score
    assert {"rel_l2", "val_rel_l2", "loss"} <= set(pd.read_csv(run / "curve.csv").columns)
    with np.load(run / "predictions.npz") as z:
        assert z["prediction"].shape == z["reference"].shape
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    tracked = mlflow.MlflowClient(uri).get_run(rec["mlflow_run_id"])
    assert tracked.data.metrics["data_seconds"] == pytest.approx(m["data_seconds"])

    # a second run reads the cached data: same data cost, reported as cached
    again = run_cell("fno", "burgers_op", overrides=overrides, output_dir=tmp_path / "again")
    assert again["metrics"]["data_cached"] == 1.0
    assert again["metrics"]["data_seconds"] == pytest.approx(m["data_seconds"])
    assert again["metrics"]["rel_l2"] == pytest.approx(m["rel_l2"])  # deterministic on CPU


def test_classical_rungs_trade_accuracy_for_cost(tmp_path, cache):
    errs = []
    for rung in (0, 2, 4):
        rec = run_cell(
            "classical",
            "burgers_op",
            overrides=["budget=smoke", "eval.figures=false", f"method.rung={rung}"],
            output_dir=tmp_path / str(rung),
        )
        assert rec["status"] == "ok", rec.get("message")
        errs.append(rec["metrics"]["rel_l2"])
    assert errs[0] < 1e-5 < errs[1] < errs[2]
    bad = run_cell(
        "classical",
        "burgers_op",
        overrides=["budget=smoke", "method.rung=99"],
        output_dir=tmp_path / "bad",
    )
    assert bad["status"] == "failed" and "method.rung=99" in bad["message"]


def test_pointwise_methods_are_not_applicable_to_operator_only_problems(tmp_path, cache):
    rec = run_cell("pinn", "ks", overrides=["budget=smoke"], output_dir=tmp_path)
    assert rec["status"] == "not_applicable" and "['residual']" in rec["message"]
