"""`bench-report`: the leaderboard, read back from any MLflow store.

One row per (problem, method, budget, variant): the median final `rel_l2` over seeds with its
min–max spread, the median training seconds and the number of seeds, plus counts of runs that
diverged, failed or were killed. Writes `leaderboard.md`, `leaderboard.csv` and one
error-vs-time figure per problem. Table building is pure (a long-format frame of runs in, a
table out) so it can be tested without a store.

A variant tells apart runs of one method on one problem and budget whose hyper-parameters
differ (`method.*` or `problem.*` params, e.g. `hard_constraints=true`): they are separate
entries, never pooled as seeds of one.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.stale import sweep_store
from bench.tracking import PARENT_TAG, REPO, resolve_uri

KEYS = ["problem", "method", "budget", "variant"]
VARIANT_PARAMS = ("method.", "problem.")  # params whose differences make a separate entry
TROUBLE = ["diverged", "failed", "killed"]  # statuses counted, never averaged
# Columns shown (as medians over seeds) when some run has them: operator learners' data cost,
# inference cost, speed-up over the classical solver at matched error, and the discrete PDE
# residual of the rollout (problems with grid residuals: how physical a prediction is).
EXTRA = {
    "n_params": "params",
    "data_seconds": "data [s]",
    "inference_seconds_per_sample": "inference [s/sample]",
    "speedup_at_matched_error": "speed-up at matched error",
    "pde_residual": "PDE residual",
}


# -- pure table building ------------------------------------------------------------------------
def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A long-format frame, one row per run, from MLflow's `Run.to_dictionary()` records.

    Columns: run_id, start_time, method, problem, budget, seed, status, rel_l2, train_seconds,
    steps, is_parent, preset and reduction (a paper protocol's name, `bench +experiment=`, and
    how the run departs from it), `tags.<key>` for
    every tag (for `--tag` filters) and `params.<key>` for the method and problem
    hyper-parameters. `variant` is filled in by `select_runs`.
    """
    rows = []
    for r in records:
        info, tags, mets = r["info"], r["data"].get("tags", {}), r["data"].get("metrics", {})
        row = {k: tags.get(k) for k in ("method", "problem", "seed", "status")}
        row["budget"] = tags.get("budget", "?")
        row |= {"run_id": info["run_id"], "start_time": info.get("start_time") or 0}
        row |= {"rel_l2": mets.get("rel_l2", np.nan), "train_seconds": mets.get("train_seconds")}
        row["steps"] = mets.get("steps", np.nan)
        row |= {k: mets.get(k, np.nan) for k in EXTRA}
        row["is_parent"] = tags.get(PARENT_TAG) == "true"
        row |= {f"tags.{k}": v for k, v in tags.items()}
        params = r["data"].get("params", {})
        row |= {f"params.{k}": v for k, v in params.items() if k.startswith(VARIANT_PARAMS)}
        for key in ("preset", "reduction"):  # a paper protocol's name and stated reduction
            row[key] = params.get(key) if params.get(key) not in (None, "None") else None
        row["variant"] = ""
        rows.append(row)
    base = ["run_id", "start_time", "is_parent", *KEYS, "seed", "status", "rel_l2", "train_seconds"]
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=base)
    for col in ("rel_l2", "train_seconds", "steps", "seed", *EXTRA):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    return df


