"""Figures written for every run: prediction vs reference, |error|, convergence curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from problems.base import Reference  # noqa: E402


def plot_fields(
    ref: Reference,
    pred: np.ndarray,
    axes: Sequence[str],
    names: Sequence[str],
    path: Path,
) -> Path:
    """Reference, prediction and |error| for each field: maps on a 2-D grid, lines on 1-D."""
    err = np.abs(pred - ref.values)
    k = len(names)
    fig, ax = plt.subplots(k, 3, figsize=(13, 3.4 * k), squeeze=False)
    for j, name in enumerate(names):
        panels = [(ref.values[:, j], f"reference {name}"), (pred[:, j], f"prediction {name}")]
        panels.append((err[:, j], f"|error| {name}"))
        for c, (vals, title) in enumerate(panels):
            a = ax[j, c]
            if ref.grid is not None and len(ref.grid) == 2:
                g0, g1 = ref.grid
                m = a.pcolormesh(
                    g1,
                    g0,
                    vals.reshape(len(g0), len(g1)),
                    shading="auto",
                    cmap="magma" if c == 2 else "RdBu_r",
                )
                a.set_xlabel(axes[1])
                a.set_ylabel(axes[0])
                fig.colorbar(m, ax=a)
            elif ref.grid is not None and len(ref.grid) == 1:
                a.plot(ref.grid[0], vals)
                a.set_xlabel(axes[0])
            else:
                s = a.scatter(
                    ref.points[:, 0],
                    ref.points[:, min(1, ref.points.shape[1] - 1)],
                    c=vals,
                    s=2,
                    cmap="magma" if c == 2 else "RdBu_r",
                )
                fig.colorbar(s, ax=a)
            a.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curve(curve: pd.DataFrame, path: Path) -> Path:
    """rel_l2 and the total loss against optimiser step and against training seconds."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    for a, x in zip(ax, ("step", "seconds")):
        for col, style in (("rel_l2", "-o"), ("loss", "-")):
            if col in curve and curve[col].notna().any():
                a.semilogy(curve[x], curve[col], style, ms=3, label=col)
        a.set_xlabel("training seconds" if x == "seconds" else "step")
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rollout_error(growth: pd.DataFrame, path: Path) -> Path:
    """Operator learners: mean rel_l2 (± one std over samples) at each rollout frame, and the
    one-step error at the same frames."""
    fig, a = plt.subplots(figsize=(6.5, 3.8))
    t, m, s = growth["time"], growth["rel_l2_mean"], growth["rel_l2_std"]
    a.semilogy(t, m, "-o", ms=3, label="rollout")
    a.fill_between(t, np.maximum(m - s, m * 1e-3), m + s, alpha=0.2)
    a.semilogy(t, growth["one_step_mean"], "--", label="one step")
    a.set_xlabel("time")
    a.set_ylabel("rel_l2")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_operator_sample(
    pred: np.ndarray, ref: np.ndarray, times: np.ndarray, grid: Sequence[np.ndarray], path: Path
) -> Path:
    """One test trajectory (first channel): reference, prediction and |error|; space-time maps
    for 1-D data, the last frame for 2-D data."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    if len(grid) == 1:
        panels = [ref[:, 0], pred[:, 0], np.abs(pred[:, 0] - ref[:, 0])]
        extent = (grid[0][0], grid[0][-1], times[0], times[-1])
        labels = ("x", "t")
    else:
        panels = [ref[-1, 0], pred[-1, 0], np.abs(pred[-1, 0] - ref[-1, 0])]
        extent = (grid[1][0], grid[1][-1], grid[0][0], grid[0][-1])
        labels = ("y", "x")
    for c, (a, vals, title) in enumerate(zip(ax, panels, ("reference", "prediction", "|error|"))):
        m = a.imshow(
            vals, origin="lower", aspect="auto", extent=extent, cmap="magma" if c == 2 else "RdBu_r"
        )
        a.set_xlabel(labels[0])
        a.set_ylabel(labels[1])
        a.set_title(title + ("" if len(grid) == 1 else f" at t = {times[-1]:.3g}"))
        fig.colorbar(m, ax=a)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
