"""`bench-compare`: is a new set of runs significantly worse than an old one, cell by cell?

Two sets of runs are picked from an MLflow store by one selector each: `experiment=NAME`,
`commit=SHA_PREFIX` (a prefix of the `git_commit` tag) or `tag:KEY=VALUE`; the last two search
every experiment. Runs split into cells (problem, method, budget, variant) as in `bench-report`;
the latest run of each seed counts; a diverged or failed run is pooled as +inf (a seed that
broke is infinitely bad) and a killed run is left out (all are counted and shown). A cell's base
and new runs must share their budget(s): see `--budget`.

The statistic, per cell in both sets, is the ratio new/base of the median metric over seeds
(lower is better: a ratio above 1 is worse). Medians are taken of log values, so a ratio and its
inverse are equally far from 1 (for an even seed count the median is the geometric mean of the
two middle values). Its confidence interval is a percentile bootstrap: the seeds of each set are
resampled independently with replacement, the log ratio of the medians recomputed, and its
alpha/2 and 1 - alpha/2 quantiles taken (without interpolation, so the interval is conservative).
A non-finite value in an ok run counts as +inf, infinitely bad (bench's tracker never logs one,
so in a store it is an ok run without the metric); values <= 0 are clamped to a tiny number.

Verdict: WORSE when the interval's lower bound is above 1 and the ratio is at least `--ratio`
(a significant but smaller change does not count); better when the upper bound is below 1 and
the ratio at most 1/`--ratio`; else same. A new median of inf against a finite base median is
WORSE (the reverse is better). A cell with fewer than `--min-seeds` ok seeds on either side is
not judged. Exit code 1 when some cell is WORSE, 0 otherwise, 2 for bad input.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bench import report
from bench.tracking import resolve_uri

# Lower-is-better metrics that `report.runs_frame` reads from a store.
METRICS = ("rel_l2", "pde_residual", "train_seconds", "compile_seconds", "data_seconds")
METRICS += ("inference_seconds_per_sample",)
BROKEN = ("diverged", "failed")  # statuses pooled as +inf
TINY = 1e-300  # the floor for values <= 0, whose log would be -inf
SIDES = ("base", "new")
TOO_FEW = "too few seeds"
JUDGED = ("WORSE", "better", "same", TOO_FEW)  # verdicts of cells in both sets
ONLY = ("only in base", "only in new")
STYLE = {"WORSE": "bold red", "better": "green", TOO_FEW: "yellow"}
COLUMNS = [*report.KEYS, "n_base", "n_new", "other_base", "other_new", "median_base"]
COLUMNS += ["median_new", "ratio", "ci_low", "ci_high", "verdict"]


class InputError(Exception):
    """Bad input: the message names the problem and the fix, for the user."""


# -- pure statistics ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    n_base: int
    n_new: int
    median_base: float
    median_new: float
    ratio: float  # median_new / median_base; nan when a side is empty or both are inf
    ci_low: float  # the bootstrap interval of the ratio; nan when not judged
    ci_high: float
    verdict: str  # WORSE | better | same | too few seeds


def _logs(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), np.log(np.maximum(np.nan_to_num(v), TINY)), np.inf)


def _exp(x: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.exp(x))


def _log_ratio(new: np.ndarray | float, base: np.ndarray | float) -> np.ndarray:
    """new - base in log space; both +inf (both infinitely bad) is no change, not nan."""
    new, base = np.asarray(new, dtype=float), np.asarray(base, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(np.isposinf(new) & np.isposinf(base), 0.0, new - base)


def compare_values(
    base: Sequence[float] | np.ndarray,
    new: Sequence[float] | np.ndarray,
    *,
    alpha: float = 0.05,
    ratio: float = 1.10,
    min_seeds: int = 3,
    n_boot: int = 10_000,
    seed: int = 0,
) -> Comparison:
    """Compare one cell's per-seed metric values (lower is better); see the module docstring."""
    lb, ln = _logs(base), _logs(new)
    med_b = float(np.median(lb)) if lb.size else math.nan
    med_n = float(np.median(ln)) if ln.size else math.nan
    point = float(_log_ratio(med_n, med_b))
    common = (lb.size, ln.size, _exp(med_b), _exp(med_n), _exp(point))
    if min(lb.size, ln.size) < min_seeds:
        return Comparison(*common, math.nan, math.nan, TOO_FEW)
    rng = np.random.default_rng(seed)
    boot_b = np.median(lb[rng.integers(0, lb.size, (n_boot, lb.size))], axis=1)
    boot_n = np.median(ln[rng.integers(0, ln.size, (n_boot, ln.size))], axis=1)
    diffs = _log_ratio(boot_n, boot_b)
    lo = float(np.quantile(diffs, alpha / 2, method="lower"))
    hi = float(np.quantile(diffs, 1 - alpha / 2, method="higher"))
    if math.isinf(med_n) or math.isinf(med_b):  # inf - x = inf, x - inf = -inf, inf - inf = 0
        verdict = {math.inf: "WORSE", -math.inf: "better"}.get(point, "same")
    elif lo > 0 and _exp(point) >= ratio:
        verdict = "WORSE"
    elif hi < 0 and _exp(point) <= 1 / ratio:
        verdict = "better"
    else:
        verdict = "same"
    return Comparison(*common, _exp(lo), _exp(hi), verdict)


