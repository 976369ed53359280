"""Paper protocols (`conf/experiment/`), their published numbers (`results/papers.csv`) and the
reproduction table (`bench-reproduce`): every preset composes into a valid, applicable cell
with a step budget and no clock; bad presets and bad rows are refused by name; the verdict
rules; a real preset run reaches the table through a real store."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import open_dict

from bench import registry
from bench.reproduction import (
    PAPERS,
    PapersError,
    claim_verdict,
    command,
    load_papers,
    preset_info,
    reproduction_table,
    verdict,
)
from bench.run import compose_overrides, execute
from methods.base import Budget

PRESETS = registry.yaml_options("experiment")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_a_valid_applicable_step_counted_cell(name):
    cfg = compose_overrides([f"+experiment={name}"])
    choices = cfg.hydra.runtime.choices
    assert cfg.preset == name and choices["budget"] == "protocol"
    assert int(cfg.seeds) >= 1
    budget = Budget.from_dict(dict(cfg.budget), name="protocol")
    assert budget.seconds is None and budget.steps > 0  # a step count, not a clock
    problem = registry.build_problem(choices["problem"], **cfg.problem)  # settings checked
    method = registry.build_method(choices["method"], **cfg.method)
    assert method.applicable(problem) is None, (name, method.applicable(problem))


def test_every_preset_has_a_published_row_or_is_a_compared_baseline():
    papers = load_papers()
    named = set(papers["experiment"]) | set(papers["compare_to"]) - {""}
    assert set(PRESETS) == named, set(PRESETS) ^ named


def _bench(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    exe = [sys.executable, "-c", "from bench.cli import main; main()"]
    return subprocess.run([*exe, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_an_unknown_experiment_lists_the_presets(tmp_path):
    out = _bench("+experiment=raisi_burgers", cwd=tmp_path)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert "experiment/raisi_burgers" in text and "raissi_burgers" in text and "pihc_ds_moe" in text


def test_a_preset_whose_method_does_not_apply_fails_before_any_run(tmp_path):
    db = tmp_path / "mlflow.db"
    out = _bench(
        "+experiment=fno_ks", "problem=burgers", f"tracking.uri=sqlite:///{db}", cwd=tmp_path
    )
    assert out.returncode == 2
    text = " ".join((out.stdout + out.stderr).split())
    assert "experiment 'fno_ks': method 'fno' does not apply to problem 'burgers'" in text
    assert not db.exists()  # no run was started


# -- verdicts -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ours", "published", "spread", "expected"),
    [
        (6.7e-4, 6.7e-4, None, "reproduced"),
        (1.3e-3, 6.7e-4, None, "reproduced"),  # within a factor 2
        (1.4e-3, 6.7e-4, None, "worse"),
        (3.0e-4, 6.7e-4, None, "better"),
        (0.15, 0.0755, 0.081, "reproduced"),  # outside a factor 2, inside the paper's spread
        (0.20, 0.0755, 0.081, "worse"),
        (math.nan, 0.0755, 0.081, "worse"),
    ],
)
def test_verdict_rule(ours, published, spread, expected):
    assert verdict(ours, published, spread) == expected


def test_claim_rules():
    assert claim_verdict("below", [0.01], 0.02) == "reproduced"
    assert claim_verdict("below", [0.03], 0.02) == "worse"
    assert claim_verdict("below", [0.01], None) == "not run"
    assert claim_verdict("flat", [0.01, 0.05, 0.09]) == "reproduced"
    assert claim_verdict("flat", [0.01, 0.5]) == "worse"
    assert claim_verdict("flat", [4e-7, 9e-6]) == "reproduced"  # all accurate: below 1e-3
    assert claim_verdict("flat", [4e-5, 2e-3]) == "worse"


def test_commands_carry_seeds_and_sweeps():
    assert command("raissi_burgers", preset_info("raissi_burgers")) == (
        "bench -m +experiment=raissi_burgers 'seed=range(3)'"
    )
    assert command("pihc_ds_moe", preset_info("pihc_ds_moe")) == "bench +experiment=pihc_ds_moe"
    lpinn = preset_info("lpinn_convection")
    assert "problem.c" in lpinn["sweep"] and command("lpinn_convection", lpinn).startswith(
        "bench -m"
    )
    assert preset_info("pihc_ds_hard")["reduction"] != preset_info("pihc_ds_moe")["reduction"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda df: df.drop(columns="citation"), "missing column"),
        (lambda df: df.assign(citation=""), "no citation"),
        (lambda df: df.assign(experiment="raissi_burger"), "no preset"),
        (lambda df: df.assign(published="-1", claim=""), "not a positive number"),
        (lambda df: df.assign(claim="roughly"), "is not one of"),
    ],
)
def test_a_malformed_papers_file_is_refused_naming_file_and_row(tmp_path, edit, message):
    bad = edit(pd.read_csv(PAPERS, dtype=str, keep_default_na=False).head(2))
    path = tmp_path / "papers.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(PapersError, match=message) as e:
        load_papers(path)
    assert str(path) in str(e.value)
    if message != "missing column":
        assert "row 2" in str(e.value)


# -- end to end: a preset run, its store, its row ---------------------------------------------
def test_a_preset_run_reaches_the_reproduction_table(tmp_path):
    from bench.report import load_runs, select_runs

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = ["+experiment=raissi_burgers", "budget.steps=4", "budget.eval_every=2",
                 "method.n_collocation=200", f"tracking.uri={uri}", "eval.figures=false",
                 "threads=1"]  # fmt: skip
    cfg = compose_overrides(overrides)
    budget_name = cfg.hydra.runtime.choices["budget"]
    with open_dict(cfg):
        del cfg["hydra"]
    rec = execute(cfg, "pinn", "burgers", tmp_path / "run", budget_name=budget_name)
    assert rec["status"] == "ok" and rec["hardware"]
    _, df = load_runs(uri, ["physbench"])
    table = reproduction_table(select_runs(df, "protocol"), load_papers())
    row = table.set_index("experiment").loc["raissi_burgers"]
    assert row["n_seeds"] == 1 and row["steps"] == 4 and row["hardware"] == rec["hardware"]
    assert row["verdict"] == verdict(rec["metrics"]["rel_l2"], 6.7e-4, None)
    assert (table.set_index("experiment").loc["pihc_ds_moe", "verdict"]) == "not run"
