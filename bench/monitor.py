"""The harness side of `report`: budget accounting, scheduled evaluation, the training curve.

`Monitor` is what `Method.fit` receives as `report`. It keeps the training clock (paused while
the harness evaluates, so evaluation never eats a method's budget), counts steps and function
evaluations, evaluates the latest predictor on the reference (or the operator test
split) every `eval_every` steps, records
one curve row per evaluation, and tells the method to stop when a cap is hit or the loss is no
longer finite. Observers (progress display, MLflow) get every curve row as it is written.

With `checkpoints` set (`bench.checkpoint.Checkpoints`), the state a method registers with
`checkpoint` is saved on that schedule at the end of a `report` call, with the monitor's own
counters and the random states; a run that continues an earlier one gets them back when the
method registers, and the training clock, steps, evaluations and curve go on from there.
Saving is harness time, like evaluation: it is not charged to training (`checkpoint_seconds`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.checkpoint import Checkpoints, rng_state, set_rng_state
from core import metrics
from methods.base import Budget, Checkpointable, Predictor
from problems.base import Reference

Row = dict[str, float]


def reference_score(reference: Reference) -> Callable[[Predictor], float]:
    """rel_l2 of a pointwise predictor on `reference` (gauge fields aligned)."""

    def score(predictor: Predictor) -> float:
        pred = np.asarray(predictor(reference.points), dtype=np.float64)
        if not np.all(np.isfinite(pred)):
            return float("nan")
        return metrics.rel_l2(reference.align(pred), reference.values)

    return score


class Monitor:
    """Implements the `Report` protocol of `methods.base` for one run.

    `target` is the reference of a pointwise problem, or any function that scores a predictor
    (operator learners: `bench.operator_eval.OperatorScorer.curve_score`).
    """

    def __init__(
        self,
        budget: Budget,
        target: Reference | Callable[[Predictor], float],
        observers: list[Callable[[Row], Any]] | None = None,
        ticker: Callable[[Monitor], Any] | None = None,
    ) -> None:
        self.budget = budget
        self.score = reference_score(target) if isinstance(target, Reference) else target
        self.observers = list(observers or [])
        self.ticker = ticker  # called after every step (progress display)
        self.step = 0
        self.evals = 0
        self.scalars: dict[str, float] = {}
        self.curve: list[Row] = []
        self.predictor: Predictor | None = None
        self.stop_reason: str | None = None
        self.diverged = False
        self.eval_seconds = 0.0
        self.excluded: dict[str, float] = {}  # one-off preparation the method declared
        self.train_seconds = 0.0  # `seconds` when fit returned (set by the harness)
        self._t0: float | None = None
        self._last_eval_step = -1
        self.checkpoints: Checkpoints | None = None
        self._state: Checkpointable | None = None

    # -- clock ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the training clock (the harness calls this just before `fit`)."""
        self._t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Training seconds so far, excluding the harness's own evaluations and what the method
        declared as preparation (`exclude`)."""
        if self._t0 is None:
            return 0.0
        return time.perf_counter() - self._t0 - self.eval_seconds - sum(self.excluded.values())

    # -- the Report protocol ----------------------------------------------------------------
    def __call__(
        self,
        step: int,
        *,
        evals: int | None = None,
        predictor: Predictor | None = None,
        **scalars: float,
    ) -> bool:
        if self._t0 is None:
            self.start()
        self.step = int(step)
        self.evals = int(evals) if evals is not None else self.step
        if predictor is not None:
            self.predictor = predictor
        self.scalars = {k: float(v) for k, v in scalars.items()}
        # a non-finite loss is a divergence; a method's other scalars (a validation score of a
        # rollout that blew up) are logged as they are
        if any(not math.isfinite(v) for k, v in self.scalars.items() if k.startswith("loss")):
            self.diverged = True
            self.stop_reason = "diverged"
            self.evaluate()
            return True
        every = self.budget.eval_every
        if self.step // every > self._last_eval_step // every or not self.curve:
            # on the schedule (the first report at or past each multiple of eval_every: an
            # optimiser that reports in chunks of iterations may step over the multiple
            # itself), and once at the start of the curve
            self.evaluate()
        reason = self._cap_hit()
        if self.ticker is not None:
            self.ticker(self)
        if reason:
            self.stop_reason = reason
            return True
        if self.checkpoints is not None:
            if self._state is None:
                self.checkpoints.unsupported()
            elif self.checkpoints.due():
                self._save()
        return False

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, state: Checkpointable) -> int:
        """Register the method's state (the Report protocol); when this run continues an
        earlier one, restore it, the counters and the random states, and return the step to
        continue after (0: a fresh start)."""
        if self._t0 is None:
            self.start()
        self._state = state
        payload = None if self.checkpoints is None else self.checkpoints.load()
        if payload is None:
            return 0
        state.load_state_dict(payload["method"])
        self._restore(payload["monitor"])
        set_rng_state(payload["rng"])
        if self.checkpoints.every is not None:  # this run's own directory continues the chain
            self._save()
        return self.step

    def _save(self) -> None:
        assert self.checkpoints is not None and self._state is not None
        t = time.perf_counter()
        counters = {
            "step": self.step,
            "evals": self.evals,
            "seconds": self.seconds,
            "eval_seconds": self.eval_seconds,
            "excluded": dict(self.excluded),
            "curve": list(self.curve),
            "scalars": dict(self.scalars),
            "last_eval_step": self._last_eval_step,
        }
        self.checkpoints.save(
            {"method": self._state.state_dict(), "monitor": counters, "rng": rng_state()}
        )
        self.exclude("checkpoint", time.perf_counter() - t)

    def _restore(self, saved: dict[str, Any]) -> None:
        """Continue the counters of a checkpoint: training seconds go on from its value (the
        clock's origin moves back by what it had counted), the curve rows it holds are
        passed to the observers again (this run's log starts complete)."""
        excluded = {k: float(v) for k, v in saved["excluded"].items()}
        shift = float(saved["seconds"]) + float(saved["eval_seconds"]) + sum(excluded.values())
        assert self._t0 is not None
        self._t0 -= shift
        self.eval_seconds += float(saved["eval_seconds"])
        for k, v in excluded.items():
            self.excluded[k] = self.excluded.get(k, 0.0) + v
        self.step, self.evals = int(saved["step"]), int(saved["evals"])
        self.scalars = dict(saved["scalars"])
        self._last_eval_step = int(saved["last_eval_step"])
        self.curve = [dict(r) for r in saved["curve"]]
        for row in self.curve:
            for obs in self.observers:
                obs(row)

    def fraction_used(self) -> float:
        """The largest fraction of any cap used so far (drives the progress bar and ETA)."""
        b = self.budget
        parts = [self.step / b.steps]
        if b.evals is not None:
            parts.append(self.evals / b.evals)
        if b.seconds is not None:
            parts.append(self.seconds / b.seconds)
        return min(max(parts), 1.0)

    def evals_left(self) -> int | None:
        return None if self.budget.evals is None else max(self.budget.evals - self.evals, 0)

    def exclude(self, name: str, seconds: float) -> None:
        if self._t0 is None:
            self.start()
        self.excluded[name] = self.excluded.get(name, 0.0) + max(float(seconds), 0.0)

    def _cap_hit(self) -> str | None:
        b = self.budget
        if self.step >= b.steps:
            return "steps"
        if b.evals is not None and self.evals >= b.evals:
            return "evals"
        if b.seconds is not None and self.seconds >= b.seconds:
            return "seconds"
        return None

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> Row | None:
        """Score the latest predictor on the reference and append a curve row (once per step)."""
        if self.step == self._last_eval_step:
            return self.curve[-1] if self.curve else None
        t = time.perf_counter()
        row: Row = {"step": self.step, "seconds": self.seconds, "evals": self.evals}
        row.update(self.scalars)
        if self.predictor is not None:
            row["rel_l2"] = self.score(self.predictor)
        self.eval_seconds += time.perf_counter() - t
        self._last_eval_step = self.step
        self.curve.append(row)
        for obs in self.observers:
            obs(row)
        return row

    def finish(self) -> None:
        """Close the curve with a row at the final step, and name why training ended."""
        if self.stop_reason is None:
            self.stop_reason = "method"  # the method ended on its own schedule
        self.evaluate()
