"""`scripts/ui_check.py` (`make ui-check`): `make ui`'s MLflow UI on a small grid, in headless
Chromium; and its checks, on pages described by hand."""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sqlite3
import struct
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "ui_check.py"
_spec = importlib.util.spec_from_file_location("ui_check", SCRIPT)
assert _spec and _spec.loader
ui_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ui_check)

RUNS = [  # in rel_l2 order, as the script reads them from the store
    {"name": "pig/burgers/0", "shown": {"rel_l2": "0.25", "train_seconds": "3.5"}},
    {"name": "pinn/burgers/0", "shown": {"rel_l2": "0.5", "train_seconds": "1.25"}},
]
HEADERS = ["", "Run Name", "Created", "Duration", "rel_l2", "rel_l2_trivial", "steps"]
HEADERS += ["train_seconds", "status"]


def table(*rows: str) -> dict:
    return {"headers": HEADERS, "rows": {str(i): f" \t {row} " for i, row in enumerate(rows)}}


def test_table_check_wants_each_run_with_its_values_in_rel_l2_order():
    good = table("pig/burgers/0 0.25 1 200 3.5 ok", "pinn/burgers/0 0.5 1 200 1.25 ok")
    assert ui_check.check_table(good, RUNS) == []
    swapped = table("pinn/burgers/0 0.5 1 200 1.25 ok", "pig/burgers/0 0.25 1 200 3.5 ok")
    assert "not sorted by rel_l2" in ui_check.check_table(swapped, RUNS)[0]
    no_values = table("pig/burgers/0 - - - - -", "pinn/burgers/0 0.5 1 200 1.25 ok")
    assert ui_check.check_table(no_values, RUNS) == [
        "no row shows run pig/burgers/0 with ['0.25', '3.5']"
    ]
    assert ui_check.check_table(table(), RUNS)  # the page before it has rendered
    no_column = {**good, "headers": [h for h in HEADERS if h != "train_seconds"]}
    assert "no column 'train_seconds'" in ui_check.check_table(no_column, RUNS)[0]


def test_chart_check_wants_each_chart_drawn_with_every_run():
    def card(title: str, plots: int = 1, names=("pig/burgers/0", "pinn/burgers/0")) -> dict:
        return {"title": title, "plots": plots, "text": f"{title} 0 0.5 1 " + " ".join(names)}

    good = [card("eval/rel_l2"), card("rel_l2"), card("train_seconds")]
    assert ui_check.check_charts(good, RUNS) == []
    assert ui_check.check_charts([], RUNS)  # the page before it has rendered
    bad = [card("eval/rel_l2", plots=0), card("rel_l2", names=("pig/burgers/0",))]
    assert ui_check.check_charts(bad, RUNS) == [
        "chart 'eval/rel_l2' has no plot drawn",
        "chart 'rel_l2' does not list runs ['pinn/burgers/0']",
        "no chart 'train_seconds' (charts: ['eval/rel_l2', 'rel_l2'])",
    ]


def test_without_chromium_it_says_so_and_exits_2(tmp_path):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--store", str(tmp_path / "none.db")]
        + ["--chromium", str(tmp_path / "no-chromium"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "cannot check: no browser" in r.stdout, r.stdout + r.stderr


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="needs Debian's `chromium` on PATH to load the MLflow UI headless "
    "(apt-get install chromium); not part of `make setup`",
)
def test_the_runs_table_and_the_charts_as_a_user_sees_them(tmp_path):
    """The real thing: a two-run grid by `bench -m`, `make ui`'s command on a copy of its store,
    both views checked in Chromium (the script's checks), one screenshot of each."""
    store = tmp_path / "store" / "mlflow.db"
    out = tmp_path / "shots"
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--grid", "--store", str(store), "--out", str(out)]
        # The page is the UI this test serves itself; CI runners often lack what Chromium's
        # sandbox needs (unprivileged user namespaces).
        + ["--no-sandbox"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "comparing 2 runs" in r.stdout and "ok: both views" in r.stdout, r.stdout
    for name in ("table", "charts"):
        assert png_size(out / f"{name}.png") == (1440, 810)
        assert (out / f"{name}.png").stat().st_size > 20_000  # not a blank page
    with contextlib.closing(sqlite3.connect(store)) as db:  # the view went into the copy only
        (n,) = db.execute(
            "select count(*) from experiment_tags where key like 'mlflow.sharedViewState.%'"
        ).fetchone()
    assert n == 0