def _check_budgets(both: pd.DataFrame) -> None:
    for (problem, method), grp in both.groupby(["problem", "method"]):
        budgets = {s: sorted(set(grp.loc[grp["side"] == s, "budget"])) for s in SIDES}
        if budgets["base"] and budgets["new"] and budgets["base"] != budgets["new"]:
            raise InputError(
                f"{problem}/{method}: base runs are at budget {','.join(budgets['base'])}, new "
                f"runs at {','.join(budgets['new'])}; pass --budget NAME to compare one budget"
            )


def _others(runs: pd.DataFrame) -> str:
    """'1 diverged, 2 failed': the runs that are not ok, by status."""
    counts = runs.loc[runs["status"] != "ok", "status"].fillna("no status").value_counts()
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _values(runs: pd.DataFrame, metric: str) -> np.ndarray:
    """The ok runs' values, and +inf for every diverged or failed run (a seed that broke is
    infinitely bad, never left out); killed runs say nothing about the method and are left out."""
    ok = runs.loc[runs["status"] == "ok", metric].to_numpy(float)
    broken = int(runs["status"].isin(BROKEN).sum())
    return np.concatenate([ok, np.full(broken, math.inf)])


def compare_frames(
    base: pd.DataFrame, new: pd.DataFrame, metric: str = "rel_l2", **stats: float
) -> pd.DataFrame:
    """One row per cell of two `report.select_runs` frames, with `COLUMNS`; `stats` go to
    `compare_values`. Variants are named over both sets, so equal params make one cell."""
    both = pd.concat([base.assign(side="base"), new.assign(side="new")], ignore_index=True)
    both["variant"] = report.variants(both)
    _check_budgets(both)
    ok = both[both["status"] == "ok"]
    if len(ok) and (metric not in ok or ok[metric].isna().all()):
        raise InputError(f"no ok run has the metric {metric!r}; pick another with --metric")
    rows = []
    for key, grp in both.groupby(report.KEYS, dropna=False, sort=True):
        sides = {s: grp[grp["side"] == s] for s in SIDES}
        vals = {s: _values(g, metric) for s, g in sides.items()}
        row = dict(zip(report.KEYS, key)) | {f"other_{s}": _others(sides[s]) for s in SIDES}
        row |= asdict(compare_values(vals["base"], vals["new"], **stats))
        if sides["base"].empty or sides["new"].empty:  # shown, never judged
            row["verdict"] = "only in new" if sides["base"].empty else "only in base"
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


# -- selecting runs -----------------------------------------------------------------------------
class Selector(NamedTuple):
    kind: str  # experiment | commit | tag
    key: str
    value: str
    text: str


def parse_selector(text: str) -> Selector:
    if text.startswith("tag:"):
        key, sep, value = text[len("tag:") :].partition("=")
        if key and sep and value:
            return Selector("tag", key, value, text)
    else:
        kind, sep, value = text.partition("=")
        if kind in ("experiment", "commit") and value:
            return Selector(kind, kind, value, text)
    raise InputError(
        f"bad selector {text!r}: use experiment=NAME, commit=SHA_PREFIX or tag:KEY=VALUE"
    )


