"""The harness's scoring of operator learners (bench/operator_eval.py) on a tiny exact problem:
1-D periodic heat equation, whose Fourier modes decay exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.operator_eval import OperatorScorer, classical_curve, matched_cost
from core.metrics import per_sample_rel_l2
from methods.base import OperatorPredictor
from problems.base import OperatorData
from problems.operator import OperatorProblem

N, T, NU = 32, 6, 0.05
X = np.arange(N) / N
K = np.fft.rfftfreq(N, 1.0 / N)


def heat(u0: np.ndarray, times: np.ndarray, n: int = N) -> np.ndarray:
    """Exact heat flow of `u0` `[b, 1, N]` at `times` `[T]` -> `[b, T, 1, N]`, optionally keeping
    only the modes a grid of `n` points resolves (a 'coarse solver')."""
    uh = np.fft.rfft(u0, axis=-1)
    uh[..., K > n // 2 - 1] = 0.0  # the coarse solver's truncation
    decay = np.exp(-NU * (2 * math.pi * K) ** 2 * times[:, None])  # [T, modes]
    return np.fft.irfft(uh[:, None] * decay[None, :, None], n=N, axis=-1)


class Heat(OperatorProblem):
    name = "heat_test"
    context = 2
    data_keys = ()

    def __init__(self) -> None:
        super().__init__(
            data={s: {"train": 4, "val": 2, "test": 3} for s in ("smoke", "standard", "paper")}
        )

    def generate(self, split, n, seed, progress=None, scale=""):
        rng = np.random.default_rng(seed)
        u0 = sum(
            rng.normal() * np.sin(2 * math.pi * k * X + rng.uniform(0, 6)) for k in range(1, 9)
        )
        u0 = np.broadcast_to(u0, (n, 1, N)) * rng.normal(1, 0.1, (n, 1, 1))
        times = 0.02 * np.arange(T)
        return OperatorData(u0.copy(), heat(u0, times), (X,), times)

    def solve(self, start, inputs, times, resolution):
        return heat(start, times, resolution.get("n", N))[:, 1:]

    def classical_ladder(self):
        return [{}, {"n": 16}, {"n": 8}, {"n": 4}]


class Exact(OperatorPredictor):
    """Advances the true heat flow; `noise` adds a relative error per step."""

    def __init__(self, noise: float = 0.0) -> None:
        self.noise = noise

    def rollout(self, window, inputs, steps):
        out = heat(window[:, -1], 0.02 * np.arange(steps + 1))[:, 1:]
        growth = (1 + self.noise) ** np.arange(1, steps + 1)
        return out * growth[None, :, None, None]


@pytest.fixture
def problem(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    return Heat()


def test_exact_predictor_scores_zero_and_a_biased_one_grows(problem):
    scorer = OperatorScorer(problem, problem.operator_data("test", "smoke"))
    assert scorer.steps == T - problem.context
    m, pred, growth = scorer.score(Exact())
    assert pred.shape == (3, T - 2, 1, N)
    assert m["rel_l2"] < 1e-6 and m["rel_l2_one_step"] < 1e-6
    m, _, growth = scorer.score(Exact(noise=0.01))
    # one step from true frames: 1 % error; the rollout compounds it frame by frame
    assert m["rel_l2_one_step"] == pytest.approx(0.01, rel=1e-3)
    assert np.all(np.diff(growth["rel_l2_mean"]) > 0)
    assert growth["rel_l2_mean"][-1] == pytest.approx(1.01 ** (T - 2) - 1, rel=1e-3)
    assert m["rel_l2_final_time"] == pytest.approx(growth["rel_l2_mean"][-1])


def test_per_sample_rel_l2():
    ref = np.ones((2, 3, 4))
    pred = ref.copy()
    pred[1] *= 1.5
    np.testing.assert_allclose(per_sample_rel_l2(pred, ref), [0.0, 0.5])


def test_classical_curve_gets_worse_as_it_coarsens_and_is_cached(problem):
    test = problem.operator_data("test", "smoke")
    curve = classical_curve(problem, test)
    errs = [r["rel_l2"] for r in curve]
    assert errs[0] < 1e-6 and errs[1] < errs[2] < errs[3]
    again = classical_curve(problem, test)
    assert [r["rel_l2"] for r in again] == errs  # from the cache file


def test_matched_cost_interpolates_log_log():
    curve = [
        {"rel_l2": 1e-1, "seconds_per_sample": 1.0},
        {"rel_l2": 1e-3, "seconds_per_sample": 100.0},
        {"rel_l2": 1e-6, "seconds_per_sample": 1e4},
    ]
    assert matched_cost(curve, 1e-2) == pytest.approx(10.0)  # halfway in log between rungs
    assert matched_cost(curve, 0.5) == pytest.approx(1.0)  # the cheapest rung is good enough
    assert matched_cost(curve, 1e-3) == pytest.approx(100.0)
    assert matched_cost(curve, 1e-8) is None  # no rung is that accurate
    assert matched_cost(curve, math.nan) is None


def test_a_failing_classical_solver_costs_only_the_speed_up(problem, monkeypatch, tmp_path):
    from bench.operator_eval import speedup

    scorer = OperatorScorer(problem, problem.operator_data("test", "smoke"))
    final, _, _ = scorer.score(Exact(noise=0.01))
    assert "speedup_at_matched_error" in speedup(problem, scorer, final)

    def broken(*args, **kwargs):
        raise RuntimeError("solver blew up")

    monkeypatch.setattr(problem, "solve", broken)
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "fresh"))  # the ladder is measured again
    assert speedup(problem, scorer, final) == {}


def test_residual_terms_pool_to_the_rms_and_a_violated_boundary_shows_in_its_own_term():
    """`grid_residual_terms` on diffusion-sorption frames from the solver: the pooled value is
    the count-weighted RMS of the terms; shifting the first cell by 0.05 (a wrong left boundary
    value) multiplies the `left` term by over 100 (0.0007 -> 0.094), while the pooled number,
    which the interior's points dominate, reads a quarter of that (0.024)."""
    from bench.operator_eval import grid_residual_rms, grid_residual_terms
    from bench.registry import build_problem
    from problems.solvers.sorption_fv import average_down, solve

    p = build_problem("diffusion_sorption")
    times = np.linspace(0.0, 500.0, 51)
    u = solve(np.repeat([[0.05], [0.15]], 256, axis=1), times, p.phys, rtol=1e-9, atol=1e-12)
    frames = average_down(u, 64)[:, :, None]  # [2, T, 1, 64]
    x = np.zeros((2, 1))
    terms = grid_residual_terms(p, frames, x, times)
    counts = {k: int(v.sum()) * 2 for k, v in p.grid_masks((len(times), 64)).items()}
    pooled = math.sqrt(sum(terms[k] ** 2 * counts[k] for k in counts) / sum(counts.values()))
    assert terms[""] == pytest.approx(pooled, rel=1e-12)
    assert terms[""] == grid_residual_rms(p, frames, x, times)
    bad = frames.copy()
    bad[:, 1:, :, 0] += 0.05
    worse = grid_residual_terms(p, bad, x, times)
    assert worse["left"] > 100 * terms["left"]
    assert worse["right"] == pytest.approx(terms["right"])
    assert worse[""] < 0.5 * worse["left"]
