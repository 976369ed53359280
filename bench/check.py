"""`bench-check`: the CI accuracy gate, with the same verdict on every machine.

What runs (`conf/gate.yaml`): every applicable method × problem cell, from budget `smoke` with
the method's and the problem's `smoke` sizes, on one thread. The *accuracy cells* listed in the
gate get their own settings (enough steps, the PINN family's L-BFGS phase) and run on several
seeds; every other cell is a *status cell*: one seed, a few steps.

Verdicts:
- every cell: status `ok` and a finite `rel_l2`, else FAILED;
- an accuracy row (cell, metric) that is *gated*: the median over the gate's seeds must be at
  most `center × tolerance`, else REGRESSED (a non-finite value always regresses); below
  `center / tolerance` it is `better` (still a pass: run `--update` to tighten the gate).

The rules, applied by `bench-check --update` (which runs every accuracy cell on `update_seeds`
under every kernel variant of the gate that this CPU can run, and writes the baselines):
- `center`: the median over all those runs; `log10_sd`: the standard deviation of their
  log10 values; `n`: how many.
- `tolerance` = max(MIN_TOLERANCE, 10 ** (Z · SD_OF_MEDIAN · log10_sd),
  MARGIN × the worst ratio to `center` of any variant's gate statistic): the median of k seeds
  spreads about SD_OF_MEDIAN × a single seed's spread; Z standard deviations of it, and never
  tighter than what was seen, with a margin.
- a row is gated on accuracy only where `center × tolerance ≤ TRIVIAL_FRACTION × trivial`, the
  trivial predictor's error on the same test data (`<metric>_trivial`: the mean of each field
  for pointwise methods, persistence of the last given frame for operator and family
  learners): a method that falls half-way back to the trivial predictor is caught. Other rows
  are shown (verdict `status`) and gated on status and finiteness only.

Bad input (a malformed baselines file, a row for a cell the gate does not run, results from
another budget or other gate settings) is refused with the file and row named.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

REPO = Path(__file__).resolve().parents[1]
GATE = REPO / "conf" / "gate.yaml"
BASELINES = REPO / "results" / "baselines" / "smoke.csv"
GATED = ("rel_l2", "rel_l2_one_step")  # per accuracy cell, where the scorer reports them
COLUMNS = ["method", "problem", "metric", "center", "log10_sd", "n", "tolerance", "trivial"]
RUN_COLUMNS = ["method", "problem", "metric", "variant", "seed", "value", "trivial"]
MIN_TOLERANCE = 1.25  # never tighter than 25 %
Z = 4.0  # standard deviations of the gate statistic
SD_OF_MEDIAN = 0.67  # sd(median of 3 normal draws) / sd(one draw)
MARGIN = 1.2  # over the worst gate statistic seen in the update runs
TRIVIAL_FRACTION = 0.5  # gated only where the threshold is below half the trivial error
Cell = tuple[str, str]  # (method, problem)


class GateError(ValueError):
    """A malformed gate, baselines file or results directory; the message names it."""


# -- the gate's settings ------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A way to run the same cells with other floating-point kernels or thread counts."""

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    threads: int = 1

    def runnable(self) -> str | None:
        """Why this CPU cannot run the variant (None if it can)."""
        want = self.env.get("ATEN_CPU_CAPABILITY", "").lower()
        if want and want == _native_capability():
            return f"{want} is this CPU's native capability (the `native` variant)"
        if want in ("avx512", "avx2"):
            flags = _cpu_flags()
            need = {"avx512": "avx512f", "avx2": "avx2"}[want]
            if flags is not None and need not in flags:
                return f"this CPU has no {need}"
        return None


def _native_capability() -> str:
    """torch's kernel choice on this CPU without ATEN_CPU_CAPABILITY (e.g. avx512, avx2)."""
    import torch

    if os.environ.get("ATEN_CPU_CAPABILITY"):
        return ""  # this process runs a forced capability: the native one is unknown here
    return str(torch.backends.cpu.get_cpu_capability()).lower()


