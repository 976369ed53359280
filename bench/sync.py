"""`bench-sync DIR...`: log run directories into the MLflow store afterwards.

A run that cannot reach its store says "tracking off" and keeps everything in its directory.
`bench-sync` logs such a directory as the live run would have: the same run name, tags (read
from `metrics.json`, through `bench.run.run_tags` and `end_tags`), params (the resolved
`.hydra/config.yaml`), step metrics (`curve.csv`, through `bench.run.curve_metrics`), final
metrics, artifacts (every file the run wrote and `.hydra/`; checkpoints are not results and
stay behind) and final status. The run also gets `physbench.synced_from` (the directory) and
`physbench.sync_id` (a hash of what the run computed: its directory, configuration hash and
final metrics), and its `metrics.json` gets the new run id.

A directory is refused, with the reason, when its `metrics.json` names an MLflow run that
exists in the store (it was logged live, or synced before), or when a run with its
`physbench.sync_id` is in the experiment already.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.run import curve_metrics, end_tags, run_tags
from bench.tracking import Tracker, ensure_experiment, resolve_uri

__all__ = ["SYNC_TAG", "SyncError", "main", "sync_dir"]

SYNC_TAG = "physbench.sync_id"
FROM_TAG = "physbench.synced_from"
NOT_ARTIFACTS = ("checkpoint",)  # file name prefixes left out, with Hydra's job logs (*.log)


class SyncError(Exception):
    """A directory that cannot or must not be logged; the message says why and what to do."""


def sync_id(record: dict[str, Any]) -> str:
    blob = json.dumps(
        [record.get("run_dir"), record.get("config_hash"), record.get("metrics")],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    if not run_dir.is_dir():
        raise SyncError(f"{run_dir}: no such directory")
    if not path.is_file():
        raise SyncError(
            f"{run_dir}: no metrics.json, so not a run directory; give the directory a run "
            "printed as its outputs (outputs/<date>/<time> or multirun/<date>/<time>/<job>)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SyncError(f"{path}: unreadable ({e})") from None
    missing = [k for k in ("method", "problem", "seed", "status", "config_hash") if k not in record]
    if missing:
        raise SyncError(f"{path}: no {', '.join(missing)}: written by an older physbench")
    if record["status"] == "not_applicable":
        raise SyncError(f"{run_dir}: a not_applicable cell, which is never logged")
    return record


def _params(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception:  # an interpolation only Hydra could resolve: the values as written
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def _curve(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "curve.csv"
    if not path.is_file():
        return []
    import pandas as pd

    return pd.read_csv(path).to_dict("records")


def _refuse_twice(tracker: Tracker, record: dict[str, Any], run_dir: Path, ident: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracker.uri)
    rid = record.get("mlflow_run_id")
    if rid:
        try:
            client.get_run(rid)
        except Exception:
            pass  # logged to another store, or never created there
        else:
            raise SyncError(f"{run_dir}: already in the store as run {rid}; not logged again")
    exp = ensure_experiment(client, tracker.experiment, tracker.uri)
    (found, *_) = list(client.search_runs([exp], f"tags.`{SYNC_TAG}` = '{ident}'")) or [None]
    if found is not None:
        raise SyncError(f"{run_dir}: already synced as run {found.info.run_id}; not logged again")


def sync_dir(run_dir: Path, uri: str | None, experiment: str) -> str:
    """Log one run directory (module doc); the new run's id. SyncError when refused."""
    run_dir = Path(run_dir).resolve()
    record = _record(run_dir)
    ident = sync_id(record)
    tracker = Tracker(uri, experiment)
    try:
        _refuse_twice(tracker, record, run_dir, ident)
    except SyncError:
        raise
    except Exception as e:  # any backend's error: the store is down or not a store
        raise SyncError(f"cannot read the store {tracker.uri}: {type(e).__name__}: {e}") from None
    tags = {**run_tags(record), FROM_TAG: str(run_dir), SYNC_TAG: ident}
    run_id = tracker.start(f"{record['method']}/{record['problem']}/{record['seed']}", tags)
    params = _params(run_dir)
    if params is not None:
        tracker.log_params(params)
    for row in _curve(run_dir):
        values, step = curve_metrics(row)
        tracker.log_metrics(values, step=step)
    tracker.log_metrics(record["metrics"], step=record["metrics"].get("steps", 0) or 0)
    tracker.set_tags(end_tags(record))
    files = [
        p
        for p in sorted(run_dir.iterdir())
        if p.is_file()
        and not p.name.startswith(NOT_ARTIFACTS)
        and p.suffix != ".log"
        and p.name != "metrics.json"
    ]
    record["mlflow_run_id"] = run_id
    if run_id is not None:  # the directory now names its run, like a live one
        (run_dir / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    tracker.log_artifacts([run_dir / "metrics.json", *files, run_dir / ".hydra"])
    tracker.finish(record["status"])
    if tracker.error or run_id is None:
        raise SyncError(f"{run_dir}: {tracker.error}")
    if params is None:
        print(f"bench-sync: {run_dir}: no .hydra/config.yaml, so no params were logged")
    return run_id


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench-sync", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run directories")
    p.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or results/mlflow.db)"
    )
    p.add_argument("--experiment", default="physbench", help="experiment (default: physbench)")
    args = p.parse_args(argv)
    uri = resolve_uri(args.tracking_uri)
    failed = 0
    for d in args.dirs:
        try:
            rid = sync_dir(d, uri, args.experiment)
        except SyncError as e:
            print(f"bench-sync: {e}")
            failed += 1
        else:
            print(f"bench-sync: {d}: logged as run {rid} in {uri}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
