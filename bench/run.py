"""One run: config → seed → device → build → check → fit under budget → score → write → log.

`execute` is the whole run for a composed config; `run_cell` composes the config the way the
CLI does and calls it, for tests, notebooks and `bench-check`. `metrics.json` is written on
every path out of `execute`, including failures and Ctrl-C.
"""

from __future__ import annotations

import importlib
import json
import platform
import random
import resource
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from bench import metrics
from bench.console import RunProgress, console
from bench.family_eval import FamilyScorer, prepare_family_data, write_family_outputs
from bench.monitor import Monitor
from bench.operator_eval import (
    OperatorScorer,
    prepare_operator_data,
    speedup,
    write_operator_outputs,
)
from bench.registry import CONF_DIR, build_method, build_problem
from bench.tracking import Tracker, git_info
from methods.base import Budget, Method, Predictor
from problems.base import ConfigError, Problem

EXIT = {"ok": 0, "diverged": 0, "not_applicable": 0, "failed": 1, "killed": 130}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "auto": None}


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU; anything else must be a valid torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    return dev


def validate(
    cfg: DictConfig, budget_name: str = "custom"
) -> tuple[torch.device, torch.dtype, Budget]:
    """Reject nonsensical top-level values before anything is built, naming the key."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if cfg.get("dtype") not in DTYPES:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {cfg.get('dtype')!r}")
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or null, got {threads!r}")
    if cfg.get("progress") not in ("auto", "bar", "lines", "off"):
        raise ConfigError(f"progress must be auto, bar, lines or off, got {cfg.get('progress')!r}")
    budget_cfg = OmegaConf.to_container(cfg.budget, resolve=True)
    budget = Budget.from_dict(dict(budget_cfg), name=budget_name)
    return pick_device(str(cfg.device)), DTYPES[cfg.dtype], budget  # type: ignore[return-value]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seeds legacy global-RNG users too)
    torch.manual_seed(seed)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 2**20


RESIDUAL_CHUNK = 512  # points per residual evaluation when scoring


def score(
    problem: Problem,
    predictor: Predictor,
    n_residual: int,
    seed: int,
    device: torch.device,
) -> tuple[dict[str, float], np.ndarray]:
    """Final metrics at the final iterate: accuracy on the reference, residual on fresh points."""
    ref = problem.reference()
    t0 = time.perf_counter()
    pred = np.asarray(predictor(ref.points), dtype=np.float64).reshape(ref.values.shape)
    out = {"inference_seconds": time.perf_counter() - t0}
    if np.all(np.isfinite(pred)):
        pred = ref.align(pred)  # gauge fields (pressure) compared up to a constant
    out.update(metrics.field_metrics(pred, ref.values, problem.fields))
    # the trivial predictor (each field's mean over the reference; zeros would score 1): a
    # method's rel_l2 means something only well below it (the accuracy gate's rule)
    mean = np.broadcast_to(ref.values.mean(axis=0), ref.values.shape)
    out["rel_l2_trivial"] = metrics.rel_l2(ref.align(np.array(mean)), ref.values)
    for group, names in problem.field_groups.items():
        cols = [problem.fields.index(n) for n in names]
        out[f"rel_l2_{group}"] = metrics.rel_l2(pred[:, cols], ref.values[:, cols])
    if problem.time_dependent:  # time is the last axis (DESIGN.md)
        t = ref.points[:, -1]
        if ref.grid is not None:  # the error at the last time of the grid
            _, err_t = metrics.error_over_time(pred, ref.values, t)
            out["rel_l2_final_time"] = float(err_t[-1])
        else:  # scattered times: the error over the last tenth of the time range
            late = t >= t.max() - 0.1 * (t.max() - t.min())
            out["rel_l2_final_time"] = metrics.rel_l2(pred[late], ref.values[late])
    if n_residual > 0 and "residual" in problem.capabilities:
        g = torch.Generator().manual_seed(10_000_019 + seed)  # never the training points
        x = problem.sample_interior(n_residual, g).to(device)
        chunks = []  # in chunks: nested-autograd graphs of d-dimensional inputs are large
        diags: dict[str, list[np.ndarray]] = {}
        for xs in x.split(RESIDUAL_CHUNK):
            f = predictor.fields(xs)
            if f is None:
                break
            chunks.append(problem.residual(f).detach().double().cpu().numpy())
            for name, value in problem.diagnostics(f).items():
                diags.setdefault(name, []).append(value.detach().double().cpu().numpy())
        if chunks:
            out["residual_rms"] = metrics.rms(np.concatenate(chunks))
        out.update({f"{k}_rms": metrics.rms(np.concatenate(v)) for k, v in diags.items()})
    return out, pred


def write_outputs(
    out_dir: Path,
    record: dict[str, Any],
    monitor: Monitor | None,
    problem: Problem | None,
    pred: np.ndarray | None,
    figures: bool,
) -> list[Path]:
    """Write metrics.json (always), curve.csv, predictions and figures; return artifact paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if monitor is not None and monitor.curve:
        curve = pd.DataFrame(monitor.curve)
        curve.to_csv(out_dir / "curve.csv", index=False)
        paths.append(out_dir / "curve.csv")
    if problem is not None and pred is not None:
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