def select_runs(
    df: pd.DataFrame, budget: str | None = None, tags: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Cells only (no parent runs, no foreign runs, no run still running: it has no status yet),
    filtered; the latest run of each seed wins."""
    keep = ~df["is_parent"].astype(bool) & df["method"].notna() & df["problem"].notna()
    keep &= df["status"].notna()
    if budget is not None:
        keep &= df["budget"] == budget
    for k, v in (tags or {}).items():
        col = f"tags.{k}"
        keep &= df[col].astype(str) == v if col in df else False
    out = df[keep].sort_values("start_time").copy()
    out["variant"] = variants(out)
    return out.drop_duplicates([*KEYS, "seed"], keep="last").reset_index(drop=True)


def variants(df: pd.DataFrame, keys: Sequence[str] = ("problem", "method", "budget")) -> pd.Series:
    """Per run, `key=value` of the method/problem params that differ among the runs of its
    group (`keys`: by default its problem, method and budget); "" where they all agree."""
    cols = [c for c in df.columns if c.startswith("params.")]
    out = pd.Series("", index=df.index, dtype=object)
    if not cols or df.empty:
        return out
    for _, grp in df.groupby(list(keys), dropna=False):
        vals = grp[cols].fillna("—").astype(str)
        differ = [c for c in cols if vals[c].nunique() > 1]
        for i, row in vals[differ].iterrows():
            out[i] = ", ".join(
                f"{c[len('params.') :].removeprefix('method.')}={row[c]}" for c in differ
            )
    return out


def leaderboard(df: pd.DataFrame, statuses: Sequence[str] = ("ok",)) -> pd.DataFrame:
    """Per (problem, method, budget): median/min/max rel_l2 and median train seconds over the
    runs whose status is in `statuses`, their seed count, and counts of troubled runs.
    Sorted by problem, then budget, then median rel_l2 (best first)."""
    cols = [*KEYS, "rel_l2_median", "rel_l2_min", "rel_l2_max", "train_seconds_median", "n_seeds"]
    cols += [f"n_{s}" for s in TROUBLE] + list(EXTRA)
    if df.empty:
        return pd.DataFrame(columns=cols)
    good = df[df["status"].isin(statuses)]
    agg = good.groupby(KEYS, dropna=False).agg(
        rel_l2_median=("rel_l2", "median"),
        rel_l2_min=("rel_l2", "min"),
        rel_l2_max=("rel_l2", "max"),
        train_seconds_median=("train_seconds", "median"),
        n_seeds=("seed", "nunique"),
        **{k: (k, "median") for k in EXTRA if k in good},
    )
    counts = pd.crosstab([df[k] for k in KEYS], df["status"]).reindex(columns=TROUBLE, fill_value=0)
    counts.columns = [f"n_{s}" for s in TROUBLE]
    counts = counts[counts.sum(axis=1) > 0]  # cells with only troubled runs still get a row
    table = agg.join(counts, how="outer").reset_index()
    ints = ["n_seeds", *counts.columns]
    table[ints] = table[ints].fillna(0).astype(int)
    for k in EXTRA:
        if k not in table:
            table[k] = np.nan
    return table.sort_values(["problem", "budget", "rel_l2_median"], na_position="last")[cols]


# -- a pair of methods: the papers' view and ours ------------------------------------------------
def _at_step(curve: pd.DataFrame, step: int) -> float:
    """A run's error at `step`: its last evaluation at or before it (NaN before the first)."""
    past = curve[curve.index <= step]
    return float(past["rel_l2"].iloc[-1]) if len(past) else math.nan


def equal_steps(
    runs: pd.DataFrame, hist: Mapping[str, pd.DataFrame], points: int = 8
) -> pd.DataFrame:
    """Error at equal optimiser steps (the papers' view): rows are steps up to the fewest that
    any run reached (about `points` of them, log-spaced among the evaluated steps), columns
    the methods, values the median over seeds of each run's error at that step."""
    series = {rid: hist[rid] for rid in runs["run_id"] if rid in hist and len(hist[rid])}
    if not series:
        return pd.DataFrame()
    last = min(int(c.index.max()) for c in series.values())
    evaluated = sorted({int(s) for c in series.values() for s in c.index if 0 < s <= last})
    if len(evaluated) > points:
        idx = np.unique(np.geomspace(1, len(evaluated), points).round().astype(int) - 1)
        evaluated = [evaluated[i] for i in idx]
    table = {}
    for method, grp in runs.groupby("method"):
        curves_ = [series[r] for r in grp["run_id"] if r in series]
        table[method] = [float(np.median([_at_step(c, s) for c in curves_])) for s in evaluated]
    return pd.DataFrame(table, index=pd.Index(evaluated, name="step"))


def time_to_error(
    runs: pd.DataFrame, hist: Mapping[str, pd.DataFrame], targets: Sequence[float]
) -> pd.DataFrame:
    """Training seconds to reach each error in `targets` (our `standard` view): per method,
    the median over seeds of the first evaluation at or below the target, infinite where
    fewer than half of the seeds reached it."""
    table = {}
    for method, grp in runs.groupby("method"):
        times = []
        for target in targets:
            first = []
            for rid in grp["run_id"]:
                c = hist.get(rid)
                hit = c[c["rel_l2"] <= target] if c is not None else pd.DataFrame()
                first.append(float(hit["seconds"].iloc[0]) if len(hit) else math.inf)
            times.append(float(np.median(first)) if first else math.nan)
        table[method] = times
    return pd.DataFrame(table, index=pd.Index(list(targets), name="rel_l2 target"))


def default_targets(runs: pd.DataFrame) -> list[float]:
    """Decades from below the worse final median error down to the better one's decade."""
    finals = runs.groupby("method")["rel_l2"].median().dropna()
    finals = finals[finals > 0]
    if finals.empty:
        return []
    lo, hi = math.floor(math.log10(finals.min())), math.ceil(math.log10(finals.max()))
    return [10.0**k for k in range(max(hi - 1, lo), lo - 1, -1)]


def pair_markdown(problem: str, budget: str | None, steps: pd.DataFrame, ttr: pd.DataFrame) -> str:
    """The two views of one pair as markdown."""

    def cell(v: float, seconds: bool = False) -> str:
        if not math.isfinite(v):
            return "not reached" if seconds else "—"
        return f"{v:.1f}" if seconds else f"{v:.3g}"

    scope = f"{problem}" + (f", budget {budget}" if budget else "")
    out = [
        f"# {' vs '.join(map(str, steps.columns if not steps.empty else ttr.columns))} on {scope}",
        "",
    ]
    out += [
        "## Error at equal steps (the papers' view)",
        "",
        "Median over seeds of the relative L2 error at the last evaluation at or before each step.",
        "",
    ]
    if steps.empty:
        out.append("(no evaluation curves)")
    else:
        rows = [[f"{s:,}", *(cell(v) for v in row)] for s, row in steps.iterrows()]
        out.append(to_markdown(["step", *map(str, steps.columns)], rows).rstrip("\n"))
    out += [
        "",
        "## Time to reach an error (our `standard` view)",
        "",
        "Median over seeds of the training seconds to the first evaluation at or below the "
        "error; *not reached* when fewer than half of the seeds got there.",
        "",
    ]
    rows = [[f"{t:.3g}", *(cell(v, True) for v in row)] for t, row in ttr.iterrows()]
    return "\n".join(out) + "\n" + to_markdown(["rel_l2", *map(str, ttr.columns)], rows)


# -- formatting ---------------------------------------------------------------------------------
def _sci(v: float) -> str:
    return "—" if pd.isna(v) else f"{v:.2e}"


def display_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells shared by the console and the markdown table."""
    multi_budget = table["budget"].nunique(dropna=False) > 1
    trouble = [s for s in TROUBLE if table[f"n_{s}"].sum() > 0]
    header = ["problem", "method", *(["budget"] if multi_budget else [])]
    header += ["rel_l2 median", "rel_l2 min–max over seeds", "train [s] median", "seeds"]
    header += trouble
    extra = [k for k in EXTRA if k in table and table[k].notna().any()]
    header += [EXTRA[k] for k in extra]
    rows = []
    for r in table.itertuples(index=False):
        method = (
            f"{r.method} [{r.variant}]" if isinstance(r.variant, str) and r.variant else r.method
        )
        row = [str(r.problem), str(method), *([str(r.budget)] if multi_budget else [])]
        spread = "—" if pd.isna(r.rel_l2_min) else f"{_sci(r.rel_l2_min)} – {_sci(r.rel_l2_max)}"
        secs = "—" if pd.isna(r.train_seconds_median) else f"{r.train_seconds_median:.1f}"
        row += [_sci(r.rel_l2_median), spread, secs, str(r.n_seeds)]
        row += [str(getattr(r, f"n_{s}")) for s in trouble]
        row += [_extra(k, getattr(r, k)) for k in extra]
        rows.append(row)
    return header, rows


def _extra(key: str, v: float) -> str:
    if pd.isna(v):
        return "—"
    if key == "n_params":
        return f"{int(v):,}"
    return f"{v:.3g}" if key == "speedup_at_matched_error" else _sci(v)


def _numeric(header: str) -> bool:
    return (
        header.startswith(("rel", "train", "seeds"))
        or header in TROUBLE
        or header in EXTRA.values()
    )


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---:" if _numeric(h) else "---" for h in header]
    return "\n".join([line(header), line(align), *map(line, rows)]) + "\n"


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> Table:
    table = Table(title=escape(title), box=box.SIMPLE_HEAVY, title_justify="left")
    for h in header:
        table.add_column(escape(h), justify="right" if _numeric(h) else "left")
    for row in rows:
        table.add_row(*map(escape, row))
    return table


# -- the store ----------------------------------------------------------------------------------
def _all_pages(search: Any, *args: Any) -> list[Any]:
    items, token = [], None
    while True:
        page = search(*args, max_results=1000, page_token=token)
        items += list(page)
        token = page.token
        if not token:
            return items


class StoreError(Exception):
    """The store or experiment cannot be read; the message says why, for the user."""


def load_runs(uri: str, experiments: Sequence[str] | None) -> tuple[Any, pd.DataFrame]:
    """The client and a `runs_frame` of every active run in `experiments` (None: all)."""
    db = uri[len("sqlite:///") :].split("?")[0] if uri.startswith("sqlite:///") else None
    if db and not Path(db).exists():
        raise StoreError(f"no MLflow store at {db} (run `bench` first, or pass --tracking-uri)")
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        known = {e.name: e.experiment_id for e in _all_pages(client.search_experiments)}
        missing = [e for e in experiments or [] if e not in known]
        if missing:
            avail = ", ".join(sorted(known)) or "(none)"
            raise StoreError(f"no experiment {', '.join(missing)} in {uri}; available: {avail}")
        ids = [known[e] for e in experiments] if experiments else list(known.values())
        runs = _all_pages(client.search_runs, ids) if ids else []
    except StoreError:
        raise
    except Exception as e:  # any backend's error (server down, no DB driver, not a store)
        why = (str(e).strip().splitlines() or [""])[0][:300]
        raise StoreError(f"cannot read the MLflow store {uri}: {type(e).__name__}: {why}") from None
    return client, runs_frame(r.to_dictionary() for r in runs)


def curves(client: Any, run_ids: Iterable[str]) -> dict[str, pd.DataFrame]:
    """Per run: its `eval/seconds` and `eval/rel_l2` histories joined on step."""
    out = {}
    for rid in run_ids:
        hist = {
            key: pd.Series({m.step: m.value for m in client.get_metric_history(rid, f"eval/{key}")})
            for key in ("seconds", "rel_l2")
        }
        frame = pd.DataFrame(hist).dropna()
        if not frame.empty:
            out[rid] = frame.sort_index()
    return out


# -- figures ------------------------------------------------------------------------------------
def plot_problem(
    problem: str, runs: pd.DataFrame, hist: Mapping[str, pd.DataFrame], path: Path
) -> bool:
    """Error vs training time for every method on one problem: a thin line per seed and a bold
    line through the per-step medians over seeds. Returns False when nothing could be drawn."""
    from matplotlib.figure import Figure  # no pyplot: no global backend, Agg on savefig

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    multi_budget = runs["budget"].nunique(dropna=False) > 1
    drawn = False
    keys = ["method", "budget", "variant"]
    for i, ((method, budget, variant), grp) in enumerate(runs.groupby(keys, dropna=False)):
        series = [hist[r] for r in grp["run_id"] if r in hist]
        series = [s[s["rel_l2"] > 0] for s in series]  # log axis
        if not any(len(s) for s in series):
            continue
        color = f"C{i % 10}"
        for s in series:
            ax.plot(s["seconds"], s["rel_l2"], color=color, alpha=0.3, lw=0.8)
        both = pd.concat(series, keys=range(len(series)))  # index (seed, step)
        by_step = both.groupby(level=1)
        med = by_step.median()[by_step.size() == len(series)]  # steps that every seed reached
        label = f"{method} [{variant}]" if isinstance(variant, str) and variant else str(method)
        label = f"{label} ({budget})" if multi_budget else label
        label = f"{label}, median of {len(series)} seeds" if len(series) > 1 else label
        ax.plot(med["seconds"], med["rel_l2"], color=color, lw=2, label=label)
        drawn = True
    if not drawn:
        return False
    ax.set(yscale="log", xlabel="training time [s]", ylabel="relative L2 error", title=problem)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return True


# -- CLI ----------------------------------------------------------------------------------------
def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench-report", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or results/mlflow.db)")
    add("--experiment", action="append", help="experiment name (repeatable; default physbench)")
    add("--all-experiments", action="store_true", help="read every experiment in the store")
    add("--budget", help="only runs with this budget (smoke, standard, paper, ...)")
    add("--tag", action="append", type=_tag, default=[], metavar="KEY=VALUE", help="repeatable")
    add("--status", default="ok", help="comma-separated statuses to aggregate (default: ok)")
    add("--out", type=Path, default=REPO / "results", help="output folder (default: results/)")
    add("--no-figures", action="store_true", help="skip the error-vs-time figures")
    add("--preset", action="append", help="only runs of this paper protocol (repeatable)")
    add("--pair", help="two methods, A,B: error at equal steps and time to an error (--problem)")
    add("--problem", help="the problem of --pair")
    add("--targets", help="--pair's errors for the time view, comma-separated (default: decades)")
    args = p.parse_args(argv)
    if args.pair and (len(args.pair.split(",")) != 2 or not args.problem):
        p.error("--pair takes two methods, A,B, and needs --problem")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wide = "COLUMNS" in os.environ or os.isatty(1)  # CI logs: 120 columns, not rich's 80
    console = Console(highlight=False, width=None if wide else 120)
    uri = resolve_uri(args.tracking_uri)
    experiments = None if args.all_experiments else (args.experiment or ["physbench"])
    statuses = [s.strip() for s in args.status.split(",") if s.strip()]
    for line in sweep_store(uri, experiments, "bench-report"):  # stale runs: KILLED
        console.print(escape(f"bench-report: {line}"))
    try:
        client, df = load_runs(uri, experiments)
    except StoreError as e:
        console.print(escape(f"bench-report: {e}"))
        return 1
    runs = select_runs(df, args.budget, dict(args.tag))
    if args.preset:
        runs = runs[runs["preset"].isin(args.preset)]
    if args.pair:
        return _pair(console, client, runs, args, statuses)
    table = leaderboard(runs, statuses)
    where = f"store {uri}, experiment(s) {', '.join(experiments or ['all'])}"
    filters = [f"budget={args.budget}"] if args.budget else []
    filters += [f"{k}={v}" for k, v in args.tag] + [f"status in {{{', '.join(statuses)}}}"]
    if table.empty:
        console.print(escape(f"bench-report: no matching runs in {where} ({', '.join(filters)})"))
        return 1

    header, rows = display_rows(table)
    title = f"physbench leaderboard ({', '.join(filters)})"
    console.print(rich_table(header, rows, title))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "leaderboard.csv", index=False)
    note = (
        f"# {title}\n\nFrom {where}. Median over seeds of the final relative L2 error and "
        "of the training seconds; the spread is the min–max over seeds. When a seed was run "
        "more than once, its latest run counts.\n\n"
    )
    (out / "leaderboard.md").write_text(note + to_markdown(header, rows))
    written = [out / "leaderboard.md", out / "leaderboard.csv"]

    if not args.no_figures:
        chosen = runs[runs["status"].isin(statuses)]
        hist = curves(client, chosen["run_id"])
        for problem, grp in chosen.groupby("problem"):
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(problem))
            path = out / "figures" / f"{safe}_error_vs_time.png"
            if plot_problem(str(problem), grp, hist, path):
                written.append(path)
    console.print(escape("wrote " + ", ".join(str(p) for p in written)))
    return 0


def _pair(
    console: Console,
    client: Any,
    runs: pd.DataFrame,
    args: argparse.Namespace,
    statuses: Sequence[str],
) -> int:
    """`--pair A,B --problem P`: both views, printed and written to results/pair_P_A_B.md."""
    pair = [m.strip() for m in args.pair.split(",")]
    mine = runs[(runs["problem"] == args.problem) & runs["method"].isin(pair)]
    mine = mine[mine["status"].isin(statuses)]
    found = set(mine["method"])
    if found != set(pair):
        missing = ", ".join(sorted(set(pair) - found))
        console.print(
            escape(f"bench-report: no {'/'.join(statuses)} runs of {missing} on {args.problem}")
        )
        return 1
    if mine.groupby("method")["variant"].nunique().max() > 1:
        console.print(
            escape(
                "bench-report: --pair: a method has several variants here; pick one "
                "with --budget, --tag or --preset"
            )
        )
        return 1
    hist = curves(client, mine["run_id"])
    try:
        targets = (
            [float(t) for t in args.targets.split(",")] if args.targets else default_targets(mine)
        )
    except ValueError:
        console.print(escape(f"bench-report: --targets must be numbers, got {args.targets!r}"))
        return 2
    text = pair_markdown(
        args.problem, args.budget, equal_steps(mine, hist), time_to_error(mine, hist, targets)
    )
    console.print(escape(text))
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"pair_{args.problem}_{pair[0]}_{pair[1]}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{safe}.md").write_text(text)
    console.print(escape(f"wrote {args.out / f'{safe}.md'}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
