"""Resume, checkpoints and stale runs, the real way: `bench` subprocesses killed by SIGKILL, a
SQLite MLflow store, `bench-report` and `bench ... resume=true` afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.checkpoint import NAME, PREVIOUS, read_checkpoint, write_checkpoint
from bench.resume import SKIP_TAG, decide
from bench.run import compose, run_cell
from bench.stale import REASON_TAG
from bench.tracking import CODE_TAG, PARENT_TAG
from tests.conftest import BENCH, run_bench

GRID = ["+method=pinn", "+problem=burgers", "seed=0,1,2,3,4,5", "budget=smoke"]
GRID += ["eval.figures=false", "threads=1"]
# A PINN cell with 100 Adam steps, then L-BFGS to 300 steps; 1024 points per term make a step
# slow enough to SIGKILL inside a chosen phase; a checkpoint after every step.
CELL = ["+method=pinn", "+problem=burgers", "budget=smoke", "budget.steps=300"]
CELL += ["budget.points=1024", "budget.evals=100000", "budget.seconds=600", "budget.eval_every=50"]
CELL += ["method.adam_steps=100", "eval.figures=false", "threads=1"]
EVERY_STEP = "checkpoint.every=1e-9"


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [BENCH, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        start_new_session=True,  # its own process group, killed as one
    )


def _kill(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)  # reaped: its pid is gone, not a zombie
    assert proc.returncode == -signal.SIGKILL, out
    return out


def _wait_for(what, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not what():
        if proc.poll() is not None:
            raise AssertionError("the run ended before it could be killed:\n" + proc.stdout.read())
        if time.time() > deadline:
            _kill(proc)
            raise AssertionError("timed out waiting to kill the run")
        time.sleep(0.01)


def _runs(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("physbench")
    return list(client.search_runs([exp.experiment_id], max_results=1000)) if exp else []


@pytest.mark.slow
def test_killed_grid_resumes_to_one_ok_run_per_cell(tmp_path):
    db = tmp_path / "store.db"
    args = [*GRID, f"tracking.uri=sqlite:///{db}"]

    def finished_children() -> int:
        try:
            return sum(
                json.loads(p.read_text()).get("status") == "ok"
                for p in (tmp_path / "first").glob("*/metrics.json")
            )
        except ValueError:  # caught while being written
            return 0

    proc = _start(["-m", *args, f"hydra.sweep.dir={tmp_path / 'first'}"], tmp_path)
    _wait_for(lambda: finished_children() >= 1, proc)
    time.sleep(1.0)  # its MLflow run closes just after metrics.json is written
    _kill(proc)
    before = _runs(db)
    first_parent = next(r for r in before if r.data.tags.get(PARENT_TAG) == "true")
    assert first_parent.info.status == "RUNNING"  # SIGKILL left no chance to close it

    # bench-report marks the runs the kill left RUNNING as KILLED, and leaves them out
    from bench.report import main as report_main

    report_main(["--tracking-uri", f"sqlite:///{db}", "--out", str(tmp_path / "rep"),
                 "--no-figures"])  # fmt: skip
    after = {r.info.run_id: r for r in _runs(db)}
    was_running = [r.info.run_id for r in before if r.info.status == "RUNNING"]
    assert first_parent.info.run_id in was_running
    for rid in was_running:
        assert after[rid].info.status == "KILLED", rid
        assert after[rid].data.tags["status"] == "killed"
        assert "is gone" in after[rid].data.tags[REASON_TAG]
    table = (tmp_path / "rep" / "leaderboard.csv").read_text()
    assert "n_killed" in table
    done = {r.data.tags["seed"] for r in after.values() if r.data.tags.get("status") == "ok"}
    assert 1 <= len(done) < 6

    r = run_bench("-m", *args, f"hydra.sweep.dir={tmp_path / 'second'}", "resume=true",
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("resume: skip pinn/burgers/") == len(done), r.stdout
    assert r.stdout.count("resume: rerun pinn/burgers/") == 6 - len(done), r.stdout
    runs = _runs(db)
    assert not [x for x in runs if x.info.status == "RUNNING"]
    ok = [x for x in runs if x.data.tags.get("status") == "ok"]
    assert sorted(x.data.tags["seed"] for x in ok) == ["0", "1", "2", "3", "4", "5"]
    parents = [x for x in runs if x.data.tags.get(PARENT_TAG) == "true"]
    second = next(p for p in parents if p.info.run_id != first_parent.info.run_id)
    assert second.data.tags["physbench.resume"] == "true"
    skipped = {k: v for k, v in second.data.tags.items() if k.startswith(SKIP_TAG)}
    assert len(skipped) == len(done)
    for x in ok:  # reruns belong to the new parent; skipped cells stay with the old one
        owner = x.data.tags["mlflow.parentRunId"]
        if x.data.tags["seed"] in done:
            assert owner == first_parent.info.run_id
            assert any(x.info.run_id in v for v in skipped.values())
        else:
            assert owner == second.info.run_id
            assert x.data.tags["physbench.rerun_reason"]


def _ckpt_step(run_dir: Path) -> int:
    """The step of the checkpoint a resume would load from `run_dir` (-1: none yet)."""
    for name in (NAME, PREVIOUS):
        try:
            return read_checkpoint(run_dir / name)["monitor"]["step"]
        except Exception:  # not there (yet), or caught half-way through the rename
            continue
    return -1


def _saved_step(run_dir: Path) -> int:
    """The step `checkpoint.json` names (cheap to poll)."""
    try:
        return json.loads((run_dir / "checkpoint.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.slow
def test_sigkilled_run_resumes_from_checkpoints_to_the_uninterrupted_result(tmp_path):
    """Kill one run inside Adam, resume it and kill it early in L-BFGS, resume and kill it
    later in L-BFGS, resume to the end: the same steps, evaluations, curve and metrics, bit for
    bit, as a run never stopped (CPU, one thread, a step cap)."""
    import pandas as pd

    db = tmp_path / "store.db"
    store = f"tracking.uri=sqlite:///{db}"
    trials, outputs = [], []
    for k, target in enumerate((30, 130, 220)):
        run_dir = tmp_path / f"try{k}"
        args = [*CELL, EVERY_STEP, store, f"hydra.run.dir={run_dir}"]
        proc = _start([*args, "resume=true"] if k else args, tmp_path)
        _wait_for(lambda: _saved_step(run_dir) >= target, proc)  # noqa: B023
        outputs.append(_kill(proc))
        trials.append((target, _ckpt_step(run_dir)))
    last = tmp_path / "final"
    r = run_bench(*CELL, EVERY_STEP, store, f"hydra.run.dir={last}", "resume=true", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    outputs.append(r.stdout)
    resumed = json.loads((last / "metrics.json").read_text())
    for k in range(1, 4):  # each resume continued from the last checkpoint of the one before
        assert f"checkpoint: continuing from step {trials[k - 1][1]} of " in outputs[k]
    assert trials[0][1] < 100 <= trials[1][1] < trials[2][1] < 300, trials  # Adam, L-BFGS x2

    cell = [a for a in CELL if not a.startswith("+")]
    plain = run_cell("pinn", "burgers", overrides=[*cell, "tracking.enabled=false"],
                     output_dir=tmp_path / "plain")  # fmt: skip
    assert resumed["status"] == plain["status"] == "ok"
    assert resumed["metrics"]["steps"] == plain["metrics"]["steps"] == 300
    exact = ("evals", "rel_l2", "max_abs_err", "rmse", "residual_rms", "rel_l2_final_time")
    for key in exact:
        assert resumed["metrics"][key] == plain["metrics"][key], key
    curves = [pd.read_csv(d / "curve.csv") for d in (last, tmp_path / "plain")]
    same = ["step", "evals", "loss", "rel_l2"]
    pd.testing.assert_frame_equal(curves[0][same], curves[1][same], check_exact=True)
    runs = _runs(db)
    killed = [x for x in runs if x.info.status == "KILLED"]
    assert len(killed) == 3 and all("is gone" in x.data.tags[REASON_TAG] for x in killed)
    (ok,) = [x for x in runs if x.data.tags.get("status") == "ok"]
    assert ok.data.tags["physbench.resumed_from"].startswith(str(tmp_path / "try2"))
    print("\nkill trials (target step, checkpoint step at the kill):", trials)
    print({k: (resumed["metrics"][k], plain["metrics"][k]) for k in exact})


SHORT = ["budget=smoke", "budget.steps=40", "budget.eval_every=20", "eval.figures=false",
         "threads=1", "method.adam_steps=20"]  # fmt: skip


def test_resume_skips_same_and_names_changed_keys(tmp_path):
    uri = os.environ["MLFLOW_TRACKING_URI"]  # the session's store, an experiment of its own
    store = [f"tracking.uri={uri}", f"tracking.experiment=resume-{time.time_ns()}"]
    rec = run_cell("pinn", "burgers", overrides=[*SHORT, *store], output_dir=tmp_path / "a")
    assert rec["status"] == "ok"

    def decision(*extra: str):
        cfg = compose("pinn", "burgers", [*SHORT, *store, "resume=true", *extra])
        return decide(cfg, "pinn", "burgers", "smoke")

    same = decision("progress=off", "checkpoint.every=5")  # volatile keys: still the same
    assert same.skip and rec["mlflow_run_id"] in same.message
    changed = decision("method.width=8", "method.lr=0.01")
    assert not changed.skip
    assert "method.width (20 -> 8)" in changed.message and "method.lr" in changed.message
    MlflowClient(uri).set_tag(rec["mlflow_run_id"], CODE_TAG, "0123abc")
    moved = decision()
    assert not moved.skip and "the code changed" in moved.message and "0123abc" in moved.message


def test_corrupted_and_foreign_checkpoints_are_never_loaded(tmp_path, capsys):
    base = [*SHORT, "tracking.enabled=false"]
    src = tmp_path / "src"
    full = run_cell("pinn", "burgers", overrides=[*base, EVERY_STEP], output_dir=src)
    assert full["status"] == "ok" and (src / NAME).exists() and (src / PREVIOUS).exists()
    prev_step = read_checkpoint(src / PREVIOUS)["monitor"]["step"]

    # a flipped byte: the checksum catches it, the previous checkpoint is used instead
    data = bytearray((src / NAME).read_bytes())
    data[-100] ^= 0xFF
    (src / NAME).write_bytes(bytes(data))
    rec = run_cell("pinn", "burgers", overrides=[*base, f"checkpoint.resume_from={src}"],
                   output_dir=tmp_path / "b")  # fmt: skip
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and f"continuing from step {prev_step}" in out
    assert rec["resumed_from"].endswith(PREVIOUS)
    for key in ("steps", "evals", "rel_l2"):
        assert rec["metrics"][key] == full["metrics"][key], key

    # a checkpoint of other code: refused, the run starts over
    payload = read_checkpoint(src / PREVIOUS)
    payload["identity"]["code_version"] = "0123abc"
    (src / NAME).unlink()
    (src / PREVIOUS).unlink()
    write_checkpoint(src, payload)
    rec = run_cell("pinn", "burgers", overrides=[*base, f"checkpoint.resume_from={src}"],
                   output_dir=tmp_path / "c")  # fmt: skip
    out = capsys.readouterr().out
    assert "refused" in out and "0123abc" in out and "starting from scratch" in out
    assert "resumed_from" not in rec and rec["metrics"]["rel_l2"] == full["metrics"]["rel_l2"]


def test_bad_checkpoint_settings_are_refused_naming_the_key(tmp_path):
    rec = run_cell("pinn", "burgers", overrides=[*SHORT, "checkpoint.every=-1"],
                   output_dir=tmp_path / "a")  # fmt: skip
    assert rec["status"] == "failed" and "checkpoint.every" in rec["message"]
    rec = run_cell("pinn", "burgers", overrides=[*SHORT, f"checkpoint.resume_from={tmp_path}/x"],
                   output_dir=tmp_path / "b")  # fmt: skip
    assert rec["status"] == "failed" and "checkpoint.resume_from" in rec["message"]


@pytest.mark.slow
def test_bench_sync_logs_an_offline_run_like_a_live_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    cell = ["+method=pinn", "+problem=burgers", *SHORT]
    nowhere = "tracking.uri=http://127.0.0.1:9"  # nothing listens there: "tracking off"
    r = run_bench(*cell, nowhere, f"hydra.run.dir={tmp_path / 'off'}", cwd=tmp_path,
                  env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})  # fmt: skip
    assert r.returncode == 0 and "tracking off" in r.stdout, r.stdout + r.stderr
    r = run_bench(*cell, f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'live'}",
                  cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    sync = [sys.executable, "-m", "bench.sync", "--tracking-uri", uri]  # = bench-sync
    s = subprocess.run([*sync, str(tmp_path / "off")], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # fmt: skip
    assert s.returncode == 0 and "logged as run" in s.stdout, s.stdout + s.stderr

    client = MlflowClient(uri)
    runs = {Path(x.data.tags["run_dir"]).name: x for x in _runs(tmp_path / "store.db")}
    live, synced = runs["live"], runs["off"]
    assert synced.info.run_name == live.info.run_name and synced.info.status == "FINISHED"
    volatile = ("tracking.",)
    same = lambda d: {k: v for k, v in d.items() if not k.startswith(volatile)}  # noqa: E731
    assert same(synced.data.params) == same(live.data.params)
    assert set(synced.data.tags) - {"physbench.sync_id", "physbench.synced_from"} == set(
        live.data.tags
    )
    for key in ("method", "problem", "seed", "budget", "status", "physbench.config_hash"):
        assert synced.data.tags[key] == live.data.tags[key], key
    assert synced.data.metrics.keys() == live.data.metrics.keys()
    assert synced.data.metrics["steps"] == live.data.metrics["steps"]
    for key in ("eval/rel_l2", "train/loss"):
        steps = [[m.step for m in client.get_metric_history(x.info.run_id, key)]
                 for x in (synced, live)]  # fmt: skip
        assert steps[0] == steps[1] and steps[0], key

    def artifacts(rid: str, path: str | None = None) -> set[str]:
        out = set()
        for a in client.list_artifacts(rid, path):
            out |= artifacts(rid, a.path) if a.is_dir else {a.path}
        return out

    assert artifacts(synced.info.run_id) == artifacts(live.info.run_id)

    from bench.sync import main as sync_main

    assert sync_main(["--tracking-uri", uri, str(tmp_path / "off")]) == 1  # not twice
    assert sync_main(["--tracking-uri", uri, str(tmp_path / "live")]) == 1  # logged live
    assert sync_main(["--tracking-uri", uri, str(tmp_path)]) == 1  # not a run directory
    assert len(_runs(tmp_path / "store.db")) == 2


def test_stale_runs_are_told_from_live_ones():
    """Owner tags as runs record them: a dead process on this host or an old heartbeat
    anywhere makes a RUNNING run stale; this process with a fresh heartbeat does not."""
    import socket

    from bench.stale import STALE_AFTER, sweep
    from bench.tracking import HEARTBEAT_TAG, HOST_TAG, PID_TAG, owner_tags

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment(f"stale-{time.time_ns()}")
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid is gone
    old = f"{time.time() - STALE_AFTER - 60:.0f}"
    owners = {
        "live": owner_tags(),
        "dead": {**owner_tags(), PID_TAG: str(gone.pid)},
        "elsewhere": {HOST_TAG: socket.gethostname() + "-other", PID_TAG: "1", HEARTBEAT_TAG: old},
        "elsewhere-fresh": {**owner_tags(), HOST_TAG: "other", PID_TAG: "1"},
    }
    ids = {name: client.create_run(exp, tags=tags).info.run_id for name, tags in owners.items()}
    marked = {run.info.run_id for run, _ in sweep(client, [exp], "a test")}
    assert marked == {ids["dead"], ids["elsewhere"]}
    assert client.get_run(ids["elsewhere"]).data.tags[REASON_TAG].startswith("stale: no heartbeat")
    assert client.get_run(ids["live"]).info.status == "RUNNING"


def test_a_requeued_slurm_job_continues_its_own_checkpoint(tmp_path, monkeypatch):
    """SLURM sets SLURM_RESTART_COUNT in a requeued job (submitit's preemption hook requeues
    it into the same directory): the run continues the checkpoint it left there."""
    base = [*SHORT, "tracking.enabled=false", EVERY_STEP]
    first = run_cell("pinn", "burgers", overrides=base, output_dir=tmp_path)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = run_cell("pinn", "burgers", overrides=base, output_dir=tmp_path)
    assert again["resumed_from"] == str(tmp_path / NAME)
    assert again["metrics"]["rel_l2"] == first["metrics"]["rel_l2"]
