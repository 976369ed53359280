"""`bench-check`: the CI accuracy gate.

Runs every applicable method × problem cell at `budget=smoke` on the CPU with one thread and
fixed seeds, and compares each cell's metrics with `results/baselines/smoke.csv` (columns method,
problem, metric, baseline, tolerance). A metric regresses when value > baseline × (1 +
tolerance); all gated metrics are lower-is-better. A status other than ok, a compatible cell
without a baseline, or a baseline whose cell did not run all fail the gate (exit 1).
`--update` rewrites the baselines from the current results, deliberately (the worst seed's
value of rel_l2, rel_l2_one_step (operator learners) and residual_rms; an existing row keeps
its tolerance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

REPO = Path(__file__).resolve().parents[1]
BASELINES = REPO / "results" / "baselines" / "smoke.csv"
LOWER_IS_BETTER = ("rel_l2", "rel_l2_one_step", "residual_rms", "max_abs_err", "rmse")
UPDATED = ("rel_l2", "rel_l2_one_step", "residual_rms")  # rel_l2/<field> can be gated too
TOLERANCE = 0.5
COLUMNS = ["method", "problem", "metric", "baseline", "tolerance"]
Cell = tuple[str, str]  # (method, problem)


@dataclass(frozen=True)
class Check:
    """One line of the verdict table. `cell` is method/problem[/seed]."""

    cell: str
    metric: str
    verdict: str  # pass | better | REGRESSED | FAILED | NO BASELINE | NOT RUN | NO METRIC
    baseline: float | None = None
    value: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "better")

    @property
    def ratio(self) -> float | None:
        if self.baseline and self.value is not None:
            return self.value / self.baseline
        return None


# -- pure comparison ----------------------------------------------------------------------------
def read_baselines(path: Path) -> pd.DataFrame:
    """The baselines table (empty when the file does not exist); raises ValueError if malformed."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(path, dtype={"method": str, "problem": str, "metric": str})
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {COLUMNS}")
    bad = sorted({m for m in df["metric"] if m.split("/")[0] not in LOWER_IS_BETTER})
    if bad:
        raise ValueError(f"{path}: cannot gate metric(s) {bad}; use one of {LOWER_IS_BETTER}")
    dup = df[df.duplicated(["method", "problem", "metric"])]
    if not dup.empty:
        raise ValueError(f"{path}: duplicate row(s) for {dup[COLUMNS[:3]].values.tolist()}")
    return df[COLUMNS]


def read_results(root: Path) -> list[dict[str, Any]]:
    """Every `<root>/<method>/<problem>/<seed>/metrics.json` record."""
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/*/*/metrics.json"))]


def _rows_of(df: pd.DataFrame, cells: Container[Cell]) -> pd.DataFrame:
    """The rows of `df` whose (method, problem) is in `cells`."""
    return df.loc[np.array([c in cells for c in zip(df["method"], df["problem"])], dtype=bool)]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def compare(
    results: Sequence[Mapping[str, Any]],
    baselines: pd.DataFrame,
    grid: Iterable[Cell] | None = None,
) -> list[Check]:
    """Check every result against its cell's baseline rows, and every baseline row has a result.

    Arguments:
        results: metrics.json records (status not_applicable ones are skipped).
        baselines: rows of `read_baselines`, already restricted to the cells in scope.
        grid: the cells that should have run; a baseline row outside it is named as such.
    """
    checks: list[Check] = []
    rows = {cell: grp for cell, grp in baselines.groupby(["method", "problem"])}
    ran = set()
    for r in sorted(results, key=lambda r: (r["method"], r["problem"], r["seed"])):
        cell = (r["method"], r["problem"])
        name = f"{r['method']}/{r['problem']}/{r['seed']}"
        if r["status"] == "not_applicable":
            continue
        ran.add(cell)
        if r["status"] != "ok":
            msg = (r.get("message") or "").strip().split("\n")[0][:200]
            checks.append(Check(name, "status", "FAILED", note=f"{r['status']} — {msg}"))
            continue
        if cell not in rows:
            checks.append(Check(name, "-", "NO BASELINE", note="run bench-check --update"))
            continue
        for b in rows[cell].itertuples(index=False):
            value = r.get("metrics", {}).get(b.metric)
            if value is None:
                note = f"metrics.json has no {b.metric!r}"
                checks.append(Check(name, b.metric, "NO METRIC", b.baseline, note=note))
            elif not _finite(value) or value > b.baseline * (1 + b.tolerance):
                note = f"{value:.3e} > {b.baseline:.3e} × (1 + {b.tolerance:g})"
                checks.append(Check(name, b.metric, "REGRESSED", b.baseline, value, note))
            else:
                better = value < b.baseline / (1 + b.tolerance)
                checks.append(
                    Check(name, b.metric, "better" if better else "pass", b.baseline, value)
                )
    grid = set(grid) if grid is not None else None
    for cell in sorted(set(rows) - ran):
        why = "no result" if grid is None or cell in grid else "not registered or not applicable"
        checks.append(Check("/".join(cell), "-", "NOT RUN", note=f"baseline row but {why}"))
    return checks


