"""Resuming a grid (`bench -m ... resume=true`): which cells to skip, which to rerun, and from
which checkpoint.

A run's identity is two tags set when it starts: `physbench.config_hash`, a hash of the method
and problem names and the resolved configuration less the keys that cannot change a result
(`VOLATILE`: output and display settings, tracking, resume and checkpoint settings), and
`physbench.code_version` (`bench.tracking.code_version`: the commit, plus a hash of the diff
for a dirty work tree).

With `resume=true` every job looks up the earlier runs of its cell (same method, problem,
seed and budget tags) in the store before it runs, after marking the stale ones among them
KILLED (`bench.stale`), and

- skips the cell when one finished `ok` with the same configuration hash and code version
  (or one like it is still running in a live process);
- otherwise reruns it, saying why: the last run ended failed or killed (and, when that run's
  directory holds a checkpoint, continues from it: `bench.checkpoint`), the code changed, or
  the configuration changed (naming the keys whose values differ from the stored params of the
  closest earlier run), or there was no earlier run.

A resumed multirun is a new parent run. The cells it reruns are its children; the cells it
skips stay children of the parent that ran them, and the new parent names each of them in a
tag `physbench.skipped.<job>` (the run it found and why), so the whole grid is the new
parent's children plus the runs its skip tags name. `ResumeSweep` (a Hydra callback) marks
stale runs of the experiment, the killed grid's parent among them, before any job starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.checkpoint import NAME, PREVIOUS
from bench.stale import describe, mark_stale, sweep
from bench.tracking import (
    CODE_TAG,
    CONFIG_TAG,
    HOST_TAG,
    PARENT_ENV,
    PID_TAG,
    code_version,
    flatten,
    resolve_uri,
)

__all__ = [
    "RERUN_TAG",
    "RESUMED_TAG",
    "SKIP_TAG",
    "Decision",
    "ResumeSweep",
    "config_hash",
    "config_params",
    "decide",
    "record_skip",
]

VOLATILE = (
    "hydra",
    "progress",
    "tracking",
    "resume",
    "checkpoint",
    "eval.figures",
    "eval.predictions",
)
SKIP_TAG = "physbench.skipped."  # + job number, on the parent of a resumed multirun
RERUN_TAG = "physbench.rerun_reason"  # on a run that `resume` reran
RESUMED_TAG = "physbench.resumed_from"  # the checkpoint a run continued from
SHOWN_KEYS = 8  # changed keys named in a message


def _volatile(key: str) -> bool:
    return any(key == v or key.startswith(v + ".") for v in VOLATILE)


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved configuration as MLflow stores it (flattened, values as strings), less the
    volatile keys."""
    keep = [str(k) for k in cfg.keys() if not _volatile(str(k))]  # hydra's own never resolves
    flat = flatten(OmegaConf.to_container(OmegaConf.masked_copy(cfg, keep), resolve=True))  # type: ignore[arg-type]
    return {k: str(v)[:6000] for k, v in flat.items() if not _volatile(k)}


