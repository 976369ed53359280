"""Shared fixtures: every test logs to a throw-away MLflow store, never to results/mlflow.db."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = str(Path(sys.executable).parent / "bench")


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory, monkeypatch):
    db = tmp_path_factory.getbasetemp() / "mlflow" / "mlflow.db"
    db.parent.mkdir(exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def run_bench(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None):
    """Start the installed `bench` command the way a user does."""
    full_env = {**os.environ, "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [BENCH, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )
