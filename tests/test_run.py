"""The run path in-process: statuses, metrics.json on every path, tracking that may fail."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from bench.registry import METHODS, register_method
from bench.run import pick_device, run_cell
from methods.base import Method, Predictor, TorchPredictor

SMOKE = ["budget=smoke", "budget.steps=60", "budget.eval_every=20", "eval.figures=false"]


class _Linear(Method):
    """A one-file user method: least squares on nothing, loss goes NaN at step `nan_at`."""

    needs = frozenset({"residual"})

    def __init__(self, nan_at: int = 0, needs_extra: bool = False) -> None:
        super().__init__()
        self.nan_at = nan_at
        if needs_extra:
            self.needs = frozenset({"residual", "operator_data"})

    def fit(self, problem, budget, report) -> Predictor:
        net = torch.nn.Linear(len(problem.axes), len(problem.fields)).double()
        pred = TorchPredictor(net, problem.axes, problem.fields)
        for step in range(1, budget.steps + 1):
            loss = float("nan") if self.nan_at and step >= self.nan_at else 1.0 / step
            if report(step, predictor=pred, loss=loss):
                break
        return pred


@pytest.fixture
def user_method(tmp_path_factory):
    """Register the method and its YAML the way a user's own config directory would."""
    conf = tmp_path_factory.mktemp("userconf")
    (conf / "method").mkdir()
    (conf / "method" / "user_linear.yaml").write_text("nan_at: 0\nneeds_extra: false\n")
    SMOKE.append(f"hydra.searchpath=[file://{conf}]")
    register_method("user_linear")(_Linear)
    yield "user_linear"
    METHODS.pop("user_linear")
    SMOKE.pop()


def test_ok_run_writes_everything(tmp_path, user_method):
    rec = run_cell(user_method, "burgers", overrides=SMOKE, output_dir=tmp_path)
    assert rec["status"] == "ok" and rec["stop_reason"] == "steps"
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["metrics"]["steps"] == 60
    for key in (
        "rel_l2",
        "rel_l2/u",
        "max_abs_err",
        "rmse",
        "residual_rms",
        "train_seconds",
        "n_params",
        "peak_rss_mb",
        "evals",
    ):
        assert np.isfinite(on_disk["metrics"][key]), key
    assert (tmp_path / "curve.csv").exists() and (tmp_path / "predictions.npz").exists()
    run = mlflow.get_run(rec["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["status"] == "ok" and run.data.tags["method"] == user_method
    assert run.data.params["budget.steps"] == "60"
    # the float32 settings beside the dtype (TF32 changes float32 results on a GPU)
    assert on_disk["precision"] == {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    assert run.data.tags["dtype"] == on_disk["dtype"] == "float64"
    assert {k: run.data.tags[k] for k in on_disk["precision"]} == {
        k: str(v).lower() for k, v in on_disk["precision"].items()
    }
    assert run.data.metrics["rel_l2"] == pytest.approx(on_disk["metrics"]["rel_l2"])
    # artifacts sit beside the SQLite file, not somewhere MLflow guessed
    store_dir = Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///") :]).parent
    art = Path(run.info.artifact_uri.removeprefix("file://"))
    assert art.is_relative_to(store_dir / "mlartifacts")
    assert (art / "metrics.json").is_file()


def test_predictions_off_writes_the_same_numbers_without_the_array_file(tmp_path, user_method):
    """`eval.predictions=false` (the CI gate's setting) drops predictions.npz, nothing else."""
    on = run_cell(user_method, "burgers", overrides=SMOKE, output_dir=tmp_path / "on")
    off = run_cell(
        user_method,
        "burgers",
        overrides=[*SMOKE, "eval.predictions=false"],
        output_dir=tmp_path / "off",
    )
    assert (tmp_path / "on" / "predictions.npz").is_file()
    assert not (tmp_path / "off" / "predictions.npz").exists()
    assert (tmp_path / "off" / "curve.csv").is_file()
    assert off["metrics"]["rel_l2"] == on["metrics"]["rel_l2"]


def test_diverged_run_keeps_its_curve(tmp_path, user_method):
    rec = run_cell(
        user_method, "burgers", overrides=[*SMOKE, "method.nan_at=30"], output_dir=tmp_path
    )
    assert rec["status"] == "diverged" and "step 30" in rec["message"]
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    assert len(curve) >= 3  # header, steps 20 and 30
    assert mlflow.get_run(rec["mlflow_run_id"]).data.tags["status"] == "diverged"


def test_incompatible_pair_is_not_applicable(tmp_path, user_method, capsys):
    rec = run_cell(
        user_method, "burgers", overrides=[*SMOKE, "method.needs_extra=true"], output_dir=tmp_path
    )
    assert rec["status"] == "not_applicable"
    assert "operator_data" in rec["message"]
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "not_applicable"
    assert "not applicable" in capsys.readouterr().out


def test_unreachable_store_keeps_local_results(tmp_path, user_method, capsys):
    rec = run_cell(
        user_method,
        "burgers",
        overrides=[*SMOKE, "tracking.uri=http://127.0.0.1:9"],
        output_dir=tmp_path,
    )
    assert rec["status"] == "ok" and rec["mlflow_run_id"] is None
    assert (tmp_path / "metrics.json").exists()
    assert "tracking off" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override,key",
    [
        ("dtype=float16", "dtype"),
        ("seed=-3", "seed"),
        ("budget.steps=0", "budget.steps"),
        ("device=tpu", "device"),
        ("problem.nu=-1", "nu"),
        ("threads=0", "threads"),
    ],
)
def test_bad_config_fails_before_training(tmp_path, user_method, override, key):
    rec = run_cell(user_method, "burgers", overrides=[*SMOKE, override], output_dir=tmp_path)
    assert rec["status"] == "failed"
    assert rec["message"].startswith("config error") and key in rec["message"]
    assert "steps" not in rec["metrics"]  # nothing was trained
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_auto_device_gives_each_multirun_job_its_own_gpu(monkeypatch):
    """On a node with several GPUs, job k of a multirun takes GPU k mod count; a single run,
    an explicit device and a CPU-only machine are left alone (CUDA faked: no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [str(pick_device("auto", job)) for job in range(5)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1",
    ]  # fmt: skip
    assert str(pick_device("auto")) == "cuda"  # a single run: the current GPU
    assert str(pick_device("cuda:2", job=4)) == "cuda:2"
    assert str(pick_device("cpu", job=1)) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(pick_device("auto", job=4)) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert str(pick_device("auto", job=4)) == "cpu"


def test_only_a_non_finite_loss_is_a_divergence():
    """A validation score of a rollout that blew up is logged as it is; the run goes on."""
    from bench.monitor import Monitor
    from methods.base import Budget

    mon = Monitor(Budget(steps=10, eval_every=5), lambda predictor: 0.5)
    assert mon(1, loss=1.0, val_rel_l2=float("inf")) is False and not mon.diverged
    assert mon(2, loss=float("nan")) is True and mon.diverged and mon.stop_reason == "diverged"


def test_a_method_without_checkpoints_says_a_resumed_run_starts_over(tmp_path, user_method, capsys):
    """A method with its own loop that never registers state (report.checkpoint) is rerun from
    scratch when asked to continue a checkpoint, and the run says so."""
    resume = f"checkpoint.resume_from={tmp_path}"
    rec = run_cell(user_method, "burgers", overrides=[*SMOKE, resume], output_dir=tmp_path / "r")
    assert rec["status"] == "ok" and rec["metrics"]["steps"] == 60
    assert "saves no checkpoints" in capsys.readouterr().out and "resumed_from" not in rec
