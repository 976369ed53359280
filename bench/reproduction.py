"""`bench-reproduce`: each paper's protocol (`conf/experiment/`), its published
number (`results/papers.csv`) and ours from the runs in the store, with a verdict.

`results/papers.csv` has one row per preset: `experiment` (a preset's name), `metric`, the
`published` value and its `spread` (the paper's ± where it gives one), or a `claim` where the
paper states only a relation (`below`: the preset's error is below that of the preset named in
`compare_to`; `flat`: the error does not grow with the swept parameter), the `citation` (table or
figure), the paper's `hardware` where stated, and a `cost_note` for protocols that need more
than this machine kind (shown while a row is not run).

Verdict rules (`verdict`, `claim_verdict`):
- a published number: **reproduced** when our median over seeds is within the paper's spread of
  its value or within a factor 2 of it; else **better** (lower) or **worse** (higher);
- `below`: **reproduced** when our median is below the median of the compared preset, else
  **worse**;
- `flat`: **reproduced** when every median over the sweep is at most 10 times the smallest or
  below 1e-3 (accurate: the failures such a claim contrasts, e.g. a PINN's on fast convection,
  are of order 1), else **worse**;
- **not run** when the store has no finished (`ok`) run of the preset.

Ours is the median over seeds (the latest run of each seed) of the final `metric`, with its
min-max spread; steps and wall time are the medians of `steps` and `train_seconds`; the hardware
is the runs' `hardware` tag; the reduction is the runs' (`reduction=` on the command line, where
a run departs further from the protocol than its preset says), else the preset's. Runs of a
sweep (a preset whose parameters differ between runs) get one row per setting.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from bench.registry import CONF_DIR, yaml_options
from bench.report import StoreError, load_runs, select_runs, to_markdown, variants
from bench.stale import sweep_store
from bench.tracking import REPO, resolve_uri

PAPERS = REPO / "results" / "papers.csv"
COLUMNS = (
    "experiment", "metric", "published", "spread", "claim", "compare_to", "citation",
    "hardware", "cost_note",
)  # fmt: skip
CLAIMS = ("below", "flat")
FACTOR = 2.0  # a published number is reproduced within this factor (or the paper's spread)
FLAT = 10.0  # a `flat` claim holds when the sweep's errors lie within this factor of the best,
ACCURATE = 1e-3  # or below this error (the failures such a claim contrasts are of order 1)


class PapersError(ValueError):
    """papers.csv is malformed; the message names the file and the row."""


def load_papers(path: Path = PAPERS) -> pd.DataFrame:
    """papers.csv, checked: its columns, a citation on every row, a number or a known claim,
    and presets that exist (`conf/experiment/<name>.yaml`)."""
    if not path.exists():
        raise PapersError(f"{path}: no such file (the published numbers, one row per preset)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PapersError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    presets = set(yaml_options("experiment"))
    for i, row in df.iterrows():
        where = f"{path}, row {int(i) + 2} ({row['experiment'] or 'no experiment'})"  # type: ignore[call-overload]
        if row["experiment"] not in presets:
            raise PapersError(
                f"{where}: no preset conf/experiment/{row['experiment']}.yaml; "
                f"presets: {', '.join(sorted(presets))}"
            )
        if not row["citation"].strip():
            raise PapersError(f"{where}: no citation (no number goes in without one)")
        if row["claim"]:
            if row["claim"] not in CLAIMS:
                raise PapersError(f"{where}: claim {row['claim']!r} is not one of {CLAIMS}")
            if row["claim"] == "below" and row["compare_to"] not in presets:
                raise PapersError(f"{where}: compare_to {row['compare_to']!r} is not a preset")
        else:
            for col in ("published", "spread"):
                if row[col] and not _positive(row[col]):
                    raise PapersError(f"{where}: {col} {row[col]!r} is not a positive number")
            if not row["published"]:
                raise PapersError(f"{where}: neither a published value nor a claim")
    if df["experiment"].duplicated().any():
        dup = sorted(set(df.loc[df["experiment"].duplicated(), "experiment"]))
        raise PapersError(f"{path}: experiment(s) {dup} appear more than once")
    return df


def _positive(text: str) -> bool:
    try:
        v = float(text)
    except ValueError:
        return False
    return math.isfinite(v) and v > 0


def preset_info(name: str) -> dict[str, Any]:
    """A preset's `seeds` and `reduction` (its YAML and those it extends), and its sweep."""
    seeds, reduction, sweep = 1, None, None
    for cfg in _chain(name):
        seeds = cfg.get("seeds", seeds) or seeds
        reduction = cfg.get("reduction", reduction)
        params = OmegaConf.select(cfg, "hydra.sweeper.params")
        sweep = dict(params) if params else sweep
    return {"seeds": int(seeds), "reduction": reduction, "sweep": sweep}


