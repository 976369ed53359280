"""bench-check: the comparison on planted metrics.json files, and one real smoke grid."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bench import check

BASE = [  # method, problem, metric, baseline, tolerance
    ("pinn", "burgers", "rel_l2", 0.1, 0.5),
    ("pinn", "burgers", "residual_rms", 0.01, 0.5),
    ("pig", "burgers", "rel_l2", 0.2, 1.0),
]


def plant(root, method, problem, seed=0, status="ok", message="", stop="steps", **metrics):
    d = root / method / problem / str(seed)
    d.mkdir(parents=True, exist_ok=True)
    rec = {"method": method, "problem": problem, "seed": seed, "budget": "smoke"}
    rec |= {"status": status, "message": message, "stop_reason": stop, "metrics": metrics}
    (d / "metrics.json").write_text(json.dumps(rec))


def write_baselines(path, rows=BASE):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=check.COLUMNS).to_csv(path, index=False)
    return path


@pytest.fixture
def planted(tmp_path):
    """Results that pass BASE exactly, and the baselines file."""
    res = tmp_path / "res"
    plant(res, "pinn", "burgers", rel_l2=0.12, residual_rms=0.01, rmse=1.0)
    plant(res, "pig", "burgers", rel_l2=0.05, residual_rms=3.0)
    plant(res, "pig", "heat", status="not_applicable", message="needs operator_data")
    return res, write_baselines(tmp_path / "smoke.csv")


def run(capsys, *args):
    code = check.main([*map(str, args)])
    return code, capsys.readouterr().out


def test_pass(planted, capsys):
    res, base = planted
    code, out = run(capsys, "--results", res, "--baselines", base)
    assert code == 0, out
    assert "PASS: 3 check(s) on 2 cell(s)" in out
    assert "better" in out  # pig: 0.05 < 0.2 / 2


@pytest.mark.parametrize(
    ("plant_kw", "expected"),
    [
        ({"rel_l2": 0.151, "residual_rms": 0.01}, "REGRESSED pinn/burgers/0 rel_l2"),
        ({"rel_l2": math.nan, "residual_rms": 0.01}, "REGRESSED pinn/burgers/0 rel_l2"),
        ({"rel_l2": 0.1}, "NO METRIC pinn/burgers/0 residual_rms"),
        ({"status": "failed", "message": "RuntimeError: boom\ntrace"}, "FAILED pinn/burgers/0"),
        ({"status": "diverged", "rel_l2": 0.1}, "FAILED pinn/burgers/0 status: diverged — "),
    ],
)
def test_regressions_fail(planted, capsys, plant_kw, expected):
    res, base = planted
    plant(res, "pinn", "burgers", **plant_kw)
    code, out = run(capsys, "--results", res, "--baselines", base)
    assert code == 1
    assert expected in out
    assert "FAIL, 1 failing" in out


def test_tolerance_boundary_passes_and_clock_cap_warns(planted, capsys):
    res, base = planted
    plant(res, "pinn", "burgers", rel_l2=0.15, residual_rms=0.015, stop="seconds")  # × 1.5
    code, out = run(capsys, "--results", res, "--baselines", base)
    assert code == 0
    assert "warning: pinn/burgers/0 hit budget.seconds first" in out


def test_missing_baseline_row_and_missing_cell(planted, capsys):
    res, base = planted
    plant(res, "fno", "heat", rel_l2=0.3)
    write_baselines(base, [*BASE, ("sindy", "lorenz", "rel_l2", 0.1, 0.5)])
    code, out = run(capsys, "--results", res, "--baselines", base)
    assert code == 1
    assert "NO BASELINE fno/heat/0" in out
    assert "NOT RUN sindy/lorenz" in out
    assert "FAIL, 2 failing" in out


def test_only_restricts_results_and_baselines(planted, capsys):
    res, base = planted
    plant(res, "pig", "burgers", rel_l2=9.0)  # would regress, but is out of scope
    code, out = run(capsys, "--results", res, "--baselines", base, "--only", "pinn/burgers")
    assert code == 0, out
    assert "PASS: 2 check(s) on 1 cell(s)" in out


def test_update_rewrites_from_results(tmp_path, capsys):
    res = tmp_path / "res"
    for seed, err in enumerate([0.1, 0.3, 0.2]):
        plant(res, "pinn", "burgers", seed=seed, rel_l2=err, residual_rms=1e-3, rmse=err)
    plant(res, "pig", "burgers", rel_l2=0.4, residual_rms=2e-3, max_abs_err=1.0)
    base = write_baselines(
        tmp_path / "b" / "smoke.csv",
        [("pinn", "burgers", "rel_l2", 1.0, 0.25), ("pinn", "burgers", "rmse", 1.0, 0.1),
         ("old", "gone", "rel_l2", 1.0, 0.5)],
    )  # fmt: skip
    code, out = run(capsys, "--results", res, "--baselines", base, "--update")
    assert code == 0, out
    assert "PASS: 11 check(s) on 2 cell(s)" in out
    got = {(m, p, k): (b, t) for m, p, k, b, t in pd.read_csv(base).itertuples(index=False)}
    assert got == {
        ("pig", "burgers", "rel_l2"): (0.4, 0.5),
        ("pig", "burgers", "residual_rms"): (2e-3, 0.5),
        ("pinn", "burgers", "rel_l2"): (0.3, 0.25),  # the worst seed; tolerance kept
        ("pinn", "burgers", "residual_rms"): (1e-3, 0.5),
        ("pinn", "burgers", "rmse"): (0.3, 0.1),  # an already gated metric stays gated
    }


def test_update_with_only_keeps_other_rows_and_refuses_failures(planted, capsys):
    res, base = planted
    plant(res, "pinn", "burgers", rel_l2=0.5, residual_rms=0.5)
    code, _ = run(
        capsys, "--results", res, "--baselines", base, "--update", "--only", "pinn/burgers"
    )
    assert code == 0
    rows = pd.read_csv(base)
    assert rows[rows.method == "pig"].baseline.tolist() == [0.2]  # untouched
    assert rows[(rows.method == "pinn") & (rows.metric == "rel_l2")].baseline.tolist() == [0.5]

    plant(res, "pinn", "burgers", status="failed", message="boom")
    before = base.read_text()
    code, out = run(capsys, "--results", res, "--baselines", base, "--update")
    assert code == 1 and "not updating: pinn/burgers/0 is failed" in out
    assert base.read_text() == before


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("pinn", "burgers", "train_seconds", 1.0, 0.5)], "cannot gate metric"),
        ([BASE[0], BASE[0]], "duplicate row"),
    ],
)
def test_malformed_baselines(planted, capsys, rows, message):
    res, base = planted
    write_baselines(base, rows)
    code, out = run(capsys, "--results", res, "--baselines", base)
    assert code == 1 and message in out


def test_no_results(tmp_path, capsys):
    code, out = run(capsys, "--results", tmp_path, "--baselines", tmp_path / "none.csv")
    assert code == 1 and "no metrics.json files" in out


def test_seeds_and_only_parsing():
    args = check.parse_args(["--seeds", "2", "0,1", "--only", "pinn/burgers"])
    assert args.seeds == [0, 1, 2] and args.only == [("pinn", "burgers")]
    with pytest.raises(SystemExit):
        check.parse_args(["--only", "pinn"])


@pytest.mark.slow
def test_smoke_grid_end_to_end(tmp_path, capsys):
    """The real gate: every applicable registered cell at budget=smoke against the baselines."""
    try:
        from bench.run import run_cell  # noqa: F401
    except ImportError as e:
        pytest.skip(f"bench.run.run_cell is not importable yet ({e})")
    out = tmp_path / "check"
    code, text = run(capsys, "--out", out)
    assert code == 0, text
    grid, _ = check.smoke_grid()
    for m, p in grid:
        assert (out / m / p / "0" / "metrics.json").exists()
    # --no-run --update reproduces a baselines file for every cell without retraining
    new = tmp_path / "smoke.csv"
    assert check.main(["--no-run", "--out", str(out), "--baselines", str(new), "--update"]) == 0
    assert set(zip(*pd.read_csv(new)[["method", "problem"]].values.T)) == set(grid)
