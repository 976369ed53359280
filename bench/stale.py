"""Stale runs: a run killed without a chance to close itself (SIGKILL, a lost node, the OOM
killer) stays RUNNING in MLflow forever. `sweep` finds such runs and marks them KILLED.

Every run records its owner when it starts (`bench.tracking.owner_tags`: host, pid and a
heartbeat the run refreshes at most every `HEARTBEAT_EVERY` seconds while it trains). A RUNNING
run is stale when

- its host is this host and its process is gone (or a zombie), or
- its heartbeat (its start time when it has none) is older than `STALE_AFTER` seconds, on
  any host: a run elsewhere is judged by its heartbeat alone, and a pid that was reused
  after the run died is caught here too.

A stale run gets status KILLED, the tag `status=killed` (so leaderboards count it among the
killed and never average it) and `physbench.killed_reason`, which says who marked it, when and
why. `bench ... resume=true`, `bench-report` and `bench-check --track` sweep the store first.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.tracking import HEARTBEAT_EVERY, HEARTBEAT_TAG, HOST_TAG, PID_TAG

__all__ = [
    "REASON_TAG",
    "STALE_AFTER",
    "describe",
    "mark_stale",
    "stale_reason",
    "sweep",
    "sweep_store",
]

STALE_AFTER = 30 * HEARTBEAT_EVERY
REASON_TAG = "physbench.killed_reason"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie is dead: it only waits for its parent to read its exit status
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(run: Any, now: float | None = None, host: str | None = None) -> str | None:
    """Why the RUNNING `run` (an MLflow `Run`) has no owner any more; None if it may still."""
    if run.info.status != "RUNNING":
        return None
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    tags = run.data.tags
    pid = tags.get(PID_TAG, "")
    if tags.get(HOST_TAG) == host and pid.isdigit() and not _process_alive(int(pid)):
        return f"process {pid} on {host} is gone"
    try:
        beat = float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        beat = (run.info.start_time or 0) / 1000
    if now - beat > STALE_AFTER:
        where = f" on {tags[HOST_TAG]}" if HOST_TAG in tags else ""
        return f"no heartbeat{where} for {now - beat:.0f} s (more than {STALE_AFTER:.0f} s)"
    return None


def mark_stale(client: Any, runs: Iterable[Any], by: str) -> list[tuple[Any, str]]:
    """Mark every stale run among `runs` KILLED (module doc); the (run, reason) pairs marked."""
    marked = []
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for run in runs:
        why = stale_reason(run)
        if why is None:
            continue
        rid = run.info.run_id
        client.set_tag(rid, "status", "killed")
        client.set_tag(rid, REASON_TAG, f"stale: {why}; marked KILLED by {by} at {stamp}")
        client.set_terminated(rid, "KILLED")
        marked.append((run, why))
    return marked


def sweep(client: Any, experiment_ids: Sequence[str], by: str) -> list[tuple[Any, str]]:
    """Find the RUNNING runs of `experiment_ids` and mark the stale ones KILLED."""
    if not experiment_ids:
        return []
    running, token = [], None
    while True:
        page = client.search_runs(
            list(experiment_ids),
            filter_string="attributes.status = 'RUNNING'",
            max_results=1000,
            page_token=token,
        )
        running += list(page)
        token = page.token
        if not token:
            break
    return mark_stale(client, running, by)


def sweep_store(uri: str, experiments: Sequence[str] | None, by: str) -> list[str]:
    """`sweep` the named experiments (None: all) of the store at `uri`; one line per marked
    run. A store that cannot be read is left to the caller's own reading to report."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :].split("?")[0]).exists():
        return []
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        known = {e.name: e.experiment_id for e in client.search_experiments(max_results=1000)}
        ids = [known[e] for e in experiments if e in known] if experiments else list(known.values())
        return describe(sweep(client, ids, by))
    except Exception:
        return []


def describe(marked: Sequence[tuple[Any, str]]) -> list[str]:
    """One console line per marked run."""
    return [
        f"marked run {run.info.run_id} ({run.info.run_name}) KILLED: {why}" for run, why in marked
    ]
