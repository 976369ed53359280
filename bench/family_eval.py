"""Harness-owned scoring of multi-operator learners (problem capability `family_data`, e.g.
`ode_family`; the predictor contract is `methods.base.FamilyPredictor`).

Every predictor is given the observed window (the first `input_len` samples of each trajectory)
and, as symbols, the sample's equations (strings); it predicts the whole window, and is scored
on the part after the observed window only (the extrapolation; PROSE's protocol):

- `rel_l2` on `test` (held-in systems, held-out parameters) and `rel_l2_systems` on
  `test_systems` (systems never trained on): the mean over samples of each sample's relative L2
  error over its true components (spreads `*_std`, `*_p90`);
- for a method that writes equations (`equations()` not None), on `test`:
  `equation_parse_rate` (the fraction of decoded expressions that parse into a system of the
  sample's dimension over t, x0..x{d-1}), `equation_solve_rate` (the fraction that also
  integrate over the whole window from the true initial state), and `rel_l2_equations` (the
  median over those of the integrated trajectory's error on the scored window);
- robustness, on `test`: `rel_l2_noise_<level>` with relative noise on the observed window
  (the problem's own noise model, `noise` = level) and `rel_l2_corrupt_<name>` with corrupted
  symbols (`core.symbolic.corrupt`: coefficient noise, an added or a removed term), also
  written to `robustness.csv`;
- `inference_seconds_per_sample`.

The curve during training is `rel_l2` on the first `CURVE_SAMPLES` test samples.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import sympy as sp

from methods.base import FamilyPredictor
from problems.base import Problem

__all__ = ["CORRUPTIONS", "NOISE_LEVELS", "FamilyScorer", "prepare_family_data", "solve_decoded"]

log = logging.getLogger(__name__)

CURVE_SAMPLES = 16
NOISE_LEVELS = (0.02, 0.05, 0.1)
CORRUPTIONS: dict[str, dict[str, Any]] = {
    "coef_0.05": {"coef_noise": 0.05},
    "coef_0.2": {"coef_noise": 0.2},
    "add_1": {"add_terms": 1},
    "remove_1": {"remove_terms": 1},
}
SPLITS = ("train", "val", "test", "test_systems")


MAX_RHS_CALLS = 200_000  # a decoded system that needs more is counted as not solved


class _Unsolvable(RuntimeError):
    pass


def solve_decoded(
    equations: Any, y0: np.ndarray, times: np.ndarray, rtol: float = 1e-6
) -> np.ndarray:
    """The trajectory `[T, d]` of (decoded, possibly nonsensical) equations from `y0` at
    `times[0]`: LSODA (stiff or not), stopped as a failure when the state leaves
    |y| <= 1e4 (1 + |y0|) or after `MAX_RHS_CALLS` evaluations, so that a decoded blow-up or
    a stiff mess costs a bounded time. Raises `_Unsolvable` (a RuntimeError) then."""
    from scipy.integrate import solve_ivp

    from core.symbolic import lambdify_rhs

    y0 = np.asarray(y0, dtype=np.float64)
    f = lambdify_rhs(equations, len(y0))
    bound = 1e4 * (1.0 + float(np.abs(y0).max()))
    calls = 0

    def rhs(t: float, y: np.ndarray) -> list[float]:
        nonlocal calls
        calls += 1
        if calls > MAX_RHS_CALLS:
            raise _Unsolvable(f"more than {MAX_RHS_CALLS} right-hand side evaluations")
        return f(t, y)

    def escape(t: float, y: np.ndarray) -> float:
        return bound - float(np.abs(y).max())

    escape.terminal = True  # type: ignore[attr-defined]
    times = np.asarray(times, dtype=np.float64)
    sol = solve_ivp(
        rhs, (times[0], times[-1]), y0, method="LSODA", t_eval=times, rtol=rtol,
        atol=rtol * 1e-3, events=escape,
    )  # fmt: skip
    if sol.status != 0 or sol.y.shape[1] != len(times):
        raise _Unsolvable(sol.message if sol.status != 1 else "the state blew up")
    return sol.y.T


def _rel_l2(pred: np.ndarray, ref: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """`[n]` relative L2 error of each sample over its first `dims[i]` components."""
    out = np.empty(len(ref))
    for i, d in enumerate(dims):
        diff = np.linalg.norm(pred[i, :, :d] - ref[i, :, :d])
        out[i] = diff / max(np.linalg.norm(ref[i, :, :d]), 1e-300)
    return out


def _spread(name: str, errors: np.ndarray) -> dict[str, float]:
    if not np.all(np.isfinite(errors)):
        return {name: float("nan")}
    return {
        name: float(errors.mean()),
        f"{name}_std": float(errors.std()),
        f"{name}_p90": float(np.percentile(errors, 90)),
    }


class FamilyScorer:
    """Scores a `FamilyPredictor` on a family problem's `test` and `test_systems` splits."""

    def __init__(self, problem: Problem, scale: str, test: Any, test_systems: Any) -> None:
        self.problem, self.scale = problem, scale
        self.test, self.test_systems = test, test_systems
        self.input_len = int(test.input_len)

    def predict(
        self,
        predictor: FamilyPredictor,
        data: Any,
        idx: slice = slice(None),
        symbols: list[list[str]] | None = None,
        observed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """The predicted scored window `[n, T - L, 3]` of samples `idx`, and seconds."""
        obs = (data.observed if observed is None else observed)[idx].astype(np.float64)
        syms = list(data.equations[idx]) if symbols is None else symbols
        times = np.asarray(data.times, dtype=np.float64)
        L = self.input_len
        t0 = time.perf_counter()
        pred = predictor.predict(obs, times[:L], times[L:], np.asarray(data.dims[idx]), syms)
        seconds = time.perf_counter() - t0
        pred = np.asarray(pred, dtype=np.float64)
        want = (len(obs), len(times) - L, 3)
        if pred.shape != want:
            raise ValueError(f"predict returned shape {pred.shape}, expected {want}")
        return pred, seconds

    def errors(self, pred: np.ndarray, data: Any, idx: slice = slice(None)) -> np.ndarray:
        ref = data.values[idx, self.input_len :].astype(np.float64)
        return _rel_l2(pred, ref, np.asarray(data.dims[idx]))

    def curve_score(self, predictor: FamilyPredictor) -> float:
        idx = slice(0, CURVE_SAMPLES)
        pred, _ = self.predict(predictor, self.test, idx)
        if not np.all(np.isfinite(pred)):
            return float("nan")
        return float(self.errors(pred, self.test, idx).mean())

    # -- equations -----------------------------------------------------------------------
    def equation_metrics(
        self, predictor: FamilyPredictor
    ) -> tuple[dict[str, float], list[str] | None]:
        """Parse and solve rates of the decoded equations on `test`, and their error."""
        from core.symbolic import SymbolicError, decode_system

        data, L = self.test, self.input_len
        times = np.asarray(data.times, dtype=np.float64)
        tokens = predictor.equations(
            data.observed.astype(np.float64), times[:L], np.asarray(data.dims),
            list(data.equations),
        )  # fmt: skip
        if tokens is None:
            return {}, None
        parsed = solved = 0
        errs, texts = [], []
        for i, toks in enumerate(tokens):
            d = int(data.dims[i])
            try:
                exprs = decode_system(list(toks))
                allowed = {sp.Symbol("t"), *sp.symbols(f"x0:{d}")}
                if len(exprs) != d or any(e.free_symbols - allowed for e in exprs):
                    raise SymbolicError(f"not a {d}-dimensional system over t, x0..x{d - 1}")
            except (SymbolicError, ValueError, TypeError):
                texts.append("")
                continue
            parsed += 1
            texts.append(" | ".join(str(e) for e in exprs))
            try:
                with np.errstate(all="ignore"):
                    traj = solve_decoded(exprs, data.values[i, 0, :d], times)
            except (_Unsolvable, ArithmeticError, ValueError, TypeError):
                continue  # a decoded system may blow up, be singular or not evaluate
            if not np.all(np.isfinite(traj)):
                continue
            solved += 1
            ref = data.values[i, L:, :d]
            errs.append(np.linalg.norm(traj[L:] - ref) / max(np.linalg.norm(ref), 1e-300))
        n = len(tokens)
        out = {"equation_parse_rate": parsed / n, "equation_solve_rate": solved / n}
        out["rel_l2_equations"] = float(np.median(errs)) if errs else float("nan")
        return out, texts

    # -- robustness ----------------------------------------------------------------------
    def robustness(self, predictor: FamilyPredictor, clean: float) -> pd.DataFrame:
        """rel_l2 on `test` under observation noise and symbolic corruption."""
        from bench.registry import build_problem
        from core.symbolic import corrupt

        rows = [{"kind": "clean", "level": "0", "rel_l2": clean}]
        for level in NOISE_LEVELS:
            noisy = build_problem(self.problem.name, **{**self.problem.params, "noise": level})
            data = noisy.family_data("test", self.scale)
            pred, _ = self.predict(predictor, data)
            rows.append({"kind": "noise", "level": str(level), "rel_l2": self._mean(pred, data)})
        names = {"t": sp.Symbol("t"), **{f"x{i}": sp.Symbol(f"x{i}") for i in range(3)}}
        for name, how in CORRUPTIONS.items():
            rng = np.random.default_rng(12345)  # the same corruption for every method
            symbols = [
                [str(e) for e in corrupt([sp.sympify(s, locals=names) for s in eqs], rng, **how)]
                for eqs in self.test.equations
            ]
            pred, _ = self.predict(predictor, self.test, symbols=symbols)
            rows.append({"kind": "corrupt", "level": name, "rel_l2": self._mean(pred, self.test)})
        return pd.DataFrame(rows)

    def _mean(self, pred: np.ndarray, data: Any) -> float:
        return float(self.errors(pred, data).mean()) if np.all(np.isfinite(pred)) else np.nan

    # -- everything ----------------------------------------------------------------------
    def score(self, predictor: FamilyPredictor) -> tuple[dict[str, float], dict[str, Any]]:
        """Final metrics, and the arrays and tables to write (see `write_family_outputs`)."""
        pred, seconds = self.predict(predictor, self.test)
        out: dict[str, float] = {
            "inference_seconds": seconds,
            "inference_seconds_per_sample": seconds / len(pred),
            "test_samples": float(len(pred)),
        }
        extra: dict[str, Any] = {"prediction": pred}
        out.update(_spread("rel_l2", self.errors(pred, self.test)))
        # the trivial predictor: the last observed sample held over the scored window
        held = np.repeat(self.test.observed[:, -1:].astype(np.float64), pred.shape[1], axis=1)
        out["rel_l2_trivial"] = float(self.errors(held, self.test).mean())
        if self.test_systems is not None:
            pred_s, _ = self.predict(predictor, self.test_systems)
            out.update(_spread("rel_l2_systems", self.errors(pred_s, self.test_systems)))
            extra["prediction_systems"] = pred_s
        eq, texts = self.equation_metrics(predictor)
        out.update(eq)
        extra["equations"] = texts
        if np.isfinite(out["rel_l2"]):
            table = self.robustness(predictor, out["rel_l2"])
            extra["robustness"] = table
            for row in table.itertuples():
                if row.kind != "clean":
                    out[f"rel_l2_{row.kind}_{row.level}"] = float(row.rel_l2)
        return out, extra


def prepare_family_data(
    problem: Problem, budget_name: str, mode: str
) -> tuple[FamilyScorer, dict[str, float]]:
    """Every split at the budget's scale (`test_systems` only with held-out systems), generated
    or loaded before training starts, so generation never counts as training time; the scorer,
    and the data metrics (`bench.operator_eval.load_splits`)."""
    from bench.operator_eval import load_splits
    from problems.capabilities import FamilyDataSource, capability, data_scale

    source = capability(problem, FamilyDataSource)
    scale = data_scale(budget_name)
    names = [s for s in SPLITS if s != "test_systems" or problem.params.get("held_out_systems")]
    splits, metrics = load_splits(problem, source.family_data, names, scale, mode)
    return FamilyScorer(problem, scale, splits["test"], splits.get("test_systems")), metrics


def write_family_outputs(
    out_dir: Any, scorer: FamilyScorer, extra: dict[str, Any], predictions: bool = True
) -> list[Any]:
    """predictions.npz (scored windows, truth, systems; unless `predictions` is false),
    equations.csv and robustness.csv."""
    paths: list[Any] = []
    test = scorer.test
    arrays = {
        "times": test.times,
        "prediction": extra["prediction"],
        "reference": test.values[:, scorer.input_len :],
        "dims": test.dims,
        "system": np.asarray(test.system, dtype=str),
    }
    if "prediction_systems" in extra:
        arrays["prediction_systems"] = extra["prediction_systems"]
        arrays["reference_systems"] = scorer.test_systems.values[:, scorer.input_len :]
    if predictions:
        np.savez_compressed(out_dir / "predictions.npz", **arrays)
        paths.append(out_dir / "predictions.npz")
    if extra.get("equations") is not None:
        eqs = pd.DataFrame(
            {
                "system": np.asarray(test.system, dtype=str),
                "true": [" | ".join(e) for e in test.equations],
                "decoded": extra["equations"],
            }
        )
        eqs.to_csv(out_dir / "equations.csv", index=False)
        paths.append(out_dir / "equations.csv")
    if extra.get("robustness") is not None:
        extra["robustness"].to_csv(out_dir / "robustness.csv", index=False)
        paths.append(out_dir / "robustness.csv")
    return paths
