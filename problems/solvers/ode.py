"""DOP853 integration of small float64 ODE systems, for references and their checks.

`integrate` is scipy's DOP853 (Dormand–Prince 8(5,3) with its 7th-order dense output) with the
settings a reference wants: float64, tight tolerances, values at given times, and an exception
instead of a silent partial result. `self_convergence` integrates twice, at `rtol` and at
`rtol / factor`, and returns the largest difference: for a trustworthy reference it sits near
the requested tolerance; for a chaotic system past its predictability horizon it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.integrate import solve_ivp

__all__ = ["Rhs", "integrate", "self_convergence"]

Rhs = Callable[[float, np.ndarray], Sequence[float] | np.ndarray]
"""`rhs(t, y) -> y'` for a first-order system."""


def integrate(
    rhs: Rhs,
    y0: Sequence[float],
    t: np.ndarray,
    rtol: float = 1e-12,
    atol: float | None = None,
    t0: float = 0.0,
    method: str = "DOP853",
) -> np.ndarray:
    """Solve `y' = rhs(t, y)`, `y(t0) = y0`, and return `y` at the times `t`.

    Arguments:
        rhs: the right-hand side, `(t, y) -> y'`.
        y0: initial state at `t0`.
        t: non-decreasing output times, all `>= t0`.
        rtol, atol: tolerances (`atol` defaults to `rtol`: the states here are O(1)).
        method: a scipy `solve_ivp` method; DOP853 unless a test wants a second opinion.
    Returns:
        `[len(t), len(y0)]` float64 array (rows at `t == t0` are `y0` exactly).
    """
    t = np.asarray(t, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("t must be a non-empty 1-D array of output times")
    if np.any(np.diff(t) < 0) or t[0] < t0:
        raise ValueError("output times must be non-decreasing and not before t0")
    y0 = np.asarray(y0, dtype=np.float64)
    out = np.empty((t.size, y0.size))
    start = t == t0
    out[start] = y0
    later = t[~start]
    if later.size:
        sol = solve_ivp(
            rhs,
            (t0, float(later[-1])),
            y0,
            method=method,
            t_eval=later,
            rtol=rtol,
            atol=rtol if atol is None else atol,
        )
        if sol.status != 0 or sol.y.shape[1] != later.size:
            raise RuntimeError(f"{method} failed: {sol.message}")
        out[~start] = sol.y.T
    return out


def self_convergence(
    rhs: Rhs,
    y0: Sequence[float],
    t: np.ndarray,
    rtol: float = 1e-12,
    factor: float = 10.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The solution at `rtol` and its largest difference from a solve at `rtol / factor`.

    Returns:
        `(y, diff)`: `y` as from `integrate(rhs, y0, t, rtol)`, and `diff[k]`, the largest
        absolute difference of component `k` over all times.
    """
    y = integrate(rhs, y0, t, rtol=rtol)
    y_fine = integrate(rhs, y0, t, rtol=rtol / factor)
    return y, np.max(np.abs(y - y_fine), axis=0)
