"""Grids on the launchers, each started the real way: joblib's processes, a Ray cluster from
`ray start`, submitit's local executor (the pickling path of submitit_slurm), and a
`mlflow server` that many jobs write to at once. SLURM itself: `make slurm-test`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.cli import LAUNCHER_EXTRAS, missing_launcher
from tests.conftest import REPO, run_bench

pytestmark = pytest.mark.slow
FAST = ["budget=smoke", "budget.steps=20", "budget.eval_every=10", "eval.figures=false"]
BIN = Path(sys.executable).parent
VENV = BIN.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """End a process started in its own session, and what it started, by its group id:
    SIGTERM, `grace` seconds, then SIGKILL to whatever of the group is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def one_parent(uri: str, n: int) -> list:
    """The grid's runs, after checking: one parent, n finished children under it, none lost."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("physbench").experiment_id])
    parents = [r for r in runs if r.data.tags.get("physbench.parent") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == n and len(runs) == n + 1, [
        (r.info.run_name, r.data.tags) for r in runs
    ]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {c.data.tags["seed"] for c in children} == {str(i) for i in range(n)}
    assert all(c.data.tags["status"] == "ok" for c in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    return children


def test_ray_grid_on_a_ray_cluster(tmp_path):
    """A 4-job grid on a Ray cluster started by `ray start --head` (2 CPUs): each job is a
    Ray task in a worker process of that cluster, which does not inherit the launcher's
    environment; all four land as children of one parent run. `make setup` installs the
    extra 'ray', so this runs in CI and fails there if the extra does not install."""
    port = free_port()
    # A private token for this cluster (Ray's default token lives in ~/.ray); a short
    # temp dir, since Ray's socket paths must stay under the OS's length limit.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    log = (tmp_path / "head.log").open("w")
    head = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--object-store-memory=100000000", "--disable-usage-stats", f"--temp-dir={temp}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in (tmp_path / "head.log").read_text():
            assert head.poll() is None, (tmp_path / "head.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "head.log").read_text()
            time.sleep(0.5)
        db = tmp_path / "store.db"
        r = run_bench(
            "-m",
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
            "+method=pinn",
            "+problem=burgers",
            "seed=0,1,2,3",
            *FAST,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"tracking.uri=sqlite:///{db}",
            cwd=tmp_path,
            env=env,
        )
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "Connecting to existing Ray cluster" in out and f":{port}..." in out, out
        # Ray prefixes a task's output with the task's name and its worker's pid
        workers = {line.split("pid=")[1].split(")")[0] for line in out.splitlines()
                   if "(_run_job pid=" in line}  # fmt: skip
        assert workers, out
        one_parent(f"sqlite:///{db}", 4)
    finally:  # a Ray node takes its time over SIGTERM; its state is in `temp`, removed here
        stop(head, grace=5)
        log.close()
        subprocess.run(["rm", "-rf", temp], check=False)


@pytest.mark.parametrize(
    "launcher",
    [
        # processes on this machine; a fresh store: the parent callback creates it before jobs
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        # submitit's local executor pickles each job, starts it as its own process and reads
        # its result back: the path a SLURM job takes, without a scheduler
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    ],
    ids=["joblib", "submitit_local"],
)
def test_grid_lands_under_one_parent(tmp_path, launcher):
    db = tmp_path / "store.db"
    r = run_bench(
        "-m",
        *launcher,
        "+method=pinn",
        "+problem=burgers",
        "seed=0,1",
        *FAST,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"tracking.uri=sqlite:///{db}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    one_parent(f"sqlite:///{db}", 2)
    if "submitit" in launcher[0]:
        pickles = list((tmp_path / "sweep" / ".submitit").glob("*/*_submitted.pkl"))
        assert len(pickles) == 2, sorted((tmp_path / "sweep").rglob("*"))


def test_many_writers_through_one_tracking_server(tmp_path):
    """`make server`: an `mlflow server` with a SQLite backend that only it opens, serving the
    artifacts. Four jobs at once write through it: none is lost, nothing reports a locked
    database, and the artifacts land in the server's destination."""
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(  # `make server`, as a user starts it; setup is done already
        ["make", "-s", "-o", f"{VENV}/.installed", "server", f"VENV={VENV}", f"PORT={port}",
         f"SERVER_DIR={tmp_path / 'server'}", "SERVER_ARGS=--workers 2"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        r = run_bench(
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            "+method=pinn",
            "+problem=burgers",
            "seed=0,1,2,3",
            *FAST,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"tracking.uri={uri}",
            cwd=tmp_path,
        )
        out = r.stdout + r.stderr + (tmp_path / "server.log").read_text()
        assert r.returncode == 0, out
        assert "database is locked" not in out, out
        assert "tracking off:" not in out and "tracking: " not in out, out  # bench/run.py
        children = one_parent(uri, 4)
        client = MlflowClient(uri)
        for c in children:  # artifacts went through the server, to its destination
            assert "metrics.json" in {a.path for a in client.list_artifacts(c.info.run_id)}
            assert c.info.artifact_uri.startswith("mlflow-artifacts:")
        assert len(list((tmp_path / "server" / "mlartifacts").rglob("metrics.json"))) == 4
    finally:
        stop(server)
        log.close()


def test_a_launcher_without_its_extra_names_the_install_line(tmp_path, monkeypatch):
    assert missing_launcher(["+method=pinn", "hydra/launcher=joblib"]) is None
    assert missing_launcher(["hydra/launcher=basic"]) is None
    monkeypatch.setitem(LAUNCHER_EXTRAS, "ray", ("hydra_plugins.not_installed", "ray"))
    message = missing_launcher(["-m", "hydra/launcher=ray", "+method=pinn"])
    assert "hydra/launcher=ray" in message and "pip install -e '.[ray]'" in message