def _cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@dataclass(frozen=True)
class Gate:
    budget: str
    status_seed: int
    status_overrides: tuple[str, ...]
    seeds: tuple[int, ...]
    cells: Mapping[Cell, tuple[str, ...]]  # accuracy cell -> its overrides
    update_seeds: tuple[int, ...]
    variants: Mapping[str, Variant]
    cell_seeds: Mapping[Cell, tuple[int, ...]] = field(default_factory=dict)  # own seeds

    def seeds_of(self, cell: Cell, seeds: Sequence[int] | None = None) -> tuple[int, ...]:
        """An accuracy cell's gate seeds: its own (a cell the seed does not enter, such as
        the classical solver, runs once), else `seeds` or the gate's."""
        return self.cell_seeds.get(cell) or tuple(seeds or self.seeds)

    def overrides(self, cell: Cell) -> tuple[str, ...]:
        return self.cells[cell] if cell in self.cells else self.status_overrides

    def role(self, cell: Cell) -> str:
        return "accuracy" if cell in self.cells else "status"


def load_gate(path: Path = GATE) -> Gate:
    """The gate's settings from its YAML; GateError naming the key when malformed."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GateError(f"{path}: cannot read the gate settings ({e})") from None

    def need(node: Any, key: str, kind: type, where: str) -> Any:
        if not isinstance(node, dict) or key not in node or not isinstance(node[key], kind):
            raise GateError(f"{path}: {where}{key} must be a {kind.__name__}")
        return node[key]

    def ints(values: Any, where: str) -> tuple[int, ...]:
        if not isinstance(values, list) or not values or not all(type(v) is int for v in values):
            raise GateError(f"{path}: {where} must be a non-empty list of integers")
        return tuple(values)

    def strs(values: Any, where: str) -> tuple[str, ...]:
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise GateError(f"{path}: {where} must be a list of override strings")
        return tuple(values)

    status = need(raw, "status", dict, "")
    acc = need(raw, "accuracy", dict, "")
    cells: dict[Cell, tuple[str, ...]] = {}
    cell_seeds: dict[Cell, tuple[int, ...]] = {}
    for name, spec in (need(acc, "cells", dict, "accuracy.") or {}).items():
        try:
            cell = _cell(str(name))
        except argparse.ArgumentTypeError as e:
            raise GateError(f"{path}: accuracy.cells: {e}") from None
        where = f"accuracy.cells.{name}"
        if isinstance(spec, dict):  # {overrides: [...], seeds: [...]}
            unknown = set(spec) - {"overrides", "seeds"}
            if unknown:
                raise GateError(f"{path}: {where}: unknown key(s) {sorted(unknown)}")
            if "seeds" in spec:
                cell_seeds[cell] = ints(spec["seeds"], f"{where}.seeds")
            spec = spec.get("overrides")
        cells[cell] = strs(spec or [], where)
    variants = {}
    for name, v in need(raw, "variants", dict, "").items():
        v = v or {}
        unknown = set(v) - {"env", "threads"}
        if unknown:
            raise GateError(f"{path}: variants.{name}: unknown key(s) {sorted(unknown)}")
        env = {str(k): str(x) for k, x in (v.get("env") or {}).items()}
        threads = v.get("threads", 1)
        if type(threads) is not int or threads < 1:
            raise GateError(f"{path}: variants.{name}.threads must be a positive integer")
        variants[name] = Variant(name, env, threads)
    if "native" not in variants:
        raise GateError(f"{path}: variants must include `native` (the machine's own kernels)")
    return Gate(
        budget=need(raw, "budget", str, ""),
        status_seed=need(status, "seed", int, "status."),
        status_overrides=strs(status.get("overrides", []), "status.overrides"),
        seeds=ints(acc.get("seeds"), "accuracy.seeds"),
        cells=cells,
        update_seeds=ints(raw.get("update_seeds"), "update_seeds"),
        variants=variants,
        cell_seeds=cell_seeds,
    )


# -- baselines ----------------------------------------------------------------------------------
def read_baselines(path: Path) -> pd.DataFrame:
    """The baselines table (empty when the file does not exist); GateError naming the file and
    the row when it is malformed."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        df = pd.read_csv(path, dtype={"method": str, "problem": str, "metric": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise GateError(f"{path}: not a CSV table ({e})") from None
    missing = [c for c in COLUMNS if c not in df]
    if missing:
        raise GateError(f"{path}: missing column(s) {missing}; expected {COLUMNS}")
    for i, row in enumerate(df[COLUMNS].itertuples(index=False), start=2):  # line 1: header
        where = f"{path}, line {i} ({row.method}/{row.problem} {row.metric})"
        if row.metric not in GATED:
            raise GateError(f"{where}: cannot gate metric {row.metric!r}; use one of {GATED}")
        nums = {k: getattr(row, k) for k in ("center", "log10_sd", "n", "tolerance", "trivial")}
        bad = [k for k, v in nums.items() if not _finite(v)]
        if bad:
            raise GateError(f"{where}: {', '.join(bad)} must be finite numbers")
        if nums["center"] < 0 or nums["log10_sd"] < 0 or nums["n"] < 1:
            raise GateError(f"{where}: center and log10_sd must be >= 0 and n >= 1")
        if nums["tolerance"] < 1:
            raise GateError(f"{where}: tolerance is a factor and must be >= 1")
    dup = df[df.duplicated(["method", "problem", "metric"])]
    if not dup.empty:
        raise GateError(f"{path}: duplicate row(s) for {dup[COLUMNS[:3]].values.tolist()}")
    return df[COLUMNS].astype({"n": int})


