"""Harness-owned scoring of operator learners on a problem's test split.

Every operator predictor is given the first `context` frames of each test trajectory (and the
sample's input channels) and scored on the frames after them:

- `rel_l2`: full rollout, the mean over samples of each sample's relative L2 error over all its
  predicted frames (its spread: `rel_l2_std`, `rel_l2_p90`);
- `rel_l2_one_step`: one step from true frames, the mean over samples and start frames (not
  for `whole_window` predictors, whose one step costs a whole window per start frame);
- `rel_l2_final_time`: the mean error of the last frame; the error of every rollout frame goes
  to `rollout_error.csv` (error growth over rollout time);
- `pde_residual` (problems with `grid_residuals`): the RMS of the problem's discrete PDE (and
  boundary) residuals over the rolled-out frames, from the last context frame on, pooled over
  samples and points; `pde_residual_data` is the same for the true test frames, the floor that
  the frame spacing sets; where there are several terms, each also on its own
  (`pde_residual/<term>`, e.g. `pde_residual/left` for a boundary condition), since the pooled
  number is dominated by the interior's points;
- `inference_seconds_per_sample`: the rollout's wall time per trajectory;
- `speedup_at_matched_error`: the classical solver's cost per sample at the rollout error the
  method reached (interpolated on the solver's error-against-cost ladder, log-log), divided by
  the method's inference cost. Above 1 the method is faster at equal accuracy.

Errors are relative L2 (not squared), per sample, pooled over channels and grid.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.cache import cache_dir, cached, content_key
from core.metrics import per_sample_rel_l2
from methods.base import OperatorPredictor
from problems.base import OperatorData, Problem
from problems.capabilities import Solvable, capability

__all__ = [
    "OperatorScorer",
    "classical_curve",
    "grid_residual_rms",
    "grid_residual_terms",
    "matched_cost",
    "prepare_operator_data",
    "speedup",
]

log = logging.getLogger(__name__)

CURVE_SAMPLES = 16  # test trajectories scored for the training curve (all of them at the end)


def _frame_errors(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """`[n, T]` relative L2 error of each sample at each frame."""
    n, T = ref.shape[:2]
    return per_sample_rel_l2(pred.reshape(n * T, -1), ref.reshape(n * T, -1)).reshape(n, T)


class OperatorScorer:
    """Scores operator predictors on `test` (`problem.operator_data("test", scale)`)."""

    def __init__(self, problem: Problem, test: OperatorData) -> None:
        self.problem = problem
        self.test = test
        self.context = int(getattr(problem, "context", 1))
        self.steps = test.outputs.shape[1] - self.context

    def rollout(
        self, predictor: OperatorPredictor, idx: slice = slice(None)
    ) -> tuple[np.ndarray, float]:
        """The predicted frames `[n, steps, c, *grid]` of test samples `idx`, and seconds."""
        window = self.test.outputs[idx, : self.context].astype(np.float64)
        inputs = self.test.inputs[idx].astype(np.float64)
        t0 = time.perf_counter()
        pred = np.asarray(predictor.rollout(window, inputs, self.steps), dtype=np.float64)
        seconds = time.perf_counter() - t0
        want = (len(window), self.steps, *self.test.outputs.shape[2:])
        if pred.shape != want:
            raise ValueError(f"rollout returned shape {pred.shape}, expected {want}")
        return pred, seconds

    def curve_score(self, predictor: OperatorPredictor) -> float:
        """Rollout rel_l2 on the first test samples, for the training curve."""
        pred, _ = self.rollout(predictor, slice(0, CURVE_SAMPLES))
        ref = self.test.outputs[:CURVE_SAMPLES, self.context :]
        if not np.all(np.isfinite(pred)):
            return float("nan")
        return float(per_sample_rel_l2(pred, ref).mean())

    def one_step(self, predictor: OperatorPredictor) -> np.ndarray:
        """`[n, steps]` errors of one step from the true frames before each predicted frame."""
        out = self.test.outputs.astype(np.float64)
        errs = []
        for k in range(self.context, out.shape[1]):
            window = out[:, k - self.context : k]
            pred = np.asarray(predictor.rollout(window, self.test.inputs, 1), dtype=np.float64)
            errs.append(per_sample_rel_l2(pred[:, 0], out[:, k]))
        return np.stack(errs, axis=1)

    def persistence(self) -> dict[str, float]:
        """The trivial predictor's errors (`*_trivial`): every predicted frame is the frame before
        it, i.e. the last context frame for the rollout and the previous true frame for one step.
        A method's error means something only well below these (the accuracy gate's rule)."""
        out = self.test.outputs.astype(np.float64)
        ref = out[:, self.context :]
        held = np.broadcast_to(out[:, self.context - 1 : self.context], ref.shape)
        return {
            "rel_l2_trivial": float(per_sample_rel_l2(held, ref).mean()),
            "rel_l2_one_step_trivial": float(
                _frame_errors(out[:, self.context - 1 : -1], ref).mean()
            ),
        }

    def score(self, predictor: OperatorPredictor) -> tuple[dict[str, float], np.ndarray, Any]:
        """Final metrics, the predicted frames and the per-frame error table."""
        pred, seconds = self.rollout(predictor)
        reported = {f"method/{k}": float(v) for k, v in predictor.diagnostics().items()}
        ref = self.test.outputs[:, self.context :].astype(np.float64)
        n = len(ref)
        out: dict[str, float] = {
            "inference_seconds": seconds,
            "inference_seconds_per_sample": seconds / n,
            "test_samples": float(n),
            "rollout_steps": float(self.steps),
            **reported,
        }
        if not np.all(np.isfinite(pred)):
            out["rel_l2"] = float("nan")
            return out, pred, None
        out.update(self.persistence())
        per_sample = per_sample_rel_l2(pred, ref)
        frames = _frame_errors(pred, ref)  # [n, steps]
        out.update(
            rel_l2=float(per_sample.mean()),
            rel_l2_std=float(per_sample.std()),
            rel_l2_median=float(np.median(per_sample)),
            rel_l2_p90=float(np.quantile(per_sample, 0.9)),
            rel_l2_final_time=float(frames[:, -1].mean()),
            max_abs_err=float(np.abs(pred - ref).max()),
            rmse=float(np.sqrt(np.mean((pred - ref) ** 2))),
        )
        if predictor.whole_window:
            one = np.full_like(frames, np.nan)
        else:
            one = self.one_step(predictor)
            out["rel_l2_one_step"] = float(one.mean())
            out["rel_l2_one_step_std"] = float(one.mean(axis=1).std())
        if "grid_residuals" in self.problem.capabilities:
            start = self.test.outputs[:, self.context - 1 : self.context].astype(np.float64)
            times = self.test.times[self.context - 1 :]
            inputs = self.test.inputs.astype(np.float64)
            rolled = np.concatenate([start, pred], axis=1)
            true = self.test.outputs[:, self.context - 1 :]
            for key, frames_ in (("pde_residual", rolled), ("pde_residual_data", true)):
                terms = grid_residual_terms(self.problem, frames_, inputs, times)
                out[key] = terms.pop("")
                if len(terms) > 1:
                    out.update({f"{key}/{name}": v for name, v in terms.items()})
        times = self.test.times[self.context :]
        growth = {
            "frame": np.arange(1, self.steps + 1),
            "time": times,
            "rel_l2_mean": frames.mean(axis=0),
            "rel_l2_std": frames.std(axis=0),
            "one_step_mean": one.mean(axis=0),
        }
        return out, pred, growth


def grid_residual_rms(problem: Any, frames: np.ndarray, *args: Any, **kw: Any) -> float:
    """The pooled RMS of `grid_residual_terms`."""
    return grid_residual_terms(problem, frames, *args, **kw)[""]


def grid_residual_terms(
    problem: Any,
    frames: np.ndarray,
    inputs: np.ndarray,
    times: np.ndarray,
    skip: int = 0,
    batch: int = 16,
) -> dict[str, float]:
    """RMS over samples and masked points of the `problem.grid_residuals` of `frames`
    `[n, T, c, *grid]` at `times`, leaving out the first `skip` frames (e.g. the start of the
    backward differences); float64, `batch` samples at a time. Pooled over every term (key
    `""`) and per term (its name): the pooled number is dominated by the interior's points,
    and a boundary condition that a method violates shows in its own term."""
    import torch

    from problems.capabilities import frame_residuals

    shape = (frames.shape[1], *frames.shape[3:])
    masks = {k: torch.as_tensor(v[skip:]) for k, v in problem.grid_masks(shape).items()}
    t = torch.as_tensor(np.asarray(times, dtype=np.float64))
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    with torch.no_grad():
        for i in range(0, len(frames), batch):
            u = torch.as_tensor(np.asarray(frames[i : i + batch], dtype=np.float64))
            x = torch.as_tensor(np.asarray(inputs[i : i + batch], dtype=np.float64))
            for name, r in frame_residuals(problem, u, x, t).items():
                vals = r[:, skip:][:, masks[name]]
                total[name] = total.get(name, 0.0) + float(vals.square().sum())
                count[name] = count.get(name, 0) + vals.numel()
    out = {k: math.sqrt(total[k] / max(count[k], 1)) for k in total}
    out[""] = math.sqrt(sum(total.values()) / max(sum(count.values()), 1))
    return out


# -- the classical solver's error against cost -------------------------------------------------
def classical_curve(problem: Problem, test: OperatorData, max_samples: int = 16) -> list[dict]:
    """Rollout error and seconds per sample of the problem's solver at each rung of its
    `classical_ladder()`, on the first `max_samples` test trajectories, from the last context
    frame. Cached on disk by the test data's key and the ladder."""
    solver = capability(problem, Solvable)
    ladder = list(solver.classical_ladder())
    context = int(getattr(problem, "context", 1))
    key = content_key({"data": test.meta.get("key"), "ladder": ladder, "n": max_samples,
                       "ctx": context})  # fmt: skip
    path = cache_dir() / f"classical-{problem.name}-{key}.npz"

    def measure() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n = min(max_samples, len(test.outputs))
        ref = test.outputs[:n, context:].astype(np.float64)
        start = test.outputs[:n, context - 1].astype(np.float64)
        times = test.times[context - 1 :] - test.times[context - 1]
        rows = []
        for res in ladder:
            t0 = time.perf_counter()
            pred = np.asarray(solver.solve(start, test.inputs[:n], times, dict(res)))
            seconds = (time.perf_counter() - t0) / n
            err = per_sample_rel_l2(pred, ref)
            rows.append(
                {"resolution": res, "rel_l2": float(err.mean()), "seconds_per_sample": seconds}
            )
        return {}, {"rows": rows}

    _, meta, _ = cached(path, measure)
    return list(meta["rows"])


