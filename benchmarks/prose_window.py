"""PROSE's input window: the multimodal model (equations in and out) against its data-only
ablation over the observed window `problem.input_len`, several seeds each, at equal steps.

    .venv/bin/python benchmarks/prose_window.py --run          # the grid, then the summary
    .venv/bin/python benchmarks/prose_window.py                # the summary of runs already made

`--run` launches one Hydra multirun through `bench` (the joblib launcher with `--jobs`
processes of one thread each) into the MLflow experiment `prose_window`: `prose` on
`ode_family` with `problem.input_len` in `--windows`, `method.text_input` (and with it
`method.text_output`) true and false, and seeds 0..`--seeds`-1, every run `--steps` optimiser
steps at the `standard` data and model sizes, without a clock. The summary reads that
experiment from the store: per window and variant the median final `rel_l2` (the error after
the observed window, on the test split) over seeds with its min-max, as a markdown table and a
figure (`results/prose_window.md`, `results/prose_window.png`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import load_runs, select_runs  # noqa: E402
from bench.tracking import resolve_uri  # noqa: E402

EXPERIMENT = "prose_window"


def run_grid(args: argparse.Namespace) -> int:
    cmd = [
        str(REPO / ".venv" / "bin" / "bench"), "-m", "+method=prose", "+problem=ode_family",
        f"problem.input_len={','.join(map(str, args.windows))}",
        "method.text_input=true,false", "method.text_output=${method.text_input}",
        f"seed={','.join(map(str, range(args.seeds)))}",
        "budget=standard", f"budget.steps={args.steps}", "budget.seconds=null",
        "budget.evals=null", f"budget.eval_every={args.steps}", "threads=1",
        f"tracking.experiment={EXPERIMENT}", "eval.figures=false",
        "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.jobs}",
    ]  # fmt: skip
    if args.tracking_uri:
        cmd.append(f"tracking.uri={args.tracking_uri}")
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO)


def summary(args: argparse.Namespace) -> int:
    _, df = load_runs(resolve_uri(args.tracking_uri), [EXPERIMENT])
    runs = select_runs(df)
    runs = runs[(runs["method"] == "prose") & (runs["status"] == "ok")].copy()
    if runs.empty:
        print(f"no finished prose runs in experiment {EXPERIMENT}: run with --run first")
        return 1
    runs["window"] = pd.to_numeric(runs["params.problem.input_len"])
    modal = runs["params.method.text_input"].astype(str).str.lower() == "true"
    runs["variant"] = np.where(modal, "multimodal", "data-only")
    agg = runs.groupby(["window", "variant"])["rel_l2"].agg(["median", "min", "max", "count"])
    lines = [
        "# PROSE: multimodal against data-only over the input window",
        "",
        f"`benchmarks/prose_window.py`, experiment `{EXPERIMENT}`: prose on ode_family at the "
        "standard sizes, equal optimiser steps per run (steps: "
        f"{', '.join(str(int(s)) for s in sorted(runs['steps'].dropna().unique()))}), "
        "final rel_l2 after the observed window on the test split, median over seeds "
        "[min–max].",
        "",
        "| input_len | multimodal | data-only | seeds | multimodal / data-only |",
        "| --- | --- | --- | --- | --- |",
    ]
    for w in sorted(runs["window"].unique()):
        cells, med = [], {}
        for v in ("multimodal", "data-only"):
            if (w, v) in agg.index:
                r = agg.loc[(w, v)]
                med[v] = r["median"]
                cells.append(f"{r['median']:.3g} [{r['min']:.3g}–{r['max']:.3g}]")
            else:
                cells.append("—")
        n = "/".join(str(int(agg.loc[(w, v), "count"])) if (w, v) in agg.index else "0"
                     for v in ("multimodal", "data-only"))  # fmt: skip
        ratio = f"{med['multimodal'] / med['data-only']:.2f}" if len(med) == 2 else "—"
        lines.append(f"| {int(w)} | {cells[0]} | {cells[1]} | {n} | {ratio} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prose_window.md").write_text(text)
    print(text)

    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for i, v in enumerate(("multimodal", "data-only")):
        sel = runs[runs["variant"] == v]
        ax.scatter(sel["window"] * (1.03 if i else 0.97), sel["rel_l2"], color=f"C{i}", alpha=0.4)
        med = sel.groupby("window")["rel_l2"].median()
        ax.plot(med.index, med.to_numpy(), "-o", color=f"C{i}", label=f"{v} (median)")
    ax.set(xscale="log", yscale="log", xlabel="observed window input_len (samples)",
           ylabel="relative L2 error after the window", title="PROSE on ode_family")  # fmt: skip
    windows = sorted(runs["window"].unique())
    ax.set_xticks(windows, [str(int(w)) for w in windows])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(out / "prose_window.png", dpi=120)
    print(f"wrote {out / 'prose_window.md'}, {out / 'prose_window.png'}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="store_true", help="launch the grid first")
    p.add_argument("--windows", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (one thread each)")
    p.add_argument("--tracking-uri", help="MLflow store (default: results/mlflow.db)")
    p.add_argument("--out", default=str(REPO / "results"), help="output folder")
    args = p.parse_args()
    if args.run and run_grid(args) != 0:
        print("the grid did not finish cleanly; summarising the runs that did")
    return summary(args)


if __name__ == "__main__":
    raise SystemExit(main())