def select(df: pd.DataFrame, sel: Selector, budget: str | None) -> pd.DataFrame:
    """The cells' runs of `df` (already restricted to the experiment, if any) that `sel` picks."""
    if sel.kind == "commit":
        commits = df.get("tags.git_commit", pd.Series(index=df.index, dtype=object))
        df = df[commits.astype(str).str.startswith(sel.value)]
    return report.select_runs(df, budget, {sel.key: sel.value} if sel.kind == "tag" else None)


# -- output -------------------------------------------------------------------------------------
def _num(v: float, fmt: str) -> str:
    return "—" if pd.isna(v) else "inf" if math.isinf(v) else format(v, fmt)


def cell_name(r: Any) -> str:
    """problem/method [variant] (budget)."""
    variant = f" [{r.variant}]" if r.variant else ""
    return f"{r.problem}/{r.method}{variant} ({r.budget})"


def display_rows(table: pd.DataFrame, alpha: float) -> tuple[list[str], list[list[str]]]:
    multi_budget = table["budget"].nunique() > 1
    others = (table["other_base"] != "").any() or (table["other_new"] != "").any()
    header = ["problem", "method", *(["budget"] if multi_budget else [])]
    header += ["n base", "n new", *(["not ok base", "not ok new"] if others else [])]
    header += ["median base", "median new", "new/base", f"{1 - alpha:.0%} CI", "verdict"]
    rows = []
    for r in table.itertuples(index=False):
        row = [str(r.problem), f"{r.method} [{r.variant}]" if r.variant else str(r.method)]
        row += [str(r.budget)] if multi_budget else []
        row += [str(r.n_base), str(r.n_new), *([r.other_base, r.other_new] if others else [])]
        row += [_num(r.median_base, ".2e"), _num(r.median_new, ".2e"), _num(r.ratio, ".2f")]
        ci = "—" if pd.isna(r.ci_low) else f"{_num(r.ci_low, '.2f')}–{_num(r.ci_high, '.2f')}"
        rows.append([*row, ci, r.verdict])
    return header, rows


def rich_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> Table:
    table = Table(title=escape(title), box=box.SIMPLE_HEAVY, title_justify="left")
    for h in header:
        numeric = h.startswith(("n ", "median", "new/")) or h.endswith("CI")
        key = h in ("problem", "method", "budget", "verdict")  # never wrapped nor cut
        table.add_column(escape(h), justify="right" if numeric else "left", no_wrap=key)
    for row in rows:
        table.add_row(*map(Text, row[:-1]), Text(row[-1], style=STYLE.get(row[-1], "")))
    return table


def summary(table: pd.DataFrame, ratio: float) -> str:
    counts = table["verdict"].value_counts()
    judged = ", ".join(f"{counts[v]} {v}" for v in JUDGED if v in counts)
    n_both = int(sum(counts.get(v, 0) for v in JUDGED))
    detail = f"of {n_both} cell(s) in both sets: {judged}"
    detail += "".join(f"; {counts[v]} {v}" for v in ONLY if v in counts)
    worse = int(counts.get("WORSE", 0))
    if worse:
        return f"FAIL, {worse} cell(s) significantly worse (ratio >= {ratio:g}); {detail}"
    return f"PASS, no cell significantly worse; {detail}"


# -- CLI ----------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench-compare",
        description=__doc__.splitlines()[0],
        epilog="A cell is WORSE when the bootstrap CI of its median ratio new/base lies above 1 "
        "and the ratio is >= --ratio. Exit code: 1 if any cell is WORSE, 0 if none, 2 for bad "
        "input.",
    )
    add = p.add_argument
    sel = "experiment=NAME, commit=SHA_PREFIX or tag:KEY=VALUE"
    # fmt: off
    add("--base", required=True, metavar="SELECTOR", help=f"the reference runs: {sel}")
    add("--new", required=True, metavar="SELECTOR", help=f"the runs under test: {sel}")
    add("--uri", "--tracking-uri", dest="uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI or results/mlflow.db)")
    add("--budget", metavar="NAME", help="only runs at this budget (default: all; base and new "
        "must then have the same budgets)")
    add("--metric", default="rel_l2", choices=METRICS, metavar="NAME",
        help=f"lower is better: {', '.join(METRICS)} (default: rel_l2)")
    add("--min-seeds", type=int, default=3, metavar="N",
        help="cells with fewer ok seeds on a side are not judged (default: 3)")
    add("--alpha", type=float, default=0.05, metavar="A",
        help="the CI's confidence is 1 - A (default: 0.05)")
    add("--ratio", type=float, default=1.10, metavar="R",
        help="the smallest worsening of the median that fails (default: 1.10)")
    add("--bootstrap", type=int, default=10_000, metavar="N", help="resamples (default: 10000)")
    add("--seed", type=int, default=0, metavar="N", help="the bootstrap's RNG seed (default: 0)")
    add("--markdown", type=Path, metavar="PATH", help="also write the table as markdown to PATH")
    # fmt: on
    return p.parse_args(argv)


