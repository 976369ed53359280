"""bench-compare: the statistics on plain arrays, the table on plain records, and the CLI on a
real SQLite MLflow store written by `bench.tracking.Tracker`, as `bench` writes it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench import compare, report
from bench.tracking import Tracker

BASE = 0.01 * np.array([1.0, 1.02, 0.98, 1.01, 0.99])  # five seeds, little noise
FAST = dict(n_boot=2000)


# -- pure statistics ----------------------------------------------------------------------------
def test_identical_distributions_are_the_same():
    c = compare.compare_values(BASE, BASE.copy(), **FAST)
    assert c.verdict == "same" and c.ratio == pytest.approx(1.0)
    assert c.ci_low <= 1 <= c.ci_high
    rng = np.random.default_rng(1)
    c = compare.compare_values(rng.lognormal(0, 0.3, 8), rng.lognormal(0, 0.3, 8), **FAST)
    assert c.verdict == "same" and c.n_base == c.n_new == 8


def test_a_clear_shift_is_worse_or_better():
    worse = compare.compare_values(BASE, 2 * BASE[::-1], **FAST)
    assert worse.verdict == "WORSE" and worse.ratio == pytest.approx(2.0) and worse.ci_low > 1
    assert worse.median_base == pytest.approx(0.01) and worse.median_new == pytest.approx(0.02)
    better = compare.compare_values(BASE, BASE / 2, **FAST)
    assert better.verdict == "better" and better.ratio == pytest.approx(0.5) and better.ci_high < 1
    assert compare.compare_values(BASE / 2, BASE, **FAST).ratio == pytest.approx(2.0)  # symmetric


def test_noise_or_a_tiny_shift_is_not_a_regression():
    rng = np.random.default_rng(2)
    noisy = compare.compare_values(rng.lognormal(0, 0.5, 5), 1.05 * rng.lognormal(0, 0.5, 5))
    assert noisy.verdict == "same"
    # significant (the interval is above 1) but smaller than --ratio: still the same
    tiny = compare.compare_values(BASE, 1.05 * BASE, **FAST)
    assert tiny.ci_low > 1 and tiny.verdict == "same"
    assert compare.compare_values(BASE, 1.05 * BASE, ratio=1.02, **FAST).verdict == "WORSE"


def test_non_finite_values_are_infinitely_bad():
    c = compare.compare_values(BASE, [math.nan, math.inf, math.nan, 0.01, 0.01], **FAST)
    assert c.verdict == "WORSE" and math.isinf(c.median_new) and math.isinf(c.ratio)
    assert compare.compare_values([math.nan] * 3, BASE, **FAST).verdict == "better"
    both = compare.compare_values([math.nan] * 3, [math.inf] * 3, **FAST)
    assert both.verdict == "same" and both.ratio == 1.0  # both diverge: no change, not nan
    # one bad seed among five moves the median, not the verdict
    assert compare.compare_values(BASE, [*BASE[:4], math.nan], **FAST).verdict == "same"


def test_too_few_seeds_are_not_judged():
    c = compare.compare_values(BASE[:2], 10 * BASE, **FAST)
    assert c.verdict == compare.TOO_FEW and math.isnan(c.ci_low) and c.ratio > 5
    assert compare.compare_values(BASE[:2], 10 * BASE, min_seeds=2, **FAST).verdict == "WORSE"


def test_the_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(3)
    base, new = rng.lognormal(0, 0.4, 7), rng.lognormal(0.2, 0.4, 7)
    runs = [compare.compare_values(base, new, seed=s, **FAST) for s in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert (runs[0].ci_low, runs[0].ci_high) != (runs[2].ci_low, runs[2].ci_high)


def record(method, problem, seed, value, status="ok", budget="standard", **params):
    metrics = {} if math.isnan(value) else {"rel_l2": value}
    tags = {"method": method, "problem": problem, "budget": budget, "seed": str(seed)}
    return {
        "info": {"run_id": f"{method}-{problem}-{seed}-{value}-{params}", "start_time": seed},
        "data": {
            "tags": tags | {"status": status},
            "metrics": metrics,
            "params": {f"method.{k}": str(v) for k, v in params.items()},
        },
    }


def frame(*records):
    return report.select_runs(report.runs_frame(records))


def test_compare_frames_names_cells_over_both_sets_and_counts_statuses():
    base = frame(*(record("pinn", "burgers", s, v, lr=1e-3) for s, v in enumerate(BASE)))
    new = [record("pinn", "burgers", s, 2 * v, lr=1e-3) for s, v in enumerate(BASE)]
    new += [record("pinn", "burgers", s, v, lr=1e-2) for s, v in enumerate(BASE)]
    new += [record("pinn", "burgers", 9, math.nan, "diverged", lr=1e-3)]
    table = compare.compare_frames(base, frame(*new), n_boot=500).set_index("variant")
    assert table.loc["lr=0.001", "verdict"] == "WORSE"  # named although base has one variant
    assert table.loc["lr=0.001", "other_new"] == "1 diverged"
    assert table.loc["lr=0.001", "n_new"] == 6  # the diverged run is pooled as +inf
    assert table.loc["lr=0.01", "verdict"] == "only in new"
    other = frame(*(record("pinn", "burgers", s, v, budget="smoke") for s, v in enumerate(BASE)))
    with pytest.raises(compare.InputError, match="pass --budget"):
        compare.compare_frames(base, other)


# -- the CLI on a real store --------------------------------------------------------------------
# experiment: (git_commit, release tag, [(method, problem, budget, status, rel_l2 per seed)])
STORE = {
    "a": ("aaa111", "v1", [
        ("pinn", "burgers", "standard", "ok", BASE),
        ("pig", "burgers", "standard", "ok", 2 * BASE),
        ("pinn", "ode", "standard", "ok", BASE),
        ("fno", "heat", "standard", "ok", BASE[:2]),
        ("pinn", "heat", "standard", "ok", BASE[:3]),
    ]),
    "b": ("bbb222", "v2", [
        ("pinn", "burgers", "standard", "ok", 2 * BASE),  # 2x worse
        ("pig", "burgers", "standard", "ok", 2 * BASE[::-1]),  # the same
        ("pig", "burgers", "standard", "diverged", [math.nan]),  # a later seed 0: replaces it
        ("pinn", "ode", "standard", "ok", [math.nan] * 3),  # non-finite: never logged
        ("fno", "heat", "standard", "ok", 3 * BASE[:2]),  # too few seeds
        ("pinn", "wave", "standard", "ok", BASE[:3]),  # only in new
    ]),
    "c": ("ccc333", "v3", [("pinn", "burgers", "standard", "ok", BASE / 2)]),
    "d": ("ddd444", "v4", [
        ("pinn", "burgers", "smoke", "ok", BASE),
        ("pig", "burgers", "standard", "ok", 2 * BASE),
    ]),
}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'm.db'}"
    for exp, (commit, release, cells) in STORE.items():
        for method, problem, budget, status, values in cells:
            for seed, value in enumerate(values):
                tracker = Tracker(uri, exp)
                tags = {"method": method, "problem": problem, "budget": budget, "seed": str(seed)}
                tracker.start(f"{method}/{problem}/{seed}", tags | {"git_commit": commit * 5})
                params = {"method": {"lr": 1e-3, "width": 32}, "problem": {"nu": 0.01}}
                tracker.log_params(params | {"seed": seed, "budget": budget})
                tracker.log_metrics({"rel_l2": value, "train_seconds": 1.0})  # drops a nan
                tracker.set_tags({"status": status, "release": release})
                tracker.finish(status)
                assert tracker.error is None, tracker.error
    return uri


def cli(store, capsys, *args):
    code = compare.main(["--uri", store, "--bootstrap", "1000", *args])
    out = capsys.readouterr().out
    assert "Traceback" not in out
    return code, out


def test_a_regression_fails(store, capsys, tmp_path):
    md = tmp_path / "summary" / "compare.md"
    args = ["--base", "experiment=a", "--new", "experiment=b", "--markdown", str(md)]
    code, out = cli(store, capsys, *args)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[-1].startswith("bench-compare: FAIL, 2 cell(s) significantly worse")
    assert "1 same" in lines[-1] and "1 too few seeds" in lines[-1]
    assert "1 only in base" in lines[-1] and "1 only in new" in lines[-1]
    assert any("WORSE burgers/pinn (standard)" in line and "2.00" in line for line in lines)
    assert any("WORSE ode/pinn (standard)" in line and "inf" in line for line in lines)
    text = md.read_text()
    assert "| burgers | pinn |" in text and "| ode | pinn |" in text and "FAIL, 2 cell(s)" in text
    assert "not ok new" in text and "| 1 diverged |" in text


def test_commit_and_tag_selectors(store, capsys):
    code, out = cli(store, capsys, "--base", "commit=aaa1", "--new", "commit=ccc")
    assert code == 0 and "better" in out
    assert out.strip().splitlines()[-1].startswith("bench-compare: PASS, no cell significantly")
    code, out = cli(store, capsys, "--base", "tag:release=v1", "--new", "tag:release=v2")
    assert code == 1 and "FAIL, 2 cell(s)" in out
    code, out = cli(store, capsys, "--base", "experiment=a", "--new", "experiment=a")
    assert code == 0 and "4 same" in out and "1 too few seeds" in out


def test_budgets_must_agree(store, capsys):
    code, out = cli(store, capsys, "--base", "experiment=a", "--new", "experiment=d")
    assert code == 2 and "burgers/pinn" in out and "pass --budget" in out
    code, out = cli(store, capsys, "--base", "experiment=a", "--new", "experiment=d", "--budget",
                    "standard")  # fmt: skip
    assert code == 0 and "1 same" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base", "exp=a", "--new", "experiment=b"], "bad selector 'exp=a'"),
        (["--base", "experiment=a", "--new", "tag:release"], "bad selector 'tag:release'"),
        (["--base", "experiment=a", "--new", "commit="], "bad selector 'commit='"),
        (["--base", "experiment=nope", "--new", "experiment=b"], "no experiment nope"),
        (["--base", "experiment=a", "--new", "commit=fff"], "--new commit=fff matches no runs"),
        (["--base", "tag:problem=heat", "--new", "tag:problem=wave"], "no cell in common"),
        (["--base", "experiment=a", "--new", "experiment=b", "--min-seeds", "1"], "2 or more"),
        (["--base", "experiment=a", "--new", "experiment=b", "--alpha", "0"], "outside (0, 1)"),
        (["--base", "experiment=a", "--new", "experiment=b", "--alpha", "1.5"], "outside (0, 1)"),
    ],
)
def test_bad_input_is_one_clear_line(store, capsys, args, message):
    code, out = cli(store, capsys, *args)
    assert code == 2 and out.count("\n") == 1
    assert out.startswith("bench-compare: error:") and message in out


def test_a_missing_store_is_bad_input(tmp_path, capsys):
    db = tmp_path / "none.db"
    code, out = cli(f"sqlite:///{db}", capsys, "--base", "experiment=a", "--new", "experiment=b")
    assert code == 2 and "no MLflow store" in out and not db.exists()
