"""`classical`: the problem's own solver as a competitor on operator problems.

It learns nothing: it advances each test trajectory from its last context frame with the
problem's `solve` capability at a configurable resolution (coarser grid and/or larger time
step than the solver that generated the data; `{}` is the data's own resolution, which makes
the error zero up to float32 storage). Its row in a leaderboard shows the error a classical
solver reaches at a given cost, so a neural method's speed-up is always stated at equal
accuracy (the harness also reports `speedup_at_matched_error` for every operator method,
against the solver's whole error-against-cost ladder).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from methods.base import Budget, Method, OperatorPredictor, Report
from problems.base import ConfigError, Problem
from problems.capabilities import OperatorDataSource, Solvable, capability, data_scale

__all__ = ["Classical", "ClassicalPredictor"]


class ClassicalPredictor(OperatorPredictor):
    """Rolls trajectories forward with `problem.solve` at `resolution`; frames `dt` apart."""

    def __init__(self, problem: Problem, resolution: Mapping[str, Any], dt: float) -> None:
        self.problem = problem
        self.resolution = dict(resolution)
        self.dt = dt

    def rollout(self, window: np.ndarray, inputs: np.ndarray, steps: int) -> np.ndarray:
        times = self.dt * np.arange(steps + 1)
        out = self.problem.solve(window[:, -1], inputs, times, dict(self.resolution))
        return np.asarray(out, dtype=np.float64)


class Classical(Method):
    """The classical solver at `resolution` (see the module doc).

    Arguments:
        resolution: the problem's solver settings, e.g. `{n: 64}` or `{s: 32, dt: 0.02}`;
            `{}` uses the data's own resolution. The keys each problem accepts are listed by
            its `classical_ladder()`.
        rung: instead of `resolution`, the index of a rung of the problem's
            `classical_ladder()` (0 = the finest); null = use `resolution`.
    """

    name = "classical"

    needs = frozenset({"operator_data", "solve"})
    smoke: ClassVar[dict[str, Any]] = {}

    def __init__(self, resolution: Mapping[str, Any] | None = None, rung: int | None = 1):
        super().__init__()
        if resolution is not None and not isinstance(resolution, Mapping):
            raise ConfigError(
                f"method.resolution must be a mapping of solver settings, got {resolution!r}"
            )
        if rung is not None and (isinstance(rung, bool) or not isinstance(rung, int) or rung < 0):
            raise ConfigError(f"method.rung must be null or an integer >= 0, got {rung!r}")
        self.resolution = dict(resolution or {})
        self.rung = rung

    def fit(self, problem: Problem, budget: Budget, report: Report) -> OperatorPredictor:
        resolution = self.resolution
        if self.rung is not None:
            ladder = list(capability(problem, Solvable).classical_ladder())
            if self.rung >= len(ladder):
                raise ConfigError(
                    f"method.rung={self.rung}, but {problem.name} has {len(ladder)} rungs "
                    f"(0..{len(ladder) - 1}): {ladder}"
                )
            resolution = dict(ladder[self.rung])
        # the frame spacing, from the training split's times (the test split stays unseen)
        source = capability(problem, OperatorDataSource)
        times = source.operator_data("train", data_scale(budget.name)).times
        predictor = ClassicalPredictor(problem, resolution, float(times[1] - times[0]))
        report(1, evals=0, predictor=predictor)
        return predictor