def updated_baselines(
    results: Sequence[Mapping[str, Any]], old: pd.DataFrame, keep: Iterable[Cell] = ()
) -> pd.DataFrame:
    """New baselines: per ok cell, the worst seed's rel_l2, residual_rms and any metric already
    gated (so every seed passes right after an update); an existing row keeps its tolerance.
    Old rows of cells in `keep` stay."""
    ok = pd.DataFrame(
        [
            {"method": r["method"], "problem": r["problem"], "metric": k, "value": v}
            for r in results
            if r["status"] == "ok"
            for k, v in r.get("metrics", {}).items()
            if _finite(v)
        ],
        columns=["method", "problem", "metric", "value"],
    )
    gated = set(zip(old["method"], old["problem"], old["metric"]))
    wanted = [m in UPDATED or (a, p, m) in gated for a, p, m in ok.values[:, :3]]
    new = (
        ok.loc[np.array(wanted, dtype=bool)]
        .groupby(["method", "problem", "metric"], as_index=False)["value"]
        .max()
    )
    new = new.rename(columns={"value": "baseline"})
    new = new.merge(old[["method", "problem", "metric", "tolerance"]], how="left")
    new["tolerance"] = new["tolerance"].fillna(TOLERANCE)
    cells = set(zip(new["method"], new["problem"]))
    kept = _rows_of(old, set(keep) - cells)
    out = pd.concat([kept, new[COLUMNS]]).astype({"baseline": float, "tolerance": float})
    return out.sort_values(COLUMNS[:3]).reset_index(drop=True)


# -- running the grid ---------------------------------------------------------------------------
def smoke_grid(only: Sequence[Cell] = ()) -> tuple[list[Cell], list[str]]:
    """Applicable registered cells (restricted to `only` when given), and errors about `only`."""
    from bench.registry import build_method, build_problem, methods, problems

    ms = {m: build_method(m) for m in sorted(methods())}
    ps = {p: build_problem(p) for p in sorted(problems())}
    cells = [(m, p) for m in ms for p in ps if ms[m].applicable(ps[p]) is None]
    errors = []
    for m, p in only:
        if m not in ms or p not in ps:
            errors.append(f"--only {m}/{p}: no such method or problem")
        elif (m, p) not in cells:
            errors.append(f"--only {m}/{p}: not applicable ({ms[m].applicable(ps[p])})")
    return ([c for c in cells if c in only] if only else cells), errors


def _run_one(m: str, p: str, seed: int, out_dir: Path, track: bool) -> dict[str, Any]:
    """One smoke cell; an exception becomes a `failed` record (the gate reports, never crashes)."""
    from bench.registry import methods, problems
    from bench.run import run_cell

    shutil.rmtree(out_dir, ignore_errors=True)  # never compare a stale metrics.json
    overrides = ["budget=smoke", f"seed={seed}", "threads=1", "device=cpu"]
    overrides += [f"method.{k}={v}" for k, v in methods()[m].smoke.items()]  # its smoke size
    overrides += [f"problem.{k}={v}" for k, v in problems()[p].smoke.items()]
    overrides += ["eval.figures=false", f"tracking.enabled={str(track).lower()}"]
    try:
        return run_cell(m, p, overrides=overrides, output_dir=out_dir)
    except Exception as e:
        rec = {"method": m, "problem": p, "seed": seed, "status": "failed",
               "message": f"{type(e).__name__}: {e}", "metrics": {}}  # fmt: skip
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(rec, indent=2) + "\n")
        return rec


