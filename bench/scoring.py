"""One way to score: the `Scorer` protocol and its three kinds.

A run's scorer prepares the test data before training (so that its cost is never training
time), scores the predictor during training (`curve_score`, the monitor's target), scores it at
the final iterate (`final`), and writes its outputs (`write`). `make_scorer` picks the kind
from what the method needs of the problem:

- `PointwiseScorer`: single-instance problems, on the problem's reference (`score`);
- `OperatorRunScorer`: operator data (`bench.operator_eval`), rollouts of the test split;
- `FamilyRunScorer`: family data (`bench.family_eval`), the window after the observed part.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from bench.family_eval import FamilyScorer, prepare_family_data, write_family_outputs
from bench.monitor import Monitor, reference_score
from bench.operator_eval import (
    OperatorScorer,
    prepare_operator_data,
    speedup,
    write_operator_outputs,
)
from bench.outputs import write_outputs
from core import metrics
from methods.base import Predictor
from problems.base import Problem

__all__ = ["PointwiseScorer", "Scorer", "make_scorer", "score"]

RESIDUAL_CHUNK = 512  # points per residual evaluation when scoring


class Scorer(Protocol):
    """How a run is scored (module doc)."""

    def curve_score(self, predictor: Any) -> float: ...

    def final(self, predictor: Any) -> dict[str, float]: ...

    def write(
        self,
        out_dir: Path,
        record: dict[str, Any],
        monitor: Monitor | None,
        figures: bool,
        predictions: bool = True,
    ) -> list[Path]: ...


def make_scorer(
    problem: Problem,
    needs: frozenset[str] | set[str],
    budget_name: str,
    mode: str,
    residual_points: int,
    seed: int,
    device: torch.device,
) -> Scorer:
    """The scorer for a method with `needs` on `problem`, its data prepared."""
    if "operator_data" in needs:
        return OperatorRunScorer(problem, *prepare_operator_data(problem, budget_name, mode))
    if "family_data" in needs:
        return FamilyRunScorer(*prepare_family_data(problem, budget_name, mode))
    return PointwiseScorer(problem, residual_points, seed, device)


def score(
    problem: Problem,
    predictor: Predictor,
    n_residual: int,
    seed: int,
    device: torch.device,
) -> tuple[dict[str, float], np.ndarray]:
    """Final metrics at the final iterate: accuracy on the reference, residual on fresh points."""
    ref = problem.reference()
    t0 = time.perf_counter()
    pred = np.asarray(predictor(ref.points), dtype=np.float64).reshape(ref.values.shape)
    out = {"inference_seconds": time.perf_counter() - t0}
    if np.all(np.isfinite(pred)):
        pred = ref.align(pred)  # gauge fields (pressure) compared up to a constant
    out.update(metrics.field_metrics(pred, ref.values, problem.fields))
    for name, points in problem.points_of_interest().items():  # apart from the set
        if ref.exact is not None:
            at = np.asarray(predictor(points), dtype=np.float64).reshape(-1)
            out[f"rel_err_{name}"] = metrics.rel_l2(at, ref.exact(points).reshape(-1))
    # the trivial predictor (each field's mean over the reference; zeros would score 1): a
    # method's rel_l2 means something only well below it (the accuracy gate's rule)
    mean = np.broadcast_to(ref.values.mean(axis=0), ref.values.shape)
    out["rel_l2_trivial"] = metrics.rel_l2(ref.align(np.array(mean)), ref.values)
    for group, names in problem.field_groups.items():
        cols = [problem.fields.index(n) for n in names]
        out[f"rel_l2_{group}"] = metrics.rel_l2(pred[:, cols], ref.values[:, cols])
    if problem.time_dependent:  # time is the last axis (docs/architecture.md)
        t = ref.points[:, -1]
        if ref.grid is not None:  # the error at the last time of the grid
            _, err_t = metrics.error_over_time(pred, ref.values, t)
            out["rel_l2_final_time"] = float(err_t[-1])
        else:  # scattered times: the error over the last tenth of the time range
            late = t >= t.max() - 0.1 * (t.max() - t.min())
            out["rel_l2_final_time"] = metrics.rel_l2(pred[late], ref.values[late])
    if n_residual > 0 and "residual" in problem.capabilities:
        g = torch.Generator().manual_seed(10_000_019 + seed)  # never the training points
        x = problem.sample_interior(n_residual, g).to(device)
        chunks = []  # in chunks: nested-autograd graphs of d-dimensional inputs are large
        diags: dict[str, list[np.ndarray]] = {}
        for xs in x.split(RESIDUAL_CHUNK):
            f = predictor.fields(xs)
            if f is None:
                break
            chunks.append(problem.residual(f).detach().double().cpu().numpy())
            for name, value in problem.diagnostics(f).items():
                diags.setdefault(name, []).append(value.detach().double().cpu().numpy())
        if chunks:
            out["residual_rms"] = metrics.rms(np.concatenate(chunks))
        out.update({f"{k}_rms": metrics.rms(np.concatenate(v)) for k, v in diags.items()})
    return out, pred


class PointwiseScorer:
    """A single-instance problem scored on its reference (`score`), with its invariants."""

    def __init__(
        self, problem: Problem, residual_points: int, seed: int, device: torch.device
    ) -> None:
        self.problem, self.residual_points, self.seed, self.device = (
            problem, residual_points, seed, device,
        )  # fmt: skip
        self.reference = problem.reference()
        self.curve_score = reference_score(self.reference)
        self.pred: np.ndarray | None = None

    def final(self, predictor: Any) -> dict[str, float]:
        out, self.pred = score(
            self.problem, predictor, self.residual_points, self.seed, self.device
        )
        out.update(self.problem.invariants(self.reference.points, self.pred))
        return out

    def write(
        self,
        out_dir: Path,
        record: dict[str, Any],
        monitor: Monitor | None,
        figures: bool,
        predictions: bool = True,
    ) -> list[Path]:
        return write_outputs(
            out_dir, record, monitor, self.problem, self.pred, figures, predictions
        )


class OperatorRunScorer:
    """Operator data: rollouts of the test split (`bench.operator_eval.OperatorScorer`), the
    data's cost and the speed-up over the classical solver at matched error."""

    def __init__(
        self, problem: Problem, scorer: OperatorScorer, data_metrics: dict[str, float]
    ) -> None:
        self.problem, self.scorer, self.data_metrics = problem, scorer, data_metrics
        self.curve_score = scorer.curve_score
        self.pred: np.ndarray | None = None
        self.growth: dict[str, np.ndarray] | None = None

    def final(self, predictor: Any) -> dict[str, float]:
        out, self.pred, self.growth = self.scorer.score(predictor)
        out.update(self.data_metrics)
        out.update(speedup(self.problem, self.scorer, out))
        return out

    def write(
        self,
        out_dir: Path,
        record: dict[str, Any],
        monitor: Monitor | None,
        figures: bool,
        predictions: bool = True,
    ) -> list[Path]:
        return write_operator_outputs(
            out_dir, record, monitor, self.scorer, self.pred, self.growth, figures, predictions
        )


class FamilyRunScorer:
    """Family data: the window after the observed part (`bench.family_eval.FamilyScorer`)."""

    def __init__(self, scorer: FamilyScorer, data_metrics: dict[str, float]) -> None:
        self.scorer, self.data_metrics = scorer, data_metrics
        self.curve_score = scorer.curve_score
        self.extra: dict[str, Any] | None = None

    def final(self, predictor: Any) -> dict[str, float]:
        out, self.extra = self.scorer.score(predictor)
        out.update(self.data_metrics)
        return out

    def write(
        self,
        out_dir: Path,
        record: dict[str, Any],
        monitor: Monitor | None,
        figures: bool,
        predictions: bool = True,
    ) -> list[Path]:
        paths = write_outputs(out_dir, record, monitor, None, None, figures)
        if self.extra is not None:
            paths += write_family_outputs(out_dir, self.scorer, self.extra, predictions)
        return paths
