"""Checkpoints of one run: the file format, and when a run saves and what it continues from.

A checkpoint is everything a training loop needs to continue as if it had never stopped: the
method's state (whatever the object it registered with `report.checkpoint` returns: for the
shared loops parameters, optimiser states with L-BFGS's curvature pairs, counters, sampled
points, generators), the monitor's budget counters (steps, evaluations, training seconds,
evaluation seconds, the curve so far) and the global random states (torch, CUDA, numpy,
python). It is stamped with the run's identity: its code version and configuration hash.

On disk (`<run dir>/checkpoint.pt`): a header line, the SHA-256 of the payload, then the
payload (`torch.save`, read back with `weights_only=True`: tensors and plain containers only).
A save writes a temporary file, syncs it, moves the current checkpoint to `checkpoint.prev.pt`
and renames the new one into place, so a kill at any moment leaves at least one complete
checkpoint. `checkpoint.json` beside it says, for people, which step it holds.

Loading checks the checksum (a corrupted or truncated file is reported and the previous
checkpoint is tried, then a start from scratch) and the identity (a checkpoint of other code
or another configuration is refused with a message, never loaded).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from problems.base import ConfigError

__all__ = [
    "NAME",
    "PREVIOUS",
    "CheckpointError",
    "Checkpoints",
    "every_seconds",
    "read_checkpoint",
    "rng_state",
    "set_rng_state",
    "write_checkpoint",
]

NAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
SUMMARY = "checkpoint.json"
MAGIC = b"physbench checkpoint 1\n"


class CheckpointError(Exception):
    """A checkpoint file that cannot be used (truncated, corrupted, not a checkpoint)."""


def every_seconds(value: Any, budget_seconds: float | None) -> float | None:
    """`checkpoint.every` in seconds, None for off. `auto`: off for budgets shorter than two
    minutes of training (smoke), else every twentieth of the `seconds` cap, between one and ten
    minutes (five minutes when the budget has no clock cap)."""
    if value == "auto":
        if budget_seconds is None:
            return 300.0
        if budget_seconds < 120:
            return None
        return min(max(budget_seconds / 20, 60.0), 600.0)
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(
            f"checkpoint.every must be a number of seconds, auto, 0 or null, got {value!r}"
        )
    if value < 0:
        raise ConfigError(f"checkpoint.every must be >= 0 seconds (0 = off), got {value!r}")
    return float(value)


def rng_state() -> dict[str, Any]:
    """The global random states, as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_atomically(path: Path, data: bytes, keep: Path | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if keep is not None and path.exists():
        os.replace(path, keep)
    os.replace(tmp, path)
    try:  # make the renames themselves durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_checkpoint(run_dir: Path, payload: dict[str, Any]) -> Path:
    """Save `payload` as `run_dir/checkpoint.pt`, keeping the one before (module doc)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / NAME
    _replace_atomically(path, MAGIC + digest + b"\n" + body, keep=run_dir / PREVIOUS)
    summary = {
        "step": payload.get("monitor", {}).get("step"),
        "evals": payload.get("monitor", {}).get("evals"),
        "train_seconds": payload.get("monitor", {}).get("seconds"),
        **payload.get("identity", {}),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sha256": digest.decode(),
    }
    _replace_atomically(run_dir / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint file; CheckpointError if it is not intact."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read it ({e})") from None
    if not data.startswith(MAGIC):
        raise CheckpointError("not a physbench checkpoint (bad header)")
    digest, sep, body = data[len(MAGIC) :].partition(b"\n")
    if not sep or hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError("checksum mismatch: the file is corrupted or was cut short")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"unreadable payload ({type(e).__name__}: {e})") from None


class Checkpoints:
    """When one run saves (`every` seconds of wall clock, None: never) into `run_dir`, and the
    run directory it continues from (`resume_from`, None: a fresh run). `identity` is the
    run's code version and configuration hash; `say` prints a line for the user."""

    def __init__(
        self,
        run_dir: Path,
        every: float | None,
        identity: dict[str, str],
        resume_from: Path | None = None,
        say: Callable[[str], Any] = print,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.identity = dict(identity)
        self.resume_from = None if resume_from is None else Path(resume_from)
        self.say = say
        self.loaded_from: Path | None = None
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.every is not None and time.monotonic() - self._last >= self.every

    def save(self, payload: dict[str, Any]) -> None:
        write_checkpoint(self.run_dir, {"identity": self.identity, **payload})
        self._last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """The payload to continue from, or None (start from scratch); says which and why."""
        src = self.resume_from
        if src is None:
            return None
        tried = []
        for path in (src / NAME, src / PREVIOUS):
            if not path.exists():
                continue
            try:
                payload = read_checkpoint(path)
            except CheckpointError as e:
                self.say(f"checkpoint: {path} is unusable: {e}; trying the previous checkpoint")
                tried.append(path)
                continue
            theirs = payload.get("identity", {})
            if theirs != self.identity:
                self.say(
                    f"checkpoint: refused {path}: it was saved by code "
                    f"{theirs.get('code_version')} with configuration "
                    f"{theirs.get('config_hash')}, this run is code "
                    f"{self.identity['code_version']} with configuration "
                    f"{self.identity['config_hash']}; starting from scratch (check out that "
                    "code and configuration to continue it)"
                )
                return None
            step = payload.get("monitor", {}).get("step")
            self.say(f"checkpoint: continuing from step {step} of {path}")
            self.loaded_from = path
            return payload
        what = "no intact checkpoint" if tried else "no checkpoint"
        self.say(f"checkpoint: {what} in {src}; starting from scratch")
        return None

    def unsupported(self) -> None:
        """The method registered no state: say that a resumed run started over."""
        if self.resume_from is not None:
            self.say(
                "checkpoint: this method saves no checkpoints (it never calls "
                "report.checkpoint), so the resumed run started from scratch"
            )
            self.resume_from = None