def run_grid(
    cells: Sequence[Cell],
    seeds: Sequence[int],
    out: Path,
    track: bool,
    console: Console,
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run each cell and seed at budget=smoke, `jobs` at a time (in `jobs` worker processes;
    every cell uses one thread and reseeds, so the results do not depend on `jobs`)."""
    tasks = [(m, p, seed, out / m / p / str(seed), track) for m, p in cells for seed in seeds]

    def show(rec: dict[str, Any]) -> None:
        why = f" ({rec.get('message', '').splitlines()[0]})" if rec.get("message") else ""
        cell = f"{rec['method']}/{rec['problem']}/{rec['seed']}"
        console.print(escape(f"bench-check: {cell}: {rec['status']}{why}"))

    if jobs <= 1 or len(tasks) <= 1:
        records = []
        for task in tasks:
            records.append(_run_one(*task))
            show(records[-1])
        return records
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Workers are reused (torch's import is seconds per process; each cell reseeds and sets its
    # threads, as the sequential path does), and the costliest cells start first so that none
    # is left running alone at the end: cost grows with the input dimension (hjb: d = 100).
    from bench.registry import build_problem

    dims = {p: len(build_problem(p).axes) for _, p in cells}
    order = sorted(range(len(tasks)), key=lambda i: -dims[tasks[i][1]])
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_run_one, *tasks[i]): i for i in order}
        done: dict[int, dict[str, Any]] = {}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            show(done[futures[fut]])
    return [done[i] for i in range(len(tasks))]


# -- CLI ----------------------------------------------------------------------------------------
def _cell(text: str) -> Cell:
    m, sep, p = text.partition("/")
    if not sep or not m or not p or "/" in p:
        raise argparse.ArgumentTypeError(f"expected method/problem, got {text!r}")
    return m, p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-check", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--seeds", nargs="+", default=["0"], help="seeds to run (default: 0); '0 1' or '0,1'")
    add("--only", action="append", type=_cell, default=[], metavar="METHOD/PROBLEM")
    add("--out", type=Path, default=REPO / "results" / "check", help="where cells write")
    add("--baselines", type=Path, default=BASELINES, help="default: results/baselines/smoke.csv")
    add("--track", action="store_true", help="log the cells to MLflow (off by default)")
    add("--jobs", type=int, default=os.cpu_count() or 1, help="cells at a time (default: cores)")
    add("--no-run", action="store_true", help="compare the metrics.json files already in --out")
    add("--results", type=Path, help="compare the metrics.json files in DIR (implies --no-run)")
    add("--update", action="store_true", help="rewrite the baselines from the current results")
    args = p.parse_args(argv)
    try:
        args.seeds = sorted({int(s) for arg in args.seeds for s in arg.split(",") if s})
    except ValueError:
        p.error(f"--seeds takes integers, got {args.seeds}")
    return args


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3e}"


def verdict_table(checks: Sequence[Check]) -> Table:
    table = Table(title="bench-check: smoke accuracy gate", box=box.SIMPLE_HEAVY)
    for h in ("cell", "metric", "baseline", "value", "ratio", "verdict"):
        table.add_column(h, justify="right" if h in ("baseline", "value", "ratio") else "left")
    for c in checks:
        ratio = "—" if c.ratio is None else f"{c.ratio:.2f}"
        style = "green" if c.ok else "bold red"
        cells = [c.cell, c.metric, _fmt(c.baseline), _fmt(c.value), ratio]
        table.add_row(*map(Text, cells), Text(c.verdict, style=style))
    return table


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wide = "COLUMNS" in os.environ or os.isatty(1)  # CI logs: 120 columns, not rich's 80
    console = Console(highlight=False, width=None if wide else 120)

    def say(msg: str) -> None:
        console.print(escape(f"bench-check: {msg}"))

    try:
        baselines = read_baselines(args.baselines)
    except ValueError as e:
        say(str(e))
        return 1
    only = set(args.only)
    if args.results or args.no_run:
        root = args.results or args.out
        results = [r for r in read_results(root) if not only or (r["method"], r["problem"]) in only]
        grid = None
        if not results:
            say(f"no metrics.json files under {root}/<method>/<problem>/<seed>/")
            return 1
    else:
        grid, errors = smoke_grid(args.only)
        if not grid and not errors:
            errors = ["no applicable method × problem cell is registered"]
        for e in errors:
            say(e)
        if errors:
            return 1
        results = run_grid(grid, args.seeds, args.out, args.track, console, jobs=args.jobs)

    for r in results:  # a clock cap makes the metrics depend on this machine's speed
        if r.get("stop_reason") == "seconds":
            say(f"warning: {r['method']}/{r['problem']}/{r['seed']} hit budget.seconds first")
    if args.update:
        bad = [r for r in results if r["status"] not in ("ok", "not_applicable")]
        for r in bad:
            say(f"not updating: {r['method']}/{r['problem']}/{r['seed']} is {r['status']}")
        if bad:
            return 1
        others = {c for c in zip(baselines.method, baselines.problem) if only and c not in only}
        new = updated_baselines(results, baselines, keep=others)
        args.baselines.parent.mkdir(parents=True, exist_ok=True)
        new.to_csv(args.baselines, index=False, float_format="%.6g")
        say(f"wrote {len(new)} baseline row(s) to {args.baselines}")
        baselines = new
    baselines = _rows_of(baselines, only) if only else baselines

    checks = compare(results, baselines, grid)
    console.print(verdict_table(checks))
    failed = [c for c in checks if not c.ok]
    for c in failed:
        say(f"{c.verdict} {c.cell} {c.metric}" + (f": {c.note}" if c.note else ""))
    cells = len({tuple(c.cell.split("/")[:2]) for c in checks})
    verdict = f"FAIL, {len(failed)} failing" if failed else "PASS"
    say(f"{verdict}: {len(checks)} check(s) on {cells} cell(s), {len(checks) - len(failed)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
