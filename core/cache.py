"""The on-disk cache of computed arrays: references, operator and family data, the classical
solver's error-against-cost ladder.

One `.npz` file per content key (a hash of everything that determines the content), written
atomically (parallel jobs never read a half-written file), holding its arrays and a JSON `meta`
with a checksum of the arrays. A file that cannot be read or does not verify is reported and
recomputed, never used. `PHYSBENCH_CACHE` moves the cache (default: `results/cache/`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cache_dir", "cached", "checksum", "content_key", "load", "save"]

log = logging.getLogger(__name__)
Arrays = dict[str, np.ndarray]


def cache_dir() -> Path:
    """Where computed arrays are cached (`PHYSBENCH_CACHE` overrides)."""
    env = os.environ.get("PHYSBENCH_CACHE")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "results" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(content: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of `content` as sorted JSON."""
    blob = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the arrays' names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """Write `arrays` and `meta` (plus the arrays' checksum) to `path`, atomically."""
    data = {k: np.asarray(v) for k, v in arrays.items()}
    blob = json.dumps({**meta, "checksum": checksum(data)}, default=str)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, meta=np.array(blob), **data)
    os.replace(tmp, path)


def load(path: Path) -> tuple[Arrays, dict[str, Any]] | None:
    """The arrays and meta of `path`, or None (with a warning) when the file is missing,
    unreadable, or its checksum does not match its arrays."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        if meta.pop("checksum", None) != checksum(arrays):
            raise ValueError("checksum mismatch")
        return arrays, meta
    except Exception as e:  # corrupt, truncated, or from an incompatible writer
        log.warning("cache file %s is unusable (%s); regenerating it", path, e)
        return None


def cached(
    path: Path, compute: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]
) -> tuple[Arrays, dict[str, Any], bool]:
    """`path`'s arrays and meta when it verifies, else `compute()`'s, saved; and whether they
    came from the cache."""
    got = load(path)
    if got is not None:
        return got[0], got[1], True
    arrays, meta = compute()
    save(path, arrays, meta)
    return {k: np.asarray(v) for k, v in arrays.items()}, dict(meta), False
