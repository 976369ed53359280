"""The `bench` command started the real way: single run, multirun with joblib, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import BENCH, run_bench

pytestmark = pytest.mark.slow
FAST = ["budget=smoke", "budget.steps=40", "budget.eval_every=20", "eval.figures=false"]


def test_single_run_end_to_end(tmp_path):
    db = tmp_path / "store.db"
    out = tmp_path / "run"
    r = run_bench(
        "+method=pinn",
        "+problem=burgers",
        "budget=smoke",
        f"hydra.run.dir={out}",
        f"tracking.uri=sqlite:///{db}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["status"] == "ok" and rec["method"] == "pinn" and rec["problem"] == "burgers"
    assert 0 < rec["metrics"]["rel_l2"] < 1
    for f in ("curve.csv", "predictions.npz", "fields.png", "curve.png", ".hydra/config.yaml"):
        assert (out / f).exists(), f
    assert "rel_l2" in r.stdout and "status" in r.stdout  # the summary table
    assert ": started" in r.stdout and "console.py" not in r.stdout  # log lines, no source path
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("physbench")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the training view
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "pinn/burgers/0" and run.info.status == "FINISHED"
    assert run.data.tags["budget"] == "smoke" and "git_commit" in run.data.tags
    assert run.data.params["method.width"]
    assert len(client.get_metric_history(run.info.run_id, "eval/rel_l2")) >= 2
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "curve.csv", "predictions.npz", "fields.png"} <= arts


def test_multirun_jobs_take_turns_over_the_gpus(tmp_path):
    """device=auto on a (faked) two-GPU node: job k runs on cuda:{k % 2}. The fake (a
    sitecustomize that every Python process of the run imports) makes CUDA look available, so
    each job then fails at its first CUDA call, after recording its device."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import torch\n"
        "torch.cuda.is_available = lambda: True\n"
        "torch.cuda.device_count = lambda: 2\n"
    )
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    r = run_bench(
        "-m",
        "+method=pinn",
        "+problem=burgers",
        "seed=0,1,2",
        *FAST,
        "tracking.enabled=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={"PYTHONPATH": path},
    )
    recs = [
        json.loads((tmp_path / "sweep" / str(k) / "metrics.json").read_text()) for k in range(3)
    ]
    assert [(rec["seed"], rec["device"]) for rec in recs] == [
        (0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0"),
    ], r.stdout + r.stderr  # fmt: skip


def test_unknown_names_are_listed(tmp_path):
    r = run_bench("+method=nope", "+problem=burgers", cwd=tmp_path)
    assert r.returncode != 0
    assert "method/nope" in r.stderr and "pinn" in r.stderr
    r = run_bench("+method=pinn", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "0"})
    assert r.returncode == 2 and "no problem chosen" in r.stdout and "burgers" in r.stdout


def test_bad_value_rejected_naming_the_key(tmp_path):
    r = run_bench(
        "+method=pinn",
        "+problem=burgers",
        "budget.seconds=-5",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert "budget.seconds" in r.stdout and "Traceback" not in r.stdout + r.stderr
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec["status"] == "failed"


def _has_logged_an_evaluation(db) -> bool:
    try:
        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name("physbench")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return bool(runs and client.get_metric_history(runs[0].info.run_id, "eval/rel_l2"))
    except Exception:  # the store is still being created by the run
        return False


def test_ctrl_c_marks_killed_and_keeps_the_curve(tmp_path):
    db = tmp_path / "store.db"
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            BENCH,
            "+method=pinn",
            "+problem=burgers",
            "budget=standard",
            "budget.eval_every=10",
            "eval.figures=false",
            "threads=1",  # OpenMP threads crawl when another process holds a core
            f"hydra.run.dir={out}",
            f"tracking.uri=sqlite:///{db}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
        start_new_session=True,
        # a shell that started us in the background ignores SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not _has_logged_an_evaluation(db):
        time.sleep(1)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    rec = json.loads((out / "metrics.json").read_text())
    assert rec["status"] == "killed" and rec["metrics"]["steps"] > 0
    assert (out / "curve.csv").exists()
    client = MlflowClient(f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("physbench").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["status"] == "killed"
    assert client.get_metric_history(run.info.run_id, "eval/rel_l2")


def test_ctrl_c_during_a_store_write_is_raised_after_it():
    """A Ctrl-C inside a tracker write waits for the write to finish, then interrupts."""
    from bench.tracking import Tracker

    done = []

    def write():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal arrives while the write is still going
        done.append(True)
        return "written"

    tracker = Tracker("sqlite:///unused.db", "physbench")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(KeyboardInterrupt):
            tracker._guard("a write", write)
        assert done == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert tracker._guard("a write", lambda: "written") == "written"  # nothing pending
    finally:
        signal.signal(signal.SIGINT, previous)


def test_multirun_method_overrides_become_one_value_sweeps():
    """`bench -m +method=a,b method.lr=0.01` must apply lr in every job: Hydra applies a
    non-swept override before the method group exists, so the CLI makes it a sweep."""
    from bench.cli import sweep_safe

    args = ["-m", "+method=fno,dymixop", "method.lr=0.01", "method.modes=8,12", "seed=0,1"]
    args += ["problem.nu=0.02", "+problem=ks", "method.resolution={n: 64}", "budget=smoke"]
    assert sweep_safe(args) == [
        "-m",
        "+method=fno,dymixop",
        "method.lr=choice(0.01)",
        "method.modes=8,12",
        "seed=0,1",
        "problem.nu=choice(0.02)",
        "+problem=ks",
        "method.resolution=choice({n: 64})",
        "budget=smoke",
    ]
    single = ["+method=pinn", "+problem=burgers", "method.lr=0.01"]
    assert sweep_safe(single) == single  # a single run composes the group first: unchanged
