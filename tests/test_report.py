"""bench-report: table building on plain records, and the CLI on a real SQLite MLflow store."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench import report

# (method, problem, budget, seed, status, rel_l2, train_seconds)
RUNS = [
    ("pinn", "burgers", "smoke", 0, "ok", 0.02, 10.0),
    ("pinn", "burgers", "smoke", 1, "ok", 0.04, 12.0),
    ("pig", "burgers", "smoke", 0, "ok", 0.01, 5.0),
    ("pig", "burgers", "smoke", 1, "ok", 0.03, 7.0),
    ("pinn", "heat", "smoke", 0, "ok", 0.5, 3.0),
    ("pig", "heat", "smoke", 0, "diverged", math.nan, 1.0),
    ("pinn", "burgers", "standard", 0, "ok", 0.001, 100.0),
]


def record(method, problem, budget, seed, status, rel_l2, secs, start=0, **extra_tags):
    tags = {"method": method, "problem": problem, "budget": budget, "seed": str(seed)}
    metrics = {"train_seconds": secs} if math.isnan(rel_l2) else {"rel_l2": rel_l2}
    metrics["train_seconds"] = secs
    return {
        "info": {"run_id": f"{method}-{problem}-{budget}-{seed}-{start}", "start_time": start},
        "data": {"tags": {**tags, "status": status, **extra_tags}, "metrics": metrics},
    }


def row(table: pd.DataFrame, method: str, problem: str, budget: str = "smoke") -> pd.Series:
    sel = table[(table.method == method) & (table.problem == problem) & (table.budget == budget)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


# -- pure functions -----------------------------------------------------------------------------
def test_leaderboard_medians_spread_and_counts():
    recs = [record(*r) for r in RUNS]
    recs.append(
        record("pinn", "burgers", "smoke", 0, "ok", 9.0, 1.0, **{"physbench.parent": "true"})
    )
    table = report.leaderboard(report.select_runs(report.runs_frame(recs)))
    r = row(table, "pinn", "burgers")
    assert (r.rel_l2_median, r.rel_l2_min, r.rel_l2_max) == pytest.approx((0.03, 0.02, 0.04))
    assert r.train_seconds_median == pytest.approx(11.0)
    assert r.n_seeds == 2 and r.n_diverged == 0
    # a cell whose only run diverged still shows up, with its count and no median
    r = row(table, "pig", "heat")
    assert r.n_seeds == 0 and r.n_diverged == 1 and math.isnan(r.rel_l2_median)
    # sorted best first within a problem
    burgers = table[(table.problem == "burgers") & (table.budget == "smoke")]
    assert list(burgers.method) == ["pig", "pinn"]


def test_latest_run_of_a_seed_wins_and_filters():
    recs = [
        record("pinn", "burgers", "smoke", 0, "ok", 0.5, 1.0, start=1),
        record("pinn", "burgers", "smoke", 0, "ok", 0.1, 1.0, start=2, git_commit="abc"),
    ]
    runs = report.select_runs(report.runs_frame(recs))
    assert list(runs.rel_l2) == [0.1]
    assert report.select_runs(report.runs_frame(recs), tags={"git_commit": "zzz"}).empty
    assert report.select_runs(report.runs_frame(recs), budget="paper").empty
    assert report.leaderboard(report.select_runs(report.runs_frame([]))).empty


def test_markdown_and_rich_keep_units():
    header, rows = report.display_rows(
        report.leaderboard(report.select_runs(report.runs_frame([record(*r) for r in RUNS])))
    )
    assert "train [s] median" in header and "budget" in header and "diverged" in header
    md = report.to_markdown(header, rows)
    assert md.splitlines()[0].startswith("| problem | method | budget |")
    assert "| ---: |" in md.splitlines()[1] + " |"


# -- the CLI on a real store --------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite MLflow store with a multirun parent, its children and one foreign experiment."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("physbench", artifact_location=(root / "art").as_uri())
    parent = client.create_run(exp, run_name="sweep/x", tags={"physbench.parent": "true"})
    for method, problem, budget, seed, status, rel_l2, secs in RUNS:
        tags = {"method": method, "problem": problem, "budget": budget, "seed": str(seed)}
        tags |= {"status": status, "device": "cpu", "mlflow.parentRunId": parent.info.run_id}
        run = client.create_run(exp, run_name=f"{method}/{problem}/{seed}", tags=tags)
        final = {"train_seconds": secs, "evals": 400.0, "steps": 400.0}
        if not math.isnan(rel_l2):
            final["rel_l2"] = rel_l2
        metrics = [Metric(k, v, 0, 0) for k, v in final.items()]
        for step in (0, 100, 200):  # the curve: error falls to the final value
            metrics.append(Metric("eval/rel_l2", rel_l2 * (3 - step / 100), 0, step))
            metrics.append(Metric("eval/seconds", secs * step / 200, 0, step))
            metrics.append(Metric("train/loss", 1.0 / (step + 1), 0, step))
        client.log_batch(run.info.run_id, metrics=[m for m in metrics if not math.isnan(m.value)])
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent.info.run_id)
    other = client.create_experiment("other", artifact_location=(root / "art2").as_uri())
    client.create_run(other, tags={"method": "fno", "problem": "burgers", "budget": "smoke",
                                   "seed": "0", "status": "ok"})  # fmt: skip
    client.create_experiment("empty", artifact_location=(root / "art3").as_uri())
    return uri


def test_cli_writes_table_files_and_figures(store, tmp_path, capsys):
    out = tmp_path / "res"
    assert report.main(["--tracking-uri", store, "--budget", "smoke", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train [s] median" in text and "min–max" in text and "diverged" in text
    table = pd.read_csv(out / "leaderboard.csv")
    r = row(table, "pinn", "burgers")
    assert r.rel_l2_median == pytest.approx(0.03) and r.n_seeds == 2
    assert r.train_seconds_median == pytest.approx(11.0)
    assert row(table, "pig", "heat").n_diverged == 1
    assert set(table.budget) == {"smoke"} and "fno" not in set(table.method)
    assert "| burgers | pig |" in (out / "leaderboard.md").read_text()
    for problem in ("burgers", "heat"):
        assert (out / "figures" / f"{problem}_error_vs_time.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "methods", "budgets"),
    [
        (["--tag", "method=pig"], {"pig"}, {"smoke"}),
        (["--budget", "standard"], {"pinn"}, {"standard"}),
        (["--all-experiments", "--tag", "problem=burgers"], {"pig", "pinn", "fno"}, None),
        (["--experiment", "other"], {"fno"}, {"smoke"}),
    ],
)
def test_cli_filters(store, tmp_path, args, methods, budgets):
    out = tmp_path / "res"
    assert report.main(["--tracking-uri", store, "--out", str(out), "--no-figures", *args]) == 0
    table = pd.read_csv(out / "leaderboard.csv")
    assert set(table.method) == methods
    if budgets:
        assert set(table.budget) == budgets
    assert not (out / "figures").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "empty"], "no matching runs"),
        (["--tag", "method=nobody"], "no matching runs"),
        (["--experiment", "nope"], "no experiment nope"),
    ],
)
def test_cli_no_matching_runs(store, tmp_path, capsys, args, message):
    assert report.main(["--tracking-uri", store, "--out", str(tmp_path), *args]) == 1
    assert message in capsys.readouterr().out
    assert not (tmp_path / "leaderboard.csv").exists()


def test_cli_missing_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert report.main(["--tracking-uri", uri, "--out", str(tmp_path)]) == 1
    assert "no MLflow store" in capsys.readouterr().out
    assert not (tmp_path / "none.db").exists()


def test_runs_that_differ_in_hyperparameters_are_separate_entries():
    """Seeds pool only runs with the same method/problem params; differences name the entry."""
    recs = []
    for seed, hard, err in [(0, "false", 0.1), (1, "false", 0.3), (0, "true", 0.01)]:
        r = record("pinn", "burgers", "standard", seed, "ok", err, 1.0, start=seed)
        r["info"]["run_id"] += hard
        r["data"]["params"] = {"method.hard_constraints": hard, "method.width": "20", "seed": "x"}
        recs.append(r)
    runs = report.select_runs(report.runs_frame(recs))
    table = report.leaderboard(runs)
    assert sorted(table.variant) == ["hard_constraints=false", "hard_constraints=true"]
    soft = table[table.variant == "hard_constraints=false"].iloc[0]
    assert soft.n_seeds == 2 and soft.rel_l2_median == pytest.approx(0.2)
    header, rows = report.display_rows(table)
    assert ["burgers", "pinn [hard_constraints=true]"] == rows[0][:2]
    # one variant only: no label
    same = report.leaderboard(report.select_runs(report.runs_frame(recs[:2])))
    assert list(same.variant) == [""] and report.display_rows(same)[1][0][1] == "pinn"


def test_the_rollout_residual_is_a_column_where_runs_have_it():
    """Operator runs on problems with grid residuals log `pde_residual`; the leaderboard shows
    its median over seeds, and only when some run has it."""
    recs = [record("hard_moe", "ds", "standard", s, "ok", 0.3, 170.0) for s in (0, 1, 2)]
    recs += [record("soft_constraint", "ds", "standard", 0, "ok", 0.02, 170.0)]
    for r, res in zip(recs, (6e-3, 8e-3, 1e-2, 5e-4), strict=True):
        r["data"]["metrics"]["pde_residual"] = res
    table = report.leaderboard(report.select_runs(report.runs_frame(recs)))
    header, rows = report.display_rows(table)
    col = header.index("PDE residual")
    cells = {r[1]: r[col] for r in rows}
    assert cells["hard_moe"] == report._sci(8e-3) and cells["soft_constraint"] == report._sci(5e-4)
    plain = report.leaderboard(report.select_runs(report.runs_frame([record(*RUNS[0])])))
    assert "PDE residual" not in report.display_rows(plain)[0]


def test_pair_views_error_at_equal_steps_and_time_to_error(store, tmp_path, capsys):
    """The fixture's curves: rel_l2 x (3, 2, 1) at steps 0, 100, 200 over 0, 1/2, 1 of the
    train seconds. pinn seeds end at 0.02, 0.04; pig at 0.01, 0.03."""
    out = tmp_path / "res"
    args = ["--tracking-uri", store, "--budget", "smoke", "--out", str(out)]
    assert report.main([*args, "--pair", "pinn,pig", "--problem", "burgers",
                        "--targets", "0.05,0.025,0.001"]) == 0  # fmt: skip
    text = (out / "pair_burgers_pinn_pig.md").read_text()
    assert "Error at equal steps" in capsys.readouterr().out
    lines = [line.replace(" ", "") for line in text.splitlines()]
    # equal steps: medians over seeds at steps 100 and 200
    assert "|100|0.04|0.06|" in lines and "|200|0.02|0.03|" in lines
    # time to 0.05: pinn seeds at 5 s and 12 s, pig at 0 s and 7 s; 0.025: pinn only seed 0
    # (10 s, one of two seeds: not reached), pig seed 0 at 2.5 s and seed 1 never: not reached
    assert "|rel_l2|pig|pinn|" in lines and "|0.05|3.5|8.5|" in lines
    assert "|0.025|notreached|notreached|" in lines and "|0.001|notreached|notreached|" in lines


def test_pair_refuses_missing_methods_and_bad_arguments(store, tmp_path, capsys):
    args = ["--tracking-uri", store, "--budget", "smoke", "--out", str(tmp_path)]
    assert report.main([*args, "--pair", "pinn,fno", "--problem", "burgers"]) == 1
    assert "no ok runs of fno on burgers" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report.main([*args, "--pair", "pinn"])
    assert report.main([*args, "--pair", "pinn,pig", "--problem", "burgers", "--preset", "x"]) == 1
    assert "no ok runs of pig, pinn on burgers" in capsys.readouterr().out
