"""What every run writes to its directory: metrics.json (always, on every path), curve.csv,
predictions.npz and figures; `write_outputs` returns the paths to log as artifacts. Operator
and family runs add their own files (`bench.operator_eval`, `bench.family_eval`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.monitor import Monitor
from problems.base import Problem


def write_outputs(
    out_dir: Path,
    record: dict[str, Any],
    monitor: Monitor | None,
    problem: Problem | None,
    pred: np.ndarray | None,
    figures: bool,
    predictions: bool = True,
) -> list[Path]:
    """Write metrics.json (always), curve.csv, predictions (unless `predictions` is false) and
    figures; return artifact paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if monitor is not None and monitor.curve:
        curve = pd.DataFrame(monitor.curve)
        curve.to_csv(out_dir / "curve.csv", index=False)
        paths.append(out_dir / "curve.csv")
    if problem is not None and pred is not None and predictions:
        ref = problem.reference()
        arrays = {"points": ref.points, "prediction": pred, "reference": ref.values}
        arrays.update({f"grid_{a}": g for a, g in zip(problem.axes, ref.grid or ())})
        np.savez_compressed(out_dir / "predictions.npz", **arrays)
        paths.append(out_dir / "predictions.npz")
    if figures:
        try:
            from bench import figures as figs

            if problem is not None and pred is not None and np.all(np.isfinite(pred)):
                paths.append(
                    figs.plot_fields(
                        problem.reference(),
                        pred,
                        problem.axes,
                        problem.fields,
                        out_dir / "fields.png",
                    )
                )
            if monitor is not None and len(monitor.curve) > 1:
                paths.append(figs.plot_curve(pd.DataFrame(monitor.curve), out_dir / "curve.png"))
        except Exception as e:  # a figure must never cost a run its numbers
            record["message"] = (record.get("message", "") + f" (figures failed: {e})").strip()
    (out_dir / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return [out_dir / "metrics.json", *paths]
