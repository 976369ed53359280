"""MLflow tracking: the store, one run per cell, the multirun parent.

The default store is `sqlite:///<repo>/results/mlflow.db` with artifacts in
`<repo>/results/mlartifacts` (absolute paths, so Hydra's output directories never scatter
stores). `MLFLOW_TRACKING_URI` or `tracking.uri=...` points it elsewhere (a server, Postgres).

Tracking never costs a run its results: every call is guarded, and when the store cannot be
reached the run goes on, writes everything locally and says so once.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
PARENT_ENV = "PHYSBENCH_PARENT_RUN_ID"
PARENT_TAG = "physbench.parent"
# Who owns a run while it is RUNNING (`bench.stale` reads them): this host, this process, and
# a heartbeat (unix seconds) refreshed at most every HEARTBEAT_EVERY seconds while it trains.
HOST_TAG = "physbench.host"
PID_TAG = "physbench.pid"
HEARTBEAT_TAG = "physbench.heartbeat"
HEARTBEAT_EVERY = 60.0
# What a run computed from (`bench.resume` compares them): the resolved configuration's hash
# and the code's version (`code_version`).
CONFIG_TAG = "physbench.config_hash"
CODE_TAG = "physbench.code_version"

# Fail fast on an unreachable server instead of MLflow's minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def default_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else the repository's SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'results' / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    """The configured URI, or the default; a relative SQLite path is made absolute."""
    uri = uri or default_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    return uri


def artifact_root(uri: str) -> str | None:
    """Where a local store keeps artifacts: `mlartifacts/` beside the SQLite file."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :].split("?")[0])  # urlparse would keep a leading "//"
        db.parent.mkdir(parents=True, exist_ok=True)
        return (db.parent / "mlartifacts").as_uri()
    return None  # a server or database store decides for itself


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow 3's UI opens an experiment of unknown kind in its GenAI view (evaluation runs, an
assistant panel); this kind opens the training view: runs table, charts, compare."""


def ensure_experiment(client: Any, name: str, uri: str) -> str:
    """The experiment's id, creating it (and a fresh store's schema) when missing, tagged as a
    model-training experiment (`EXPERIMENT_KIND`)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        root = artifact_root(uri)
        location = f"{root}/{name}" if root else None
        try:
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except Exception:  # created by a concurrent job in the meantime
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in EXPERIMENT_KIND.items():  # an experiment made before the tag existed
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def git_info() -> dict[str, str]:
    """The repository's commit and whether the work tree is dirty ("unknown" outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            # no optional locks: `status` would otherwise refresh the index under index.lock,
            # and a run killed meanwhile (SIGKILL) would leave the lock behind for every git
            # command after it
            ["git", "--no-optional-locks", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = "true" if git("status", "--porcelain", "--untracked-files=no") else "false"
    except Exception:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": dirty}


CODE_PATHS = ("bench", "methods", "problems", "core", "conf", "pyproject.toml")


def code_version(info: Mapping[str, str] | None = None) -> str:
    """The commit, and for a dirty work tree `<commit>+dirty.<hash of the diff>` over the code
    (`CODE_PATHS`: an edit of the README or a test changes no result): two runs of the same
    uncommitted edits share a version, any other edit of the code makes another one. `info`:
    `git_info()` when the caller has it already."""
    info = git_info() if info is None else info
    if info["git_dirty"] != "true":
        return info["git_commit"]
    try:
        diff = subprocess.run(
            ["git", "--no-optional-locks", "diff", "HEAD", "--", *CODE_PATHS],
            cwd=REPO,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except Exception:
        return f"{info['git_commit']}+dirty"
    if not diff:  # edits outside the code only
        return info["git_commit"]
    return f"{info['git_commit']}+dirty.{hashlib.sha256(diff).hexdigest()[:12]}"


def owner_tags() -> dict[str, str]:
    """This process as the owner of a run: host, pid and a fresh heartbeat."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        HEARTBEAT_TAG: f"{time.time():.0f}",
    }


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists become their string form."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives during a store write until the write is done.

    A KeyboardInterrupt inside MLflow's SQLAlchemy session skips its rollback (it handles
    Exception, not BaseException) and can leave the SQLite store locked for the writes that
    record the interruption; here it is raised right after the write instead.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # Ctrl-C is ignored or handled elsewhere: leave it alone
        return
    caught: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