def rows_of(df: pd.DataFrame, cells: Iterable[Cell]) -> pd.DataFrame:
    """The rows of `df` whose (method, problem) is in `cells`."""
    cells = set(cells)
    return df.loc[np.array([c in cells for c in zip(df["method"], df["problem"])], dtype=bool)]


def check_rows_exist(path: Path, baselines: pd.DataFrame, gate: Gate, grid: Iterable[Cell]) -> None:
    """GateError for a baseline row whose cell the gate no longer runs as an accuracy cell."""
    grid = set(grid)
    for i, (m, p, metric) in enumerate(baselines[COLUMNS[:3]].itertuples(index=False), start=2):
        if (m, p) not in gate.cells:
            why = "is not an accuracy cell of the gate" if (m, p) in grid else "does not exist"
            raise GateError(
                f"{path}, line {i}: {m}/{p} {metric}: the cell {why} (not registered, not "
                f"applicable or not listed in {GATE.name}); remove the row or run --update"
            )


def is_gated(row: Any) -> bool:
    """The trivial-predictor rule: gated where the threshold is well below the trivial error."""
    return row.center * row.tolerance <= TRIVIAL_FRACTION * row.trivial


def log10_sd(values: np.ndarray) -> float:
    """The standard deviation of the runs' log10 values (0 for a single run)."""
    logs = np.log10(np.maximum(values, 1e-300))
    return float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0


def tolerance(sd: float, statistics: Sequence[float], center: float) -> float:
    """The documented rule (module doc) from the runs' `log10_sd` and each variant's gate
    statistic (the median over the gate seeds)."""
    worst = max((s / center for s in statistics), default=1.0) if center > 0 else 1.0
    return max(MIN_TOLERANCE, 10 ** (Z * SD_OF_MEDIAN * sd), MARGIN * worst)


