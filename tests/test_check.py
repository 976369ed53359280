"""bench-check: the gate's rules on planted records, its refusals of bad input, and real runs
(a non-default kernel variant against the committed baselines, and a planted bug caught)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import check
from bench.registry import methods

REPO = Path(__file__).resolve().parents[1]
GATE = {
    "budget": "smoke",
    "status": {"seed": 0, "overrides": ["budget.steps=10"]},
    "accuracy": {"seeds": [0, 1, 2], "cells": {"pinn/burgers": ["budget.steps=300"]}},
    "update_seeds": [0, 1, 2, 3],
    "variants": {"native": {}, "aten_default": {"env": {"ATEN_CPU_CAPABILITY": "default"}}},
}
ROW = {"center": 0.1, "log10_sd": 0.05, "n": 10, "tolerance": 1.5, "trivial": 1.0}


def write_gate(tmp_path, **changes):
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump({**GATE, **changes}))
    return path


def write_baselines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=check.COLUMNS).to_csv(path, index=False)
    return path


def base_row(method="pinn", problem="burgers", metric="rel_l2", **kw):
    return {"method": method, "problem": problem, "metric": metric, **ROW, **kw}


def plant(root, method, problem, seed=0, status="ok", role=None, overrides=None, **metrics):
    """A metrics.json as bench-check writes it."""
    cell = (method, problem)
    role = role or ("accuracy" if f"{method}/{problem}" in GATE["accuracy"]["cells"] else "status")
    if overrides is None:
        overrides = GATE["accuracy"]["cells"].get(
            f"{method}/{problem}", GATE["status"]["overrides"]
        )
    d = root / method / problem / str(seed)
    d.mkdir(parents=True, exist_ok=True)
    rec = {"method": cell[0], "problem": cell[1], "seed": seed, "budget": "smoke"}
    rec |= {"status": status, "message": "", "stop_reason": "steps", "metrics": metrics}
    rec["gate"] = {"role": role, "overrides": [f"budget={GATE['budget']}", *overrides]}
    (d / "metrics.json").write_text(json.dumps(rec))


@pytest.fixture
def gate(tmp_path):
    return check.load_gate(write_gate(tmp_path))


def run(capsys, *args):
    code = check.main([*map(str, args)])
    return code, capsys.readouterr().out


# -- the gate file ------------------------------------------------------------------------------
def test_the_committed_gate_loads_and_lists_applicable_cells():
    gate = check.load_gate()
    assert gate.budget == "smoke" and len(gate.seeds) >= 3 and "native" in gate.variants
    grid, errors = check.smoke_grid(gate)
    assert not errors and set(gate.cells) <= set(grid)
    # every method of ours has an accuracy cell; peers' rows (optional extras, when installed)
    # are gated on their status only
    ours = {m for m, _ in grid if methods()[m].extra is None}
    assert ours == {m for m, _ in gate.cells}
    assert ("hard_moe", "legendre") in grid  # applicable only with its gate overrides


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"budget": 3}, "budget must be a str"),
        ({"accuracy": {"seeds": [], "cells": {}}}, "accuracy.seeds must be a non-empty list"),
        ({"accuracy": {"seeds": [0], "cells": {"pinn": []}}}, "expected method/problem"),
        ({"variants": {"fast": {}}}, "must include `native`"),
        ({"variants": {"native": {"thread": 2}}}, "unknown key(s) ['thread']"),
    ],
)
def test_malformed_gate_is_refused(tmp_path, changes, message):
    with pytest.raises(check.GateError, match=None) as e:
        check.load_gate(write_gate(tmp_path, **changes))
    assert message in str(e.value) and "gate.yaml" in str(e.value)


# -- the rules ----------------------------------------------------------------------------------
def test_tolerance_rule():
    flat = np.full(10, 0.2)
    assert check.tolerance(check.log10_sd(flat), [0.2, 0.2], 0.2) == check.MIN_TOLERANCE
    spread = 10 ** np.array([-1.1, -1.0, -0.9] * 4)
    sd = np.std(np.log10(spread), ddof=1)
    want = 10 ** (check.Z * check.SD_OF_MEDIAN * sd)
    assert check.log10_sd(spread) == pytest.approx(sd)
    assert check.tolerance(sd, [0.1], 0.1) == pytest.approx(want)
    # never tighter than the worst variant's statistic, with the margin
    assert check.tolerance(0.0, [0.2, 0.5], 0.2) == pytest.approx(check.MARGIN * 2.5)


def test_new_baselines_and_the_trivial_rule(gate):
    rows = [
        {"method": "pinn", "problem": "burgers", "metric": "rel_l2", "variant": v, "seed": s,
         "value": 0.01 * (1 + 0.1 * s), "trivial": 1.0}
        for v in ("native", "aten_default") for s in range(4)
    ]  # fmt: skip
    rows += [{**r, "problem": "heat", "value": 0.4 + 0.01 * r["seed"]} for r in rows[:4]]
    new = check.new_baselines(pd.DataFrame(rows, columns=check.RUN_COLUMNS), gate)
    b = new.set_index("problem")
    assert b.loc["burgers", "n"] == 8 and b.loc["burgers", "center"] == pytest.approx(0.0115)
    assert check.is_gated(b.loc["burgers"])
    assert not check.is_gated(b.loc["heat"])  # 0.4 × tolerance > 1.0 / 2: no better than trivial


def test_compare_pass_regress_and_median(tmp_path, gate):
    res = tmp_path / "res"
    base = pd.DataFrame([base_row()])
    for seed, err in enumerate([0.1, 0.12, 9.0]):  # one bad seed: the median holds
        plant(res, "pinn", "burgers", seed, rel_l2=err)
    plant(res, "pig", "heat", rel_l2=3.0)  # a status cell: any finite error
    checks = check.compare(check.read_results(res, gate), base, gate, None)
    verdicts = {(c.cell, c.metric): c.verdict for c in checks}
    assert verdicts == {("pig/heat", "status"): "status", ("pinn/burgers", "rel_l2"): "pass"}

    plant(res, "pinn", "burgers", 0, rel_l2=0.2)  # now two of three beyond 0.1 × 1.5
    plant(res, "pinn", "burgers", 1, rel_l2=0.16)
    [c] = [
        c for c in check.compare(check.read_results(res, gate), base, gate) if c.metric != "status"
    ]
    assert c.verdict == "REGRESSED" and c.value == pytest.approx(0.2) and "median" in c.note


@pytest.mark.parametrize(
    ("plant_kw", "verdict"),
    [
        ({"status": "diverged", "rel_l2": 0.1}, "FAILED"),
        ({"status": "failed"}, "FAILED"),
        ({"rel_l2": math.nan}, "FAILED"),
    ],
)
def test_any_seed_that_breaks_fails(tmp_path, gate, plant_kw, verdict):
    res = tmp_path / "res"
    for seed in range(3):
        plant(res, "pinn", "burgers", seed, rel_l2=0.1)
    plant(res, "pinn", "burgers", 2, **plant_kw)
    checks = check.compare(check.read_results(res, gate), pd.DataFrame([base_row()]), gate)
    assert [c.verdict for c in checks if not c.ok] == [verdict]
    assert [c.cell for c in checks if not c.ok] == ["pinn/burgers/2"]


def test_ungated_row_and_missing_pieces(tmp_path, gate):
    res = tmp_path / "res"
    for seed in range(3):
        plant(res, "pinn", "burgers", seed, rel_l2=0.9)
    weak = pd.DataFrame([base_row(center=0.9, trivial=1.0)])  # 0.9 × 1.5 > 0.5: not gated
    [c] = check.compare(check.read_results(res, gate), weak, gate)
    assert c.verdict == "status" and c.ok and "not gated" in c.note
    checks = check.compare(check.read_results(res, gate), weak.iloc[:0], gate, [("fno", "ks")])
    assert {c.verdict for c in checks} == {"NO BASELINE", "NOT RUN"}


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "message"),
    [
        (base_row(metric="train_seconds"), "line 2 (pinn/burgers train_seconds): cannot gate"),
        (base_row(center="x"), "center must be finite"),
        (base_row(tolerance=0.5), "tolerance is a factor"),
        (base_row(n=0), "n >= 1"),
    ],
)
def test_malformed_baselines_name_file_and_line(tmp_path, row, message):
    path = write_baselines(tmp_path / "smoke.csv", [row])
    with pytest.raises(check.GateError) as e:
        check.read_baselines(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_duplicate_and_missing_columns(tmp_path):
    path = write_baselines(tmp_path / "a.csv", [base_row(), base_row()])
    with pytest.raises(check.GateError, match="duplicate row"):
        check.read_baselines(path)
    (tmp_path / "b.csv").write_text(
        "method,problem,metric,baseline,tolerance\npinn,b,rel_l2,1,0.5\n"
    )
    with pytest.raises(check.GateError, match="missing column"):
        check.read_baselines(tmp_path / "b.csv")


def test_results_without_a_baselined_cell_fail(tmp_path, gate):
    """Compared results (--results) that lack an accuracy cell with baselines: NOT RUN."""
    res = tmp_path / "res"
    plant(res, "pig", "heat", rel_l2=3.0)
    checks = check.compare(check.read_results(res, gate), pd.DataFrame([base_row()]), gate)
    assert [(c.cell, c.verdict) for c in checks if not c.ok] == [("pinn/burgers", "NOT RUN")]


def test_baseline_for_a_cell_that_no_longer_exists(tmp_path, gate):
    rows = [base_row(), base_row(method="sindy", problem="lorenz")]
    path = write_baselines(tmp_path / "smoke.csv", rows)
    with pytest.raises(check.GateError) as e:
        check.check_rows_exist(path, check.read_baselines(path), gate, [("pinn", "burgers")])
    assert "line 3: sindy/lorenz rel_l2: the cell does not exist" in str(e.value)


def test_results_of_another_budget_or_other_settings_are_refused(tmp_path, gate):
    res = tmp_path / "res"
    plant(res, "pinn", "burgers", rel_l2=0.1, overrides=["budget.steps=200"])
    with pytest.raises(check.GateError, match="other gate settings"):
        check.read_results(res, gate)
    rec_path = res / "pinn" / "burgers" / "0" / "metrics.json"
    rec = json.loads(rec_path.read_text()) | {"budget": "standard"}
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(check.GateError) as e:
        check.read_results(res, gate)
    assert str(rec_path) in str(e.value) and "budget 'standard'" in str(e.value)


# -- the command on planted results -------------------------------------------------------------
def test_main_on_results_writes_the_summary(tmp_path, capsys, monkeypatch):
    gate_path = write_gate(tmp_path)
    res = tmp_path / "res"
    for seed in range(3):
        plant(res, "pinn", "burgers", seed, rel_l2=0.11)
    base = write_baselines(tmp_path / "smoke.csv", [base_row()])
    summary = tmp_path / "summary.md"
    args = ["--gate", gate_path, "--results", res, "--baselines", base, "--summary", summary]
    code, out = run(capsys, *args)
    assert code == 0, out
    assert "pinn: 1 accuracy-gated row(s)" in out and "PASS" in out
    assert "| pinn/burgers | rel_l2 |" in summary.read_text()

    plant(res, "pinn", "burgers", 1, rel_l2=0.5)
    plant(res, "pinn", "burgers", 2, rel_l2=0.5)
    code, out = run(capsys, *args)
    assert code == 1 and "REGRESSED pinn/burgers rel_l2" in out and "FAIL, 1 failing" in out

    code, out = run(capsys, *args[:2], "--results", res, "--baselines", base, "--variant", "x")
    assert code == 1 and "--variant x: not one of" in out


def test_seeds_and_only_parsing():
    args = check.parse_args(["--seeds", "2", "0,1", "--only", "pinn/burgers"])
    assert args.seeds == [0, 1, 2] and args.only == [("pinn", "burgers")]
    with pytest.raises(SystemExit):
        check.parse_args(["--only", "pinn"])


# -- real runs ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_gate_under_another_kernel_variant(tmp_path, capsys):
    """Two committed accuracy cells, run for real under ATEN_CPU_CAPABILITY=default in spawned
    workers: the same verdict as on the machine's own kernels (no false alarm)."""
    cells = ["pinn/hypergeometric", "classical/ns_vorticity"]
    only = [a for c in cells for a in ("--only", c)]
    code, out = run(capsys, *only, "--variant", "aten_default", "--out", tmp_path / "check")
    assert code == 0, out
    assert "PASS" in out and "REGRESSED" not in out


@pytest.mark.slow
def test_a_planted_bug_is_caught(tmp_path):
    """benchmarks/gate_sensitivity.py plants burgers_op's data on half the solver grid; the
    classical solver at the data's own resolution no longer reproduces it, and the gate fails."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gate_sensitivity

        assert gate_sensitivity.main(["--plant", "half_resolution", "--out", str(tmp_path)]) == 0
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
