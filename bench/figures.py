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