def execute(
    cfg: DictConfig,
    method_name: str,
    problem_name: str,
    out_dir: Path,
    budget_name: str = "custom",
    multirun: bool = False,
) -> dict[str, Any]:
    """Run one cell for a composed config; return (and write) the metrics.json record."""
    out_dir = Path(out_dir).resolve()
    record: dict[str, Any] = {
        "method": method_name,
        "problem": problem_name,
        "seed": cfg.get("seed"),
        "budget": budget_name,
        "status": "failed",
        "message": "",
        "stop_reason": None,
        "metrics": {},
        "device": None,
        "dtype": cfg.get("dtype"),
        "run_dir": str(out_dir),
        "mlflow_run_id": None,
        **git_info(),
    }
    tcfg = cfg.get("tracking", {})
    tracker = Tracker(
        tcfg.get("uri"), tcfg.get("experiment", "physbench"), tcfg.get("enabled", True)
    )
    monitor: Monitor | None = None
    problem: Problem | None = None
    method: Method | None = None
    pred: np.ndarray | None = None
    scorer: OperatorScorer | None = None
    family: FamilyScorer | None = None
    family_out: dict[str, Any] | None = None
    growth: dict[str, np.ndarray] | None = None
    try:
        device, dtype, budget = validate(cfg, budget_name)
        record["device"] = str(device)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        seed_everything(int(cfg.seed))
        problem = build_problem(problem_name, **_section(cfg, "problem"))
        method = build_method(method_name, **_section(cfg, "method"))
        dtype = dtype or method.default_dtype  # auto: the method's own precision
        record["dtype"] = str(dtype).removeprefix("torch.")
        method.device, method.dtype, method.seed = device, dtype, int(cfg.seed)
        reason = method.applicable(problem)
        if reason:
            record.update(status="not_applicable", message=reason)
            console.print(f"not applicable: {reason}", markup=False)
            problem = None
            return record

        tags = {
            "method": method_name,
            "problem": problem_name,
            "budget": budget_name,
            "seed": str(cfg.seed),
            "device": str(device),
            "dtype": record["dtype"],
            "torch_version": torch.__version__,
            "cuda_version": str(torch.version.cuda),
            "run_dir": str(out_dir),
            **{k: v for k, v in record.items() if k.startswith("git_")},
        }
        record["mlflow_run_id"] = tracker.start(f"{method_name}/{problem_name}/{cfg.seed}", tags)
        tracker.log_params(OmegaConf.to_container(cfg, resolve=True))
        if tracker.error:
            console.print(f"tracking off: {tracker.error}; results stay in {out_dir}", markup=False)

        title = f"{method_name} × {problem_name} (seed {cfg.seed}, {budget_name})"
        mode = RunProgress.pick_mode(str(cfg.progress), multirun)
        needs = method.needs_for(problem)
        if "operator_data" in needs:
            scorer, data_metrics = prepare_operator_data(problem, budget_name, mode)
            target: Any = scorer.curve_score
        elif "family_data" in needs:
            family, data_metrics = prepare_family_data(problem, budget_name, mode)
            target = family.curve_score
        else:
            reference = problem.reference()
            target = reference
        with RunProgress(title, mode) as progress:
            monitor = Monitor(
                budget,
                target,
                observers=[progress.on_eval, lambda row: _log_row(tracker, row)],
                ticker=progress.on_step,
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            # torch's optimisers import torch._dynamo lazily at their first step (about 1 s on
            # this CPU); import it before the clock starts so no method is charged for it.
            importlib.import_module("torch._dynamo")

            monitor.start()
            predictor = method.fit(problem, budget, monitor)
            train_seconds = monitor.seconds
            monitor.predictor = predictor
            monitor.finish()
        if scorer is not None:
            final, pred, growth = scorer.score(predictor)
            final.update(data_metrics)
            final.update(speedup(problem, scorer, final))
        elif family is not None:
            final, family_out = family.score(predictor)
            final.update(data_metrics)
        else:
            final, pred = score(
                problem, predictor, int(cfg.eval.residual_points), int(cfg.seed), device
            )
        final.update(
            train_seconds=train_seconds,
            steps=monitor.step,
            evals=monitor.evals,
            n_params=predictor.n_params(),
            peak_rss_mb=peak_rss_mb(),
            eval_seconds=monitor.eval_seconds,
        )
        if device.type == "cuda":
            final["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        if scorer is None and family is None:
            final.update(problem.invariants(reference.points, pred))
        record["metrics"] = final
        record["stop_reason"] = monitor.stop_reason
        if monitor.diverged:
            record.update(status="diverged", message=f"non-finite loss at step {monitor.step}")
        else:
            record["status"] = "ok"
    except KeyboardInterrupt:
        record.update(status="killed", message="interrupted; everything logged so far is kept")
        _salvage(record, monitor)
    except ConfigError as e:
        record.update(status="failed", message=f"config error: {e}")
    except Exception as e:
        record.update(status="failed", message=f"{type(e).__name__}: {e}")
        record["traceback"] = traceback.format_exc()
        _salvage(record, monitor)
    finally:
        if record["status"] != "not_applicable":
            figures = bool(cfg.get("eval", {}).get("figures", True))
            if scorer is not None:
                paths = write_operator_outputs(
                    out_dir, record, monitor, scorer, pred, growth, figures
                )
            elif family is not None:
                paths = write_outputs(out_dir, record, monitor, None, None, figures)
                if family_out is not None:
                    paths += write_family_outputs(out_dir, family, family_out)
            else:
                paths = write_outputs(out_dir, record, monitor, problem, pred, figures)
            tracker.log_metrics(record["metrics"], step=record["metrics"].get("steps", 0) or 0)
            tracker.set_tags({"status": record["status"], "stop_reason": record["stop_reason"]})
            tracker.log_artifacts(paths + [out_dir / ".hydra"])
            tracker.finish(record["status"])
            if tracker.error and record["mlflow_run_id"]:
                console.print(f"tracking: {tracker.error}; results are in {out_dir}", markup=False)
        else:
            write_outputs(out_dir, record, None, None, None, False)
    return record


def _section(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = cfg.get(key)
    return {} if node is None else dict(OmegaConf.to_container(node, resolve=True))


def _log_row(tracker: Tracker, row: dict[str, float]) -> None:
    step = int(row["step"])
    values = {
        ("eval/" if k in ("rel_l2", "seconds") else "train/") + k: v
        for k, v in row.items()
        if k not in ("step",)
    }
    tracker.log_metrics(values, step=step)


def _salvage(record: dict[str, Any], monitor: Monitor | None) -> None:
    """Keep what an interrupted or crashed run had measured."""
    if monitor is not None:
        record["stop_reason"] = record.get("stop_reason") or record["status"]
        record["metrics"] = {
            "steps": monitor.step,
            "evals": monitor.evals,
            "train_seconds": monitor.seconds,
        }
        if monitor.curve and "rel_l2" in monitor.curve[-1]:
            record["metrics"]["last_eval_rel_l2"] = monitor.curve[-1]["rel_l2"]


def compose(method: str, problem: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config the CLI would build for `+method=<method> +problem=<problem> <overrides>`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=[f"+method={method}", f"+problem={problem}", *overrides],
            return_hydra_config=True,
        )


def run_cell(
    method: str,
    problem: str,
    *,
    overrides: Sequence[str] = (),
    output_dir: str | Path,
) -> dict[str, Any]:
    """Run one cell in-process with the CLI's config; returns the metrics.json record."""
    cfg = compose(method, problem, overrides)
    budget_name = cfg.hydra.runtime.choices.get("budget", "custom")
    with open_dict(cfg):
        del cfg["hydra"]
    return execute(cfg, method, problem, Path(output_dir), budget_name=budget_name)