def _chain(name: str) -> list[Any]:
    """The preset's YAML after those it extends (their `defaults` entries without a group)."""
    cfg = OmegaConf.load(CONF_DIR / "experiment" / f"{name}.yaml")
    parents = [d for d in cfg.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return [c for p in parents for c in _chain(p)] + [cfg]


def command(name: str, info: Mapping[str, Any]) -> str:
    """The command that runs a preset with its seeds (and its sweep)."""
    if info["sweep"] or info["seeds"] > 1:
        seeds = f" 'seed=range({info['seeds']})'" if info["seeds"] > 1 else ""
        return f"bench -m +experiment={name}{seeds}"
    return f"bench +experiment={name}"


def verdict(ours: float, published: float, spread: float | None) -> str:
    """reproduced / better / worse for a published number (module doc)."""
    if not math.isfinite(ours):
        return "worse"
    within_spread = spread is not None and abs(ours - published) <= spread
    if within_spread or published / FACTOR <= ours <= published * FACTOR:
        return "reproduced"
    return "better" if ours < published else "worse"


def claim_verdict(claim: str, ours: Sequence[float], other: float | None = None) -> str:
    """reproduced / worse for a relative claim (module doc); `ours`: the medians of the
    preset's rows (one per setting of a sweep), `other`: the compared preset's median."""
    vals = [v for v in ours if math.isfinite(v)]
    if not vals:
        return "worse"
    if claim == "below":
        if other is None or not math.isfinite(other):
            return "not run"
        return "reproduced" if max(vals) < other else "worse"
    return "reproduced" if max(vals) <= max(FLAT * min(vals), ACCURATE) else "worse"


def preset_rows(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (preset, setting): median, min, max of `metric` over the ok runs' seeds, the seed
    count, median steps and train seconds, and the hardware. `runs`: `select_runs` output with
    `preset` and `params.*` columns."""
    cols = ["preset", "setting", "median", "min", "max", "n_seeds", "steps", "seconds", "hardware",
            "reduction"]  # fmt: skip
    ok = runs[(runs["status"] == "ok") & runs["preset"].notna()].copy()
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ok["value"] = pd.to_numeric(ok.get(metric), errors="coerce")
    ok["setting"] = variants(ok, ["preset"])  # what differs between runs of one preset: a sweep
    hw = ok["tags.hardware"] if "tags.hardware" in ok else pd.Series("", index=ok.index)
    ok["hardware"] = hw.fillna("").replace("", "not recorded")
    ok["reduction"] = ok["reduction"].fillna("")
    out = ok.groupby(["preset", "setting"], dropna=False).agg(
        median=("value", "median"),
        min=("value", "min"),
        max=("value", "max"),
        n_seeds=("seed", "nunique"),
        steps=("steps", "median"),
        seconds=("train_seconds", "median"),
        hardware=("hardware", lambda s: "; ".join(sorted(set(s)))),
        reduction=("reduction", lambda s: "; ".join(sorted(set(s) - {""}))),
    )
    return out.reset_index()[cols]


def reproduction_table(runs: pd.DataFrame, papers: pd.DataFrame) -> pd.DataFrame:
    """One row per preset of papers.csv (one per setting of a sweep): the published value or
    claim, ours, the verdict, the command and the preset's stated reduction."""
    rows = []
    ours_by_metric = {m: preset_rows(runs, m) for m in set(papers["metric"])}
    for _, paper in papers.iterrows():
        name, metric = paper["experiment"], paper["metric"]
        info = preset_info(name)
        ours = ours_by_metric[metric]
        mine = ours[ours["preset"] == name]
        published = float(paper["published"]) if paper["published"] else math.nan
        spread = float(paper["spread"]) if paper["spread"] else None
        base = {
            "experiment": name,
            "metric": metric,
            "published": _published(published, spread, paper["claim"], paper["compare_to"]),
            "citation": paper["citation"],
            "paper_hardware": paper["hardware"],
            "reduction": info["reduction"] or "",
            "command": command(name, info),
        }
        if mine.empty:
            rows.append(base | {"setting": "", "ours": "", "n_seeds": 0, "steps": np.nan,
                                "seconds": np.nan, "hardware": "",
                                "verdict": "not run", "note": paper["cost_note"]})  # fmt: skip
            continue
        note = ""
        if paper["claim"]:
            other = ours[ours["preset"] == paper["compare_to"]]
            best = float(other["median"].min()) if len(other) else None
            judged = claim_verdict(paper["claim"], list(mine["median"]), best)
            if len(other):
                o = other.iloc[int(np.argmin(other["median"].to_numpy()))]
                n = int(o["n_seeds"])
                note = f"{paper['compare_to']}: {_ours(o)} ({n} seed{'s' if n != 1 else ''})"
        for _, r in mine.iterrows():
            v = judged if paper["claim"] else verdict(float(r["median"]), published, spread)
            rows.append(base | {
                "setting": r["setting"],
                "ours": _ours(r),
                "n_seeds": int(r["n_seeds"]),
                "steps": r["steps"],
                "seconds": r["seconds"],
                "hardware": r["hardware"],
                "verdict": v,
                "note": note,
                "reduction": r["reduction"] or base["reduction"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def _published(value: float, spread: float | None, claim: str, other: str) -> str:
    if claim == "below":
        return f"below {other}"
    if claim == "flat":
        return "flat in the sweep"
    return f"{value:.3g}" + (f" ± {spread:.3g}" if spread is not None else "")


def _ours(r: Mapping[str, Any]) -> str:
    text = f"{r['median']:.3g}"
    if r["n_seeds"] > 1:
        text += f" [{r['min']:.3g}–{r['max']:.3g}]"
    return text


def reproduction_markdown(table: pd.DataFrame, where: str) -> str:
    """results/reproduction.md: the rules, then the table, then each row's command."""
    head = (
        "# Reproduction of published results\n\n"
        f"From {where}. Each row is one paper protocol, `conf/experiment/<experiment>.yaml`, "
        "run with the command below the table. *Ours*: the median over seeds of the final "
        "metric [min–max]; steps and seconds of training are medians. Verdict: **reproduced** "
        f"within the paper's spread or a factor {FACTOR:g}, else **better** or **worse**; a "
        "relative claim is reproduced when it holds in our runs (`bench/reproduction.py`). "
        "*Reduction*: where our run differs from the paper's protocol.\n\n"
    )
    cols = ["experiment", "setting", "published", "ours", "seeds", "steps", "seconds",
            "hardware", "verdict", "reduction / note"]  # fmt: skip
    rows = []
    for _, r in table.iterrows():
        steps = "" if pd.isna(r["steps"]) else f"{int(r['steps']):,}"
        secs = "" if pd.isna(r["seconds"]) else f"{r['seconds']:.0f}"
        note = "; ".join(x for x in (r["reduction"], r["note"]) if x)
        rows.append([r["experiment"], r["setting"], r["published"], r["ours"],
                     str(r["n_seeds"] or ""), steps, secs, r["hardware"],
                     f"**{r['verdict']}**", note])  # fmt: skip
    cites = ["", "## Sources and commands", ""]
    for _, r in table.drop_duplicates("experiment").iterrows():
        hw = f" Paper's hardware: {r['paper_hardware']}." if r["paper_hardware"] else ""
        cites.append(f"- `{r['experiment']}`: {r['citation']}.{hw} `{r['command']}`")
    return head + to_markdown(cols, rows) + "\n".join(cites) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`bench-reproduce`: the reproduction table from any MLflow store."""
    p = argparse.ArgumentParser(prog="bench-reproduce", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or results/mlflow.db)")
    add("--experiment", action="append", help="MLflow experiment (repeatable; default physbench)")
    add(
        "--papers",
        type=Path,
        default=PAPERS,
        help="published numbers (default: results/papers.csv)",
    )
    add("--out", type=Path, default=REPO / "results", help="output folder (default: results/)")
    args = p.parse_args(argv)
    uri = resolve_uri(args.tracking_uri)
    experiments = args.experiment or ["physbench"]
    try:
        papers = load_papers(args.papers)
        for line in sweep_store(uri, experiments, "bench-reproduce"):
            print(f"bench-reproduce: {line}")
        _, df = load_runs(uri, experiments)
    except (PapersError, StoreError) as e:
        print(f"bench-reproduce: {e}")
        return 2
    table = reproduction_table(select_runs(df, "protocol"), papers)
    shown = uri.replace(f"sqlite:///{REPO}/", "sqlite:///<repo>/")  # no machine's paths in the file
    where = f"the MLflow store {shown}, experiment(s) {', '.join(experiments)}"
    text = reproduction_markdown(table, where)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reproduction.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")
    return 0