def config_hash(cfg: DictConfig, method: str, problem: str) -> str:
    blob = json.dumps(
        {"method": method, "problem": problem, "params": config_params(cfg)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Decision:
    """What `resume` does with one cell, and the line that says so."""

    skip: bool
    message: str
    reason: str
    checkpoint_dir: Path | None = None


def _status(run: Any) -> str:
    return run.data.tags.get("status") or run.info.status.lower()


def _changed(mine: dict[str, str], theirs: dict[str, str]) -> list[str]:
    keys = {k for k in set(mine) | set(theirs) if not _volatile(k)}
    return sorted(k for k in keys if mine.get(k) != theirs.get(k))


def _with_checkpoint(runs: list[Any]) -> Path | None:
    for run in runs:  # newest first
        d = run.data.tags.get("run_dir")
        if d and ((Path(d) / NAME).exists() or (Path(d) / PREVIOUS).exists()):
            return Path(d)
    return None


def decide(cfg: DictConfig, method: str, problem: str, budget: str) -> Decision:
    """Skip or rerun this cell (module doc)."""
    cell = f"{method}/{problem}/{cfg.seed}"
    tcfg = cfg.get("tracking", {})

    def rerun(reason: str, ckpt: Path | None = None) -> Decision:
        more = f"; continuing from the checkpoint in {ckpt}" if ckpt else ""
        return Decision(False, f"resume: rerun {cell}: {reason}{more}", reason, ckpt)

    if not tcfg.get("enabled", True):
        return rerun("tracking is off, so there is no record of earlier runs")
    uri = resolve_uri(tcfg.get("uri"))
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(tcfg.get("experiment", "physbench"))
        if exp is None:
            return rerun("no earlier run (the experiment is new)")
        query = " AND ".join(
            f"tags.{k} = '{v}'"
            for k, v in (
                ("method", method),
                ("problem", problem),
                ("seed", cfg.seed),
                ("budget", budget),
            )  # fmt: skip
        )
        runs = list(
            client.search_runs(
                [exp.experiment_id], query, max_results=500, order_by=["attributes.start_time DESC"]
            )
        )
        if mark_stale(client, runs, "bench resume"):
            runs = [client.get_run(r.info.run_id) for r in runs]
    except Exception as e:
        why = (str(e).strip().splitlines() or [""])[0][:200]
        return rerun(f"cannot read the store {uri} ({type(e).__name__}: {why})")
    mine, version = config_hash(cfg, method, problem), code_version()
    same = [r for r in runs if r.data.tags.get(CONFIG_TAG) == mine]
    current = [r for r in same if r.data.tags.get(CODE_TAG) == version]
    for r in current:
        rid = r.info.run_id
        if r.info.status == "FINISHED" and _status(r) == "ok":
            why = f"finished ok in run {rid} (config {mine}, code {version})"
            return Decision(True, f"resume: skip {cell}: {why}", why)
        if r.info.status == "RUNNING":
            where = f"process {r.data.tags.get(PID_TAG)} on {r.data.tags.get(HOST_TAG)}"
            why = f"still running in run {rid} ({where})"
            return Decision(True, f"resume: skip {cell}: {why}", why)
    if current:
        last = current[0]
        return rerun(
            f"the last run {last.info.run_id} ended {_status(last)}", _with_checkpoint(current)
        )
    if same:
        last = same[0]
        return rerun(
            f"the code changed: run {last.info.run_id} ({_status(last)}) ran code "
            f"{last.data.tags.get(CODE_TAG)}, this is {version}"
        )
    if runs:
        params = config_params(cfg)
        closest = min(runs, key=lambda r: len(_changed(params, r.data.params)))
        keys = _changed(params, closest.data.params)
        shown = [
            f"{k} ({closest.data.params.get(k, '<unset>')} -> {params.get(k, '<unset>')})"
            for k in keys[:SHOWN_KEYS]
        ]
        more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
        changed = ", ".join(shown) + more if keys else "none of its params (other keys)"
        return rerun(f"the configuration changed since run {closest.info.run_id}: {changed}")
    return rerun("no earlier run of this cell")


def record_skip(cfg: DictConfig, job: int | None, decision: Decision, cell: str) -> None:
    """Name a skipped cell on the multirun's parent run (a single run has none)."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or job is None:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=resolve_uri(cfg.get("tracking", {}).get("uri")))
        client.set_tag(parent, f"{SKIP_TAG}{job}", f"{cell}: {decision.reason}"[:5000])
    except Exception as e:  # the console line stays; the store is someone else's problem
        print(f"physbench: could not record the skip on the parent run ({type(e).__name__})")


class ResumeSweep(Callback):
    """Hydra callback, after `MultirunParent`: with `resume=true`, mark the experiment's stale
    runs KILLED before any job starts, tag the new parent as a resume, and count the skipped
    cells at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tcfg = config.get("tracking", {})
        if not config.get("resume") or not tcfg.get("enabled", True):
            return
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=resolve_uri(tcfg.get("uri")))
            exp = client.get_experiment_by_name(tcfg.get("experiment", "physbench"))
            marked = sweep(client, [exp.experiment_id] if exp else [], "bench resume")
            parent = os.environ.get(PARENT_ENV)
            if parent:
                client.set_tag(parent, "physbench.resume", "true")
        except Exception as e:
            print(f"physbench: resume could not sweep the store ({type(e).__name__}: {e})")
            return
        for line in describe(marked):
            print(f"physbench: {line}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = os.environ.get(PARENT_ENV)
        if not config.get("resume") or not parent:
            return
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=resolve_uri(config.get("tracking", {}).get("uri")))
            tags = client.get_run(parent).data.tags
        except Exception:
            return
        skipped = sum(k.startswith(SKIP_TAG) for k in tags)
        print(f"physbench: resume skipped {skipped} cell(s) already finished ok (tags {SKIP_TAG}*)")
