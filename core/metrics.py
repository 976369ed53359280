"""Harness-owned metrics: pure functions of predictions and reference values.

Every method is scored by these functions and nothing else, at the final iterate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rel_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Relative L2 error pooled over all points and fields: ||pred - ref|| / ||ref||."""
    den = np.linalg.norm(ref)
    num = np.linalg.norm(pred - ref)
    return float(num / den) if den > 0 else float(num)


def per_sample_rel_l2(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative L2 error of each sample (first axis) `[n]`, pooled over all other axes; the
    absolute error where a reference sample is zero."""
    n = len(ref)
    num = np.linalg.norm((pred - ref).reshape(n, -1), axis=1)
    den = np.linalg.norm(ref.reshape(n, -1), axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), num)


def rel_l2_per_field(pred: np.ndarray, ref: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Relative L2 error of each field (column) separately."""
    return {n: rel_l2(pred[:, j], ref[:, j]) for j, n in enumerate(names)}


def max_abs_err(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(pred - ref))) if pred.size else 0.0


def rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - ref) ** 2))) if pred.size else 0.0


def rms(residual: np.ndarray) -> float:
    """Root mean square of a residual array (all entries pooled)."""
    return float(np.sqrt(np.mean(np.square(residual)))) if residual.size else 0.0


def error_over_time(
    pred: np.ndarray, ref: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Relative L2 error at each distinct time `t` (pooled over space and fields)."""
    times = np.unique(t)
    errs = np.array([rel_l2(pred[t == s], ref[t == s]) for s in times])
    return times, errs


def field_metrics(pred: np.ndarray, ref: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The standard accuracy metrics of a prediction against the reference."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    out = {
        "rel_l2": rel_l2(pred, ref),
        "max_abs_err": max_abs_err(pred, ref),
        "rmse": rmse(pred, ref),
    }
    out.update({f"rel_l2/{n}": v for n, v in rel_l2_per_field(pred, ref, names).items()})
    return out