def _validate(args: argparse.Namespace) -> tuple[Selector, Selector]:
    if args.min_seeds < 2:
        raise InputError(f"--min-seeds {args.min_seeds}: a spread needs --min-seeds 2 or more")
    if not 0 < args.alpha < 1:
        raise InputError(f"--alpha {args.alpha:g} is outside (0, 1); e.g. --alpha 0.05")
    if args.ratio < 1:
        raise InputError(f"--ratio {args.ratio:g} is below 1; e.g. --ratio 1.10 for 10% worse")
    if args.bootstrap < 100:
        raise InputError(f"--bootstrap {args.bootstrap}: use at least 100 resamples")
    return parse_selector(args.base), parse_selector(args.new)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wide = "COLUMNS" in os.environ or os.isatty(1)  # CI logs: 120 columns, not rich's 80
    console = Console(highlight=False, width=None if wide else 120)
    uri = resolve_uri(args.uri)

    def say(msg: str) -> None:
        console.print(escape(f"bench-compare: {msg}"), soft_wrap=True)

    stats = dict(alpha=args.alpha, ratio=args.ratio, min_seeds=args.min_seeds)
    stats |= dict(n_boot=args.bootstrap, seed=args.seed)
    try:
        selectors = _validate(args)
        loaded: dict[str | None, pd.DataFrame] = {}
        sets = []
        for flag, sel in zip(("--base", "--new"), selectors):
            exp = sel.value if sel.kind == "experiment" else None
            if exp not in loaded:
                loaded[exp] = report.load_runs(uri, [exp] if exp else None)[1]
            sets.append(select(loaded[exp], sel, args.budget))
            if sets[-1].empty:
                at = f" at budget {args.budget}" if args.budget else ""
                fix = {"experiment": "pick an experiment with bench runs in it",
                       "commit": "check the SHA prefix (the git_commit tag)",
                       "tag": "check the tag's key and value"}[sel.kind]  # fmt: skip
                fix += " or drop --budget" if args.budget else ""
                raise InputError(f"{flag} {sel.text} matches no runs{at} in {uri}; {fix}")
        table = compare_frames(*sets, args.metric, **stats)
        if not table["verdict"].isin(JUDGED).any():
            n = table["verdict"].value_counts()
            raise InputError(
                f"no cell in common: {args.base} has {n.get(ONLY[0], 0)} cell(s), {args.new} "
                f"{n.get(ONLY[1], 0)}, none of them shared; pick sets of the same cells"
            )
    except (InputError, report.StoreError) as e:
        say(f"error: {e}")
        return 2

    header, rows = display_rows(table, args.alpha)
    title = f"bench-compare: {args.metric}, new ({args.new}) vs base ({args.base})"
    shown = rich_table(header, rows, title)
    if not wide:  # a log: as wide as the table needs, never a cut cell name
        need = console.measure(shown, options=console.options.update_width(1000)).maximum
        console.width = max(console.width, need)
    console.print(shown)
    for r, row in zip(table.itertuples(index=False), rows):
        if r.verdict == "WORSE":
            say(f"WORSE {cell_name(r)}: median {row[-5]} -> {row[-4]}, ratio {row[-3]} ({row[-2]})")
    last = summary(table, args.ratio)
    if args.markdown:
        note = (
            f"From {uri}: the median {args.metric} over seeds (ok runs, the latest run of a seed) "
            f"and a bootstrap interval of the ratio; WORSE: above 1, ratio >= {args.ratio:g}.\n\n"
        )
        try:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            md = f"# {title}\n\n{note}" + report.to_markdown(header, rows) + f"\n**{last}**\n"
            args.markdown.write_text(md)
        except OSError as e:
            say(f"error: cannot write --markdown {args.markdown}: {e.strerror}; pick another path")
            return 2
    say(last)
    return 1 if (table["verdict"] == "WORSE").any() else 0


if __name__ == "__main__":
    raise SystemExit(main())