def matched_cost(curve: Sequence[dict], error: float) -> float | None:
    """The classical cost per sample at `error`: log-log interpolation between the cheapest
    rung at or below `error` and the next cheaper rung above it; the cheapest rung's cost when
    every rung is at least that accurate; None when no rung reaches `error`."""
    pts = sorted(
        (r["seconds_per_sample"], r["rel_l2"])
        for r in curve
        if math.isfinite(r["rel_l2"]) and r["seconds_per_sample"] > 0
    )
    if not pts or not math.isfinite(error):
        return None
    good = [i for i, (_, e) in enumerate(pts) if e <= error]
    if not good:
        return None
    j = good[0]
    if j == 0:
        return pts[0][0]
    (s_hi, e_hi), (s_lo, e_lo) = pts[j - 1], pts[j]  # cheaper and worse, dearer and better
    if e_lo <= 0 or e_hi <= e_lo or error <= 0:
        return s_lo
    w = (math.log(e_hi) - math.log(error)) / (math.log(e_hi) - math.log(e_lo))
    return float(math.exp(math.log(s_hi) + w * (math.log(s_lo) - math.log(s_hi))))


# -- the run's side -----------------------------------------------------------------------------
def load_splits(
    problem: Problem, load: Callable[..., Any], splits: Sequence[str], scale: str, mode: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """`load(split, scale, progress)` for each split, with a progress display; the splits by
    name, and the data metrics (`data_seconds`: the generation time of all splits, also when
    they came from the cache: the data's cost is part of every data-driven method's cost)."""
    from bench.console import DataProgress

    seconds, cached, out = 0.0, True, {}
    for split in splits:
        progress = DataProgress(f"{problem.name}: generating the {split} split ({scale})", mode)
        try:
            data = load(split, scale, progress)
        finally:
            progress.close()
        seconds += float(data.meta.get("seconds", 0.0))
        cached = cached and bool(data.meta.get("cached", False))
        out[split] = data
    return out, {"data_seconds": seconds, "data_cached": float(cached)}


def prepare_operator_data(
    problem: Problem, budget_name: str, mode: str
) -> tuple[OperatorScorer, dict[str, float]]:
    """Every split at the budget's scale, generated or loaded before training starts, so
    generation never counts as training time; the scorer on the test split, and the data
    metrics (`load_splits`)."""
    from problems.capabilities import SPLITS, data_scale

    scale = data_scale(budget_name)
    splits, metrics = load_splits(problem, problem.operator_data, SPLITS, scale, mode)
    return OperatorScorer(problem, splits["test"]), metrics


def speedup(problem: Problem, scorer: OperatorScorer, final: dict[str, float]) -> dict[str, float]:
    """`speedup_at_matched_error` and the classical cost it is measured against (empty when the
    problem has no classical solver or the error is not finite)."""
    if "solve" not in problem.capabilities or not math.isfinite(final.get("rel_l2", math.nan)):
        return {}
    try:
        curve = classical_curve(problem, scorer.test)
    except Exception as e:  # the run's own scores must survive a failing classical solver
        log.warning("no speed-up: the classical ladder of %s failed (%s)", problem.name, e)
        return {}
    cost = matched_cost(curve, final["rel_l2"])
    per_sample = final.get("inference_seconds_per_sample", 0.0)
    if cost is None or per_sample <= 0:
        return {}
    return {
        "classical_seconds_at_matched_error": cost,
        "speedup_at_matched_error": cost / per_sample,
    }


def write_operator_outputs(
    out_dir: Any,
    record: dict[str, Any],
    monitor: Any,
    scorer: OperatorScorer,
    pred: np.ndarray | None,
    growth: dict[str, np.ndarray] | None,
    figures: bool,
    predictions: bool = True,
) -> list[Any]:
    """The operator run's artifacts (first test samples' predictions, the error over rollout
    time, their figures), then the common ones via `bench.outputs.write_outputs`."""
    import pandas as pd

    from bench.outputs import write_outputs

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    test, ctx = scorer.test, scorer.context
    if pred is not None and predictions:
        k = min(CURVE_SAMPLES, len(pred))
        arrays = {
            "prediction": pred[:k].astype(np.float32),
            "reference": test.outputs[:k, ctx:],
            "context": test.outputs[:k, :ctx],
            "times": test.times,
        }
        arrays.update({f"grid{i:02d}": g for i, g in enumerate(test.grid)})
        np.savez_compressed(out_dir / "predictions.npz", **arrays)
        paths.append(out_dir / "predictions.npz")
    if growth is not None:
        table = pd.DataFrame(growth)
        table.to_csv(out_dir / "rollout_error.csv", index=False)
        paths.append(out_dir / "rollout_error.csv")
    if figures and pred is not None and growth is not None:
        try:
            from bench import figures as figs

            paths.append(figs.plot_rollout_error(table, out_dir / "rollout_error.png"))
            paths.append(
                figs.plot_operator_sample(
                    pred[0],
                    test.outputs[0, ctx:],
                    test.times[ctx:],
                    test.grid,
                    out_dir / "sample.png",
                )
            )
        except Exception as e:  # a figure must never cost a run its numbers
            record["message"] = (record.get("message", "") + f" (figures failed: {e})").strip()
    return paths + write_outputs(out_dir, record, monitor, None, None, figures)