def new_baselines(runs: pd.DataFrame, gate: Gate) -> pd.DataFrame:
    """Baseline rows from the update runs (`RUN_COLUMNS`), by the module's rules."""
    rows = []
    for (m, p, metric), grp in runs.groupby(["method", "problem", "metric"], sort=True):
        values = grp["value"].to_numpy(dtype=float)
        center = float(np.median(values))
        stats = [
            float(np.median(g["value"]))
            for _, g in grp[grp["seed"].isin(gate.seeds_of((m, p)))].groupby("variant")
        ]
        sd = log10_sd(values)
        rows.append(
            {
                "method": m,
                "problem": p,
                "metric": metric,
                "center": center,
                "log10_sd": sd,
                "n": len(values),
                "tolerance": tolerance(sd, stats, center),
                "trivial": float(np.median(grp["trivial"])),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def run_rows(records: Iterable[Mapping[str, Any]], variant: str) -> list[dict[str, Any]]:
    """`RUN_COLUMNS` rows of the gated metrics of ok accuracy-run records."""
    rows = []
    for r in records:
        if r["status"] != "ok" or r.get("gate", {}).get("role") != "accuracy":
            continue
        mets = r.get("metrics", {})
        for metric in GATED:
            if _finite(mets.get(metric)) and _finite(mets.get(f"{metric}_trivial")):
                rows.append(
                    {"method": r["method"], "problem": r["problem"], "metric": metric,
                     "variant": variant, "seed": r["seed"], "value": float(mets[metric]),
                     "trivial": float(mets[f"{metric}_trivial"])}
                )  # fmt: skip
    return rows


# -- verdicts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One line of the verdict table. `cell` is method/problem."""

    cell: str
    metric: str
    verdict: str  # pass | better | status | REGRESSED | FAILED | NO BASELINE | NOT RUN
    center: float | None = None
    threshold: float | None = None
    value: float | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "better", "status")

    @property
    def ratio(self) -> float | None:
        if self.center and self.value is not None and math.isfinite(self.value):
            return self.value / self.center
        return None


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def compare(
    results: Sequence[Mapping[str, Any]],
    baselines: pd.DataFrame,
    gate: Gate,
    grid: Iterable[Cell] | None = None,
) -> list[Check]:
    """The verdicts of `results` (metrics.json records) against the baselines (module doc).
    `grid`: the cells that should have run (default: the baselines' cells); a missing one is
    NOT RUN."""
    checks: list[Check] = []
    by_cell: dict[Cell, list[Mapping[str, Any]]] = {}
    for r in results:
        if r["status"] != "not_applicable":
            by_cell.setdefault((r["method"], r["problem"]), []).append(r)
    rows = {cell: grp for cell, grp in baselines.groupby(["method", "problem"])}
    for cell in sorted(by_cell):
        name = "/".join(cell)
        recs = sorted(by_cell[cell], key=lambda r: r["seed"])
        bad = [r for r in recs if r["status"] != "ok" or not _finite(r["metrics"].get("rel_l2"))]
        for r in bad:
            msg = (r.get("message") or "").strip().split("\n")[0][:200]
            why = f"{r['status']} — {msg}" if r["status"] != "ok" else "rel_l2 is not finite"
            checks.append(Check(f"{name}/{r['seed']}", "status", "FAILED", note=why))
        if gate.role(cell) == "status":
            if not bad:
                checks.append(Check(name, "status", "status", value=recs[0]["metrics"]["rel_l2"]))
            continue
        if cell not in rows:
            checks.append(Check(name, "-", "NO BASELINE", note="run bench-check --update"))
            continue
        seeds = sorted(r["seed"] for r in recs)
        for b in rows[cell].itertuples(index=False):
            vals = [r["metrics"].get(b.metric) for r in recs]
            vals = [v if _finite(v) else math.inf for v in vals if v is not None]
            if not vals:
                checks.append(Check(name, b.metric, "NO BASELINE", note=f"no {b.metric}"))
                continue
            stat = float(np.median(vals))
            threshold = b.center * b.tolerance
            common = {"center": b.center, "threshold": threshold, "value": stat}
            note = f"median of seeds {seeds}"
            if not is_gated(b):
                note = f"not gated: threshold {threshold:.2e} > {TRIVIAL_FRACTION} × trivial"
                checks.append(Check(name, b.metric, "status", **common, note=note))
            elif not math.isfinite(stat) or stat > threshold:
                note = f"{stat:.3e} > {b.center:.3e} × {b.tolerance:.3g} ({note})"
                checks.append(Check(name, b.metric, "REGRESSED", **common, note=note))
            else:
                better = stat < b.center / b.tolerance
                checks.append(Check(name, b.metric, "better" if better else "pass", **common))
    expected = set(rows) if grid is None else set(grid)
    for cell in sorted(expected - set(by_cell)):
        checks.append(Check("/".join(cell), "-", "NOT RUN", note="no result"))
    return checks


def gated_counts(baselines: pd.DataFrame, grid: Iterable[Cell]) -> dict[str, tuple[int, int]]:
    """Per method: (accuracy-gated rows, cells in the grid)."""
    counts: dict[str, list[int]] = {}
    for m, _ in grid:
        counts.setdefault(m, [0, 0])[1] += 1
    for b in baselines.itertuples(index=False):
        if is_gated(b) and b.method in counts:
            counts[b.method][0] += 1
    return {m: (a, c) for m, (a, c) in sorted(counts.items())}


# -- running the grid ---------------------------------------------------------------------------
def _section(overrides: Sequence[str], prefix: str) -> dict[str, Any]:
    """`method.k=v` overrides as {k: v}, values parsed as YAML (as Hydra does)."""
    out = {}
    for o in overrides:
        key, _, value = o.partition("=")
        if key.startswith(prefix):
            out[key.removeprefix(prefix)] = yaml.safe_load(value)
    return out


def smoke_grid(gate: Gate, only: Sequence[Cell] = ()) -> tuple[list[Cell], list[str]]:
    """Every applicable registered cell, and errors about the cells of `only`.
    An accuracy cell is judged with its own `method.*`/`problem.*` overrides (e.g. hard_moe
    with `method.experts=[1]` on an ODE)."""
    from bench.registry import build_method, build_problem, methods, problems

    ms = {m: build_method(m) for m in sorted(methods())}
    ps = {p: build_problem(p) for p in sorted(problems())}

    def why(m: str, p: str) -> str | None:
        if (m, p) not in gate.cells:
            return ms[m].applicable(ps[p])
        ov = gate.cells[(m, p)]
        method = build_method(m, **{**ms[m].smoke, **_section(ov, "method.")})
        return method.applicable(build_problem(p, **{**ps[p].smoke, **_section(ov, "problem.")}))

    cells = [(m, p) for m in ms for p in ps if why(m, p) is None]
    errors = []
    for m, p in only:
        if m not in ms or p not in ps:
            errors.append(f"--only {m}/{p}: no such method or problem")
        elif (m, p) not in cells:
            errors.append(f"--only {m}/{p}: not applicable ({why(m, p)})")
    return cells, errors


@dataclass(frozen=True)
class Task:
    method: str
    problem: str
    seed: int
    out_dir: Path
    overrides: tuple[str, ...]
    role: str
    track: bool = False


def tasks_for(
    gate: Gate,
    cells: Sequence[Cell],
    out: Path,
    variant: Variant,
    seeds: Sequence[int] | None = None,
    track: bool = False,
) -> list[Task]:
    """The runs of `cells`: each accuracy cell on `seeds` (default: the gate's), each status
    cell on the gate's status seed."""
    from bench.registry import methods, problems

    tasks = []
    for m, p in cells:
        role = gate.role((m, p))
        base = [f"budget={gate.budget}", f"threads={variant.threads}", "device=cpu"]
        base += [f"method.{k}={v}" for k, v in methods()[m].smoke.items()]
        base += [f"problem.{k}={v}" for k, v in problems()[p].smoke.items()]
        base += ["eval.figures=false", "eval.predictions=false", "eval.residual_points=0"]
        base += [f"tracking.enabled={str(track).lower()}", *gate.overrides((m, p))]
        run_seeds = gate.seeds_of((m, p), seeds) if role == "accuracy" else [gate.status_seed]
        for s in run_seeds:
            ov = (*base, f"seed={s}")
            tasks.append(Task(m, p, s, out / m / p / str(s), ov, role, track))
    return tasks


def _run_one(task: Task) -> dict[str, Any]:
    """One cell; an exception becomes a `failed` record (the gate reports, never crashes)."""
    from bench.run import run_cell

    shutil.rmtree(task.out_dir, ignore_errors=True)  # never compare a stale metrics.json
    gate_info: dict[str, Any] = {"role": task.role, "overrides": list(task.overrides)}
    t0 = time.perf_counter()
    try:
        rec = run_cell(task.method, task.problem, overrides=task.overrides, output_dir=task.out_dir)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        rec = {"method": task.method, "problem": task.problem, "seed": task.seed,
               "status": "failed", "message": msg, "metrics": {}}  # fmt: skip
    rec["gate"] = gate_info | {"seconds": time.perf_counter() - t0}  # the whole run, wall
    task.out_dir.mkdir(parents=True, exist_ok=True)
    (task.out_dir / "metrics.json").write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return rec


def _worker_init(env: Mapping[str, str], setup: Callable[[], None] | None) -> None:
    """Set the variant's environment before torch loads in this worker, then `setup` (e.g. a
    planted bug of benchmarks/gate_sensitivity.py)."""
    os.environ.update(env)
    if setup is not None:
        setup()


def run_grid(
    tasks: Sequence[Task],
    console: Console,
    jobs: int = 1,
    env: Mapping[str, str] | None = None,
    setup: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the tasks in `jobs` fresh worker processes (spawned, so that `env` takes effect
    before torch loads; workers are reused, each run reseeds and sets its threads), the
    costliest cells first so that none is left running alone at the end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from bench.registry import build_problem

    def show(rec: dict[str, Any]) -> None:
        why = f" ({rec.get('message', '').splitlines()[0]})" if rec.get("message") else ""
        cell = f"{rec['method']}/{rec['problem']}/{rec['seed']}"
        console.print(escape(f"bench-check: {cell}: {rec['status']}{why}"))

    dims = {t.problem: len(build_problem(t.problem).axes) for t in tasks}
    cost = [(t.role == "accuracy", dims[t.problem]) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: cost[i], reverse=True)
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    done: dict[int, dict[str, Any]] = {}
    with ProcessPoolExecutor(
        max(1, jobs), mp_context=ctx, initializer=_worker_init, initargs=(dict(env or {}), setup)
    ) as pool:
        futures = {pool.submit(_run_one, tasks[i]): i for i in order}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            show(done[futures[fut]])
    return [done[i] for i in range(len(tasks))]


def read_results(root: Path, gate: Gate) -> list[dict[str, Any]]:
    """Every `<root>/<method>/<problem>/<seed>/metrics.json` record; GateError for a record
    from another budget or other gate settings than the current gate's."""
    records = []
    for path in sorted(root.glob("*/*/*/metrics.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise GateError(f"{path}: unreadable ({e})") from None
        if r.get("status") == "not_applicable":
            continue
        if r.get("budget") != gate.budget:
            raise GateError(
                f"{path}: a result of budget {r.get('budget')!r}; the gate compares budget "
                f"{gate.budget!r} runs made by bench-check"
            )
        role = gate.role((r["method"], r["problem"]))
        ran = r.get("gate", {})
        want = [o for o in gate.overrides((r["method"], r["problem"]))]
        if ran.get("role") != role or [o for o in ran.get("overrides", []) if o in want] != want:
            raise GateError(
                f"{path}: run with other gate settings than {GATE.name} has for "
                f"{r['method']}/{r['problem']} ({role}); rerun bench-check"
            )
        records.append(r)
    return records


# -- CLI ----------------------------------------------------------------------------------------
def _cell(text: str) -> Cell:
    m, sep, p = text.partition("/")
    if not sep or not m or not p or "/" in p:
        raise argparse.ArgumentTypeError(f"expected method/problem, got {text!r}")
    return m, p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-check", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--seeds", nargs="+", default=None, help="accuracy seeds (default: the gate's); '3 4 5'")
    add("--only", action="append", type=_cell, default=[], metavar="METHOD/PROBLEM")
    add("--variant", default="native", help="kernel variant of the gate to run under")
    add("--out", type=Path, default=REPO / "results" / "check", help="where cells write")
    add("--gate", type=Path, default=GATE, help="default: conf/gate.yaml")
    add("--baselines", type=Path, default=BASELINES, help="default: results/baselines/smoke.csv")
    add("--track", action="store_true", help="log the cells to MLflow (off by default)")
    add("--jobs", type=int, default=os.cpu_count() or 1, help="cells at a time (default: cores)")
    add("--no-run", action="store_true", help="compare the metrics.json files already in --out")
    add("--results", type=Path, help="compare the metrics.json files in DIR (implies --no-run)")
    add("--update", action="store_true", help="measure every variant and rewrite the baselines")
    add("--summary", type=Path, help="also write the verdict table as markdown to this file")
    args = p.parse_args(argv)
    if args.seeds is not None:
        try:
            args.seeds = sorted({int(s) for arg in args.seeds for s in arg.split(",") if s})
        except ValueError:
            p.error(f"--seeds takes integers, got {args.seeds}")
    return args


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3e}"


def _rows(checks: Sequence[Check]) -> list[list[str]]:
    out = []
    for c in checks:
        ratio = "—" if c.ratio is None else f"{c.ratio:.2f}"
        out.append([c.cell, c.metric, _fmt(c.center), _fmt(c.threshold), _fmt(c.value), ratio,
                     c.verdict])  # fmt: skip
    return out


HEADER = ["cell", "metric", "center", "threshold", "value", "ratio", "verdict"]


def verdict_table(checks: Sequence[Check], title: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAVY)
    for h in HEADER:
        table.add_column(h, justify="right" if h in HEADER[2:6] else "left")
    for c, row in zip(checks, _rows(checks)):
        style = "bold red" if not c.ok else "green" if c.verdict != "status" else "dim"
        table.add_row(*map(Text, row[:-1]), Text(row[-1], style=style))
    return table


def markdown(checks: Sequence[Check], counts: Mapping[str, tuple[int, int]], verdict: str) -> str:
    lines = [f"### bench-check: {verdict}", ""]
    lines += ["| method | accuracy-gated rows | cells |", "| --- | ---: | ---: |"]
    lines += [f"| {m} | {a} | {c} |" for m, (a, c) in counts.items()]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    shown = [c for c in checks if c.verdict != "status" or c.metric != "status"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(shown)]
    n_status = sum(c.metric == "status" and c.verdict == "status" for c in checks)
    lines += ["", f"{n_status} status cell(s) ok (status and a finite rel_l2)."]
    return "\n".join(lines) + "\n"


def update(
    gate: Gate, cells: Sequence[Cell], args: argparse.Namespace, say: Callable[[str], None],
    console: Console,
) -> tuple[pd.DataFrame, list[dict[str, Any]]] | None:  # fmt: skip
    """Run the accuracy cells on the update seeds under every runnable variant (and the status
    cells once); None if any run is not ok. Returns the new rows and the native records."""
    acc = [c for c in cells if c in gate.cells]
    runs: list[dict[str, Any]] = []
    native: list[dict[str, Any]] = []
    for v in gate.variants.values():
        why = v.runnable()
        if why:
            say(f"variant {v.name}: skipped ({why})")
            continue
        say(f"variant {v.name}: {len(acc)} accuracy cell(s) × seeds {list(gate.update_seeds)}")
        todo = tasks_for(gate, acc, args.out / "update" / v.name, v, gate.update_seeds)
        if v.name == "native":
            todo += tasks_for(gate, [c for c in cells if c not in gate.cells], args.out, v)
        jobs = max(1, args.jobs // v.threads)
        records = run_grid(todo, console, jobs=jobs, env=v.env)
        bad = [r for r in records if r["status"] != "ok"]
        for r in bad:
            cell = f"{r['method']}/{r['problem']}/{r['seed']}"
            say(f"not updating: {cell} ({v.name}) is {r['status']}")
        if bad:
            return None
        runs += run_rows(records, v.name)
        if v.name == "native":
            native = [
                r
                for r in records
                if r["gate"]["role"] == "status"
                or r["seed"] in gate.seeds_of((r["method"], r["problem"]))
            ]
    return pd.DataFrame(runs, columns=RUN_COLUMNS), native


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wide = "COLUMNS" in os.environ or os.isatty(1)  # CI logs: 120 columns, not rich's 80
    console = Console(highlight=False, width=None if wide else 120)

    def say(msg: str) -> None:
        console.print(escape(f"bench-check: {msg}"))

    only = set(args.only)
    grid: list[Cell] | None = None
    try:
        gate = load_gate(args.gate)
        if args.variant not in gate.variants:
            raise GateError(f"--variant {args.variant}: not one of {sorted(gate.variants)}")
        variant = gate.variants[args.variant]
        baselines = read_baselines(args.baselines)
        everything, errors = smoke_grid(gate, args.only)
        if errors:
            raise GateError("; ".join(errors))
        full = [c for c in everything if c in only] if only else everything
        missing = sorted(set(gate.cells) - set(everything))
        if missing:
            raise GateError(f"{args.gate}: accuracy cell(s) {missing} not registered or applicable")
        check_rows_exist(args.baselines, baselines, gate, everything)
        if args.results or args.no_run:
            root = args.results or args.out
            results = [
                r
                for r in read_results(root, gate)
                if not only or (r["method"], r["problem"]) in only
            ]
            if not results:
                raise GateError(f"no metrics.json files under {root}/<method>/<problem>/<seed>/")
        else:
            grid = full
            if not grid:
                raise GateError("no applicable method × problem cell is registered")
    except GateError as e:
        say(str(e))
        return 1

    if args.update:
        if args.results or args.no_run:
            say("--update runs the accuracy cells under every variant; it cannot use --no-run")
            return 1
        got = update(gate, grid, args, say, console)
        if got is None:
            return 1
        runs, results = got
        fresh = new_baselines(runs, gate)
        others = set(zip(baselines.method, baselines.problem)) - set(grid)
        keep = rows_of(baselines, others)
        new = pd.concat([keep, fresh]).sort_values(COLUMNS[:3]).reset_index(drop=True)
        new = new.astype({c: float for c in COLUMNS[3:]}).astype({"n": int})
        args.baselines.parent.mkdir(parents=True, exist_ok=True)
        new.to_csv(args.baselines, index=False, float_format="%.6g")
        runs_path = args.baselines.with_name(args.baselines.stem + "_runs.csv")
        old_runs = (
            pd.read_csv(runs_path) if runs_path.exists() else pd.DataFrame(columns=RUN_COLUMNS)
        )
        old_runs = rows_of(old_runs, set(zip(old_runs.method, old_runs.problem)) - set(grid))
        all_runs = pd.concat([old_runs, runs]).astype({"value": float, "trivial": float})
        all_runs.to_csv(runs_path, index=False, float_format="%.6g")
        say(f"wrote {len(new)} baseline row(s) to {args.baselines} and the runs to {runs_path}")
        baselines = read_baselines(args.baselines)
    elif not (args.results or args.no_run):
        tasks = tasks_for(gate, grid, args.out, variant, args.seeds, args.track)
        if args.track:  # the store it logs to: runs killed earlier become KILLED, not RUNNING
            from bench.stale import sweep_store
            from bench.tracking import resolve_uri

            for line in sweep_store(resolve_uri(None), None, "bench-check"):
                say(line)
        why = variant.runnable()
        if why:
            say(f"variant {variant.name}: cannot run here ({why})")
            return 1
        jobs = max(1, args.jobs // variant.threads)
        results = run_grid(tasks, console, jobs=jobs, env=variant.env)

    for r in results:  # a clock cap makes the metrics depend on this machine's speed
        if r.get("stop_reason") == "seconds":
            say(f"warning: {r['method']}/{r['problem']}/{r['seed']} hit budget.seconds first")
    if only:
        baselines = rows_of(baselines, only)
    checks = compare(results, baselines, gate, grid)
    counts = gated_counts(baselines, grid or {(r["method"], r["problem"]) for r in results})
    title = f"bench-check: smoke accuracy gate (variant {variant.name})"
    console.print(verdict_table([c for c in checks if c.metric != "status" or not c.ok], title))
    failed = [c for c in checks if not c.ok]
    for c in failed:
        say(f"{c.verdict} {c.cell} {c.metric}" + (f": {c.note}" if c.note else ""))
    for m, (a, c) in counts.items():
        say(f"{m}: {a} accuracy-gated row(s), {c} cell(s)")
    cells = len({tuple(c.cell.split("/")[:2]) for c in checks})
    verdict = f"FAIL, {len(failed)} failing" if failed else "PASS"
    line = (
        f"{verdict}: {len(checks)} check(s) on {cells} cell(s), {len(checks) - len(failed)} passed"
    )
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(markdown(checks, counts, line))
    say(line)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