class Tracker:
    """One MLflow run for one cell. Every method is a no-op once tracking is off or broken."""

    def __init__(self, uri: str | None, experiment: str, enabled: bool = True) -> None:
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.enabled = enabled
        self.run_id: str | None = None
        self.error: str | None = None
        self._client: Any = None
        self._beat = 0.0

    @property
    def live(self) -> bool:
        """A run is open and the store has not failed."""
        return self.enabled and not self.error and self.run_id is not None

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled or self.error:
            return None
        with _sigint_deferred():
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # the store is unreachable or refused: keep the run going
                self.error = f"{what}: {type(e).__name__}: {str(e).splitlines()[0][:300]}"
                return None

    def start(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        def _start() -> str:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            exp_id = ensure_experiment(self._client, self.experiment, self.uri)
            all_tags = {**owner_tags(), **tags}
            parent = os.environ.get(PARENT_ENV)
            if parent:
                all_tags["mlflow.parentRunId"] = parent
            run = self._client.create_run(exp_id, run_name=run_name, tags=all_tags)
            return run.info.run_id

        self.run_id = self._guard("starting the MLflow run", _start)
        self._beat = time.monotonic()
        return self.run_id

    def heartbeat(self) -> None:
        """Refresh the run's heartbeat tag, at most every HEARTBEAT_EVERY seconds."""
        if self.live and time.monotonic() - self._beat >= HEARTBEAT_EVERY:
            self._beat = time.monotonic()
            self.set_tags({HEARTBEAT_TAG: f"{time.time():.0f}"})

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.live:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self._guard("logging params", self._log_batch, params=items[i : i + 100])

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        if not self.live:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, int(step))
            for k, v in values.items()
            if isinstance(v, int | float) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self._guard("logging metrics", self._log_batch, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if not self.live:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._guard("setting tags", self._log_batch, tags=items)

    def log_artifacts(self, paths: Iterable[Path], subdir: str | None = None) -> None:
        if not self.live:
            return
        for p in paths:
            if p.is_file():
                self._guard(
                    "logging artifacts", self._client.log_artifact, self.run_id, str(p), subdir
                )
            elif p.is_dir():
                self._guard(
                    "logging artifacts", self._client.log_artifacts, self.run_id, str(p), subdir
                )

    def finish(self, status: str) -> None:
        """Close the run: FINISHED for ok/diverged/not_applicable, KILLED, or FAILED."""
        if not self.live:
            return
        state = {"killed": "KILLED", "failed": "FAILED"}.get(status, "FINISHED")
        self._guard("closing the MLflow run", self._client.set_terminated, self.run_id, state)

    def _log_batch(self, **kw: Any) -> None:
        self._client.log_batch(self.run_id, **kw)


class MultirunParent(Callback):
    """Hydra callback: one parent run per multirun, created before any job starts.

    Creating the store, the experiment and the parent here, in the launcher process, means
    parallel jobs never race to create a fresh SQLite schema. Jobs find the parent's id in
    `PHYSBENCH_PARENT_RUN_ID` and log as its children.
    """

    def __init__(self) -> None:
        # Only plain values here: the joblib launcher pickles the callbacks with each job.
        self.uri: str | None = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tcfg = config.get("tracking", {})
        if not tcfg.get("enabled", True):
            return
        tracker = Tracker(tcfg.get("uri"), tcfg.get("experiment", "physbench"))
        sweep_dir = str(config.hydra.sweep.dir)
        self.run_id = tracker.start(
            f"sweep/{Path(sweep_dir).parent.name}/{Path(sweep_dir).name}",
            {PARENT_TAG: "true", "sweep_dir": str(Path(sweep_dir).resolve()), **git_info()},
        )
        self.uri = tracker.uri
        if self.run_id:
            os.environ[PARENT_ENV] = self.run_id
        else:
            print(f"physbench: MLflow parent run not created ({tracker.error})")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # In the job's own process. A job on another machine (a Ray worker, a SLURM node) does
        # not inherit the launcher's environment, but it gets this callback, pickled with the
        # parent's id; a reused worker process must not keep an earlier multirun's id.
        if self.run_id:
            os.environ[PARENT_ENV] = self.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=self.uri).set_terminated(self.run_id, "FINISHED")
            os.environ.pop(PARENT_ENV, None)
