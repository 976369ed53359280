"""One run: config → seed → device → build → check → score's data → fit under the budget →
score → write → log.

`execute` is the whole run for a composed config; `run_cell` composes the config the way the
CLI does and calls it, for tests, notebooks and `bench-check`. `metrics.json` is written on
every path out of `execute`, including failures and Ctrl-C. A run saves checkpoints into its
directory on `checkpoint.every`'s schedule, and continues one from `resume_from` (given by
`bench.resume`) or `checkpoint.resume_from` (`bench.checkpoint`).
"""

from __future__ import annotations

import importlib
import os
import platform
import random
import resource
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.checkpoint import NAME, PREVIOUS, Checkpoints, every_seconds
from bench.console import RunProgress, console
from bench.monitor import Monitor
from bench.outputs import write_outputs
from bench.registry import CONF_DIR, build_method, build_problem
from bench.resume import RESUMED_TAG, config_hash
from bench.scoring import Scorer, make_scorer
from bench.tracking import CODE_TAG, CONFIG_TAG, Tracker, code_version, git_info
from methods.base import Budget, Method
from problems.base import ConfigError, Problem

EXIT = {"ok": 0, "diverged": 0, "not_applicable": 0, "failed": 1, "killed": 130}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "auto": None}


def pick_device(name: str, job: int | None = None) -> torch.device:
    """`auto` is CUDA when present (for job `job` of a multirun, its GPU: `job_gpu`), else CPU;
    anything else must be a valid torch device, and is used as given."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return job_gpu(job, torch.cuda.device_count())
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use device=auto or cpu")
    return dev


def job_gpu(job: int | None, count: int) -> torch.device:
    """The GPU of `device=auto` among `count` visible ones: job k of a multirun takes GPU
    k mod count, so that the jobs a process launcher runs side by side spread over a node's
    GPUs; a single run (`job` None), or any job on a one-GPU node, takes the current GPU."""
    if job is None or count < 2:
        return torch.device("cuda")
    return torch.device("cuda", job % count)


def validate(
    cfg: DictConfig, budget_name: str = "custom", job: int | None = None
) -> tuple[torch.device, torch.dtype, Budget]:
    """Reject nonsensical top-level values before anything is built, naming the key; the
    device for job `job` of a multirun (None: a single run)."""
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
    if not isinstance(cfg.get("resume", False), bool):
        raise ConfigError(f"resume must be true or false, got {cfg.get('resume')!r}")
    budget_cfg = OmegaConf.to_container(cfg.budget, resolve=True)
    budget = Budget.from_dict(dict(budget_cfg), name=budget_name)
    ckpt = cfg.get("checkpoint") or {}
    every_seconds(ckpt.get("every"), budget.seconds)  # refuses a bad value, naming the key
    src = ckpt.get("resume_from")
    if src is not None and not Path(str(src)).is_dir():
        raise ConfigError(
            f"checkpoint.resume_from={src!r} is not a directory; give the run directory of an "
            "earlier run of this cell (the one holding checkpoint.pt), or null"
        )
    return pick_device(str(cfg.device), job), DTYPES[cfg.dtype], budget  # type: ignore[return-value]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (seeds legacy global-RNG users too)
    torch.manual_seed(seed)


def precision() -> dict[str, Any]:
    """torch's float32 settings in effect, which the run's dtype alone does not fix: with TF32
    allowed, an Ampere or later GPU computes float32 matmuls (precision "high"; "medium" also
    allows bfloat16) or cuDNN convolutions with a 10-bit mantissa."""
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def hardware(device: torch.device) -> str:
    """What the run computed on, in words: the GPU's name, or the CPU's model (Linux's
    /proc/cpuinfo, else the platform's) with the threads torch uses and the cores there are."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (GPU)"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} of {os.cpu_count()} cores"


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 2**20


def execute(
    cfg: DictConfig,
    method_name: str,
    problem_name: str,
    out_dir: Path,
    budget_name: str = "custom",
    job: int | None = None,
    resume_from: Path | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run one cell for a composed config (module doc); return (and write) its record. `job` is
    the job's number in a multirun, None for a single run; `resume_from` a run directory whose
    checkpoint this run continues; `tags` extra MLflow tags."""
    out_dir = Path(out_dir).resolve()
    record = _new_record(cfg, method_name, problem_name, budget_name, out_dir)
    record["tags"] = dict(tags or {})
    tcfg = cfg.get("tracking", {})
    tracker = Tracker(
        tcfg.get("uri"), tcfg.get("experiment", "physbench"), tcfg.get("enabled", True)
    )
    monitor: Monitor | None = None
    scorer: Scorer | None = None
    try:
        device, dtype, budget = validate(cfg, budget_name, job)
        record["device"] = str(device)
        if device.type == "cuda" and device.index is not None:
            torch.cuda.set_device(device)  # so that a plain "cuda" in the run means this GPU too
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        record["hardware"] = hardware(device)
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
            return record
        _start_tracking(tracker, record, cfg, out_dir)
        mode = RunProgress.pick_mode(str(cfg.progress), job is not None)
        scorer = make_scorer(problem, method.needs_for(problem), budget_name, mode,
                             int(cfg.eval.residual_points), int(cfg.seed), device)  # fmt: skip
        title = f"{method_name} × {problem_name} (seed {cfg.seed}, {budget_name})"
        monitor = Monitor(budget, scorer.curve_score, [lambda row: _log_row(tracker, row)])
        monitor.checkpoints = _checkpoints(cfg, record, budget, out_dir, resume_from)
        predictor = _fit(method, problem, budget, monitor, title, mode, device)
        record["metrics"] = scorer.final(predictor) | _costs(monitor, predictor, device)
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
        _finish(record, tracker, scorer, monitor, out_dir, cfg)
    return record


def _new_record(
    cfg: DictConfig, method: str, problem: str, budget_name: str, out_dir: Path
) -> dict[str, Any]:
    """A `failed` record until the run says otherwise (metrics.json's schema)."""
    git = git_info()
    return {
        "method": method,
        "problem": problem,
        "seed": cfg.get("seed"),
        "budget": budget_name,
        "status": "failed",
        "message": "",
        "stop_reason": None,
        "metrics": {},
        "device": None,
        "hardware": None,
        "dtype": cfg.get("dtype"),
        "precision": precision(),
        "run_dir": str(out_dir),
        "mlflow_run_id": None,
        **git,
        "code_version": code_version(git),
        "config_hash": _config_hash(cfg, method, problem),
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "tags": {},
    }


def _checkpoints(
    cfg: DictConfig,
    record: dict[str, Any],
    budget: Budget,
    out_dir: Path,
    resume_from: Path | None,
) -> Checkpoints | None:
    """The run's checkpoint schedule and source (`checkpoint.*`); None when neither is set."""
    ckpt = cfg.get("checkpoint") or {}
    every = every_seconds(ckpt.get("every"), budget.seconds)
    src = resume_from or (Path(str(ckpt.resume_from)) if ckpt.get("resume_from") else None)
    if src is None and _requeued() and ((out_dir / NAME).exists() or (out_dir / PREVIOUS).exists()):
        src = out_dir
    if every is None and src is None:
        return None
    identity = {"code_version": record["code_version"], "config_hash": record["config_hash"]}
    say = lambda line: console.print(line, markup=False)  # noqa: E731
    return Checkpoints(out_dir, every, identity, src, say)


def run_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """A run's MLflow tags at its start, all read from its record (metrics.json), so that
    `bench-sync` logs a run afterwards with the same tags as a live one."""
    return {
        "method": record["method"],
        "problem": record["problem"],
        "budget": record["budget"],
        "seed": str(record["seed"]),
        "device": str(record["device"]),
        "hardware": str(record.get("hardware", "")),
        "dtype": record["dtype"],
        **{k: str(v).lower() for k, v in record["precision"].items()},
        "torch_version": record["torch_version"],
        "cuda_version": record["cuda_version"],
        "run_dir": record["run_dir"],
        **{k: v for k, v in record.items() if k.startswith("git_")},
        CONFIG_TAG: record["config_hash"],
        CODE_TAG: record["code_version"],
        **record.get("tags", {}),
    }


def end_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The tags a run gets when it ends."""
    tags = {"status": record["status"], "stop_reason": record["stop_reason"]}
    if record.get("resumed_from"):
        tags[RESUMED_TAG] = record["resumed_from"]
    return tags


def curve_metrics(row: Mapping[str, float]) -> tuple[dict[str, float], int]:
    """One curve row as MLflow step metrics (`eval/*`, `train/*`) and its step."""
    values = {
        ("eval/" if k in ("rel_l2", "seconds") else "train/") + k: v
        for k, v in row.items()
        if k != "step"
    }
    return values, int(row["step"])


def _config_hash(cfg: DictConfig, method: str, problem: str) -> str:
    try:
        return config_hash(cfg, method, problem)
    except Exception:  # a config that does not resolve: the run fails on it with a message
        return "unresolved"


def _requeued() -> bool:
    """A job that SLURM requeued, e.g. after a preemption: submitit's `checkpoint` hook, which
    Hydra's submitit launcher implements by resubmitting the same job, starts it again in the
    same directory, where it continues its own checkpoint."""
    count = os.environ.get("SLURM_RESTART_COUNT", "0")
    return count.isdigit() and int(count) > 0


def _start_tracking(
    tracker: Tracker, record: dict[str, Any], cfg: DictConfig, out_dir: Path
) -> None:
    """Start the MLflow run with the run's tags and its resolved config as params."""
    name = f"{record['method']}/{record['problem']}/{cfg.seed}"
    record["mlflow_run_id"] = tracker.start(name, run_tags(record))
    tracker.log_params(OmegaConf.to_container(cfg, resolve=True))
    if tracker.error:
        console.print(f"tracking off: {tracker.error}; results stay in {out_dir}", markup=False)


def _fit(
    method: Method,
    problem: Problem,
    budget: Budget,
    monitor: Monitor,
    title: str,
    mode: str,
    device: torch.device,
) -> Any:
    """`method.fit` under the budget, reported to `monitor` (the caller keeps it, so that an
    interrupted or failed fit is salvaged); the predictor at the final iterate."""
    with RunProgress(title, mode) as progress:
        monitor.observers.insert(0, progress.on_eval)
        monitor.ticker = progress.on_step
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # torch's optimisers import torch._dynamo lazily at their first step (about a second);
        # import it before the clock starts so no method is charged for it.
        importlib.import_module("torch._dynamo")
        monitor.start()
        predictor = method.fit(problem, budget, monitor)
        monitor.train_seconds = monitor.seconds
        monitor.predictor = predictor
        monitor.finish()
    return predictor


def _costs(monitor: Monitor, predictor: Any, device: torch.device) -> dict[str, float]:
    """What the run cost: training seconds (the harness's evaluations and the method's
    compilation excluded), compilation seconds, steps, evaluations, parameters, memory."""
    out = {
        "train_seconds": monitor.train_seconds,
        "compile_seconds": monitor.excluded.get("compile", 0.0),
        "steps": monitor.step,
        "evals": monitor.evals,
        "n_params": predictor.n_params(),
        "peak_rss_mb": peak_rss_mb(),
        "eval_seconds": monitor.eval_seconds,
    }
    out.update({f"{k}_seconds": v for k, v in monitor.excluded.items()})
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _finish(
    record: dict[str, Any],
    tracker: Tracker,
    scorer: Scorer | None,
    monitor: Monitor | None,
    out_dir: Path,
    cfg: DictConfig,
) -> None:
    """Write the run's outputs (metrics.json on every path) and close its MLflow run."""
    if record["status"] == "not_applicable":
        write_outputs(out_dir, record, None, None, None, False)
        return
    ckpt = monitor.checkpoints if monitor is not None else None
    if ckpt is not None and ckpt.loaded_from is not None:
        record["resumed_from"] = str(ckpt.loaded_from)
    figures = bool(cfg.get("eval", {}).get("figures", True))
    predictions = bool(cfg.get("eval", {}).get("predictions", True))
    if scorer is not None:
        paths = scorer.write(out_dir, record, monitor, figures, predictions)
    else:  # failed before the data were prepared
        paths = write_outputs(out_dir, record, monitor, None, None, figures)
    tracker.log_metrics(record["metrics"], step=record["metrics"].get("steps", 0) or 0)
    tracker.set_tags(end_tags(record))
    tracker.log_artifacts(paths + [out_dir / ".hydra"])
    tracker.finish(record["status"])
    if tracker.error and record["mlflow_run_id"]:
        console.print(f"tracking: {tracker.error}; results are in {out_dir}", markup=False)


def _section(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = cfg.get(key)
    return {} if node is None else dict(OmegaConf.to_container(node, resolve=True))


def _log_row(tracker: Tracker, row: dict[str, float]) -> None:
    tracker.heartbeat()
    values, step = curve_metrics(row)
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
    return compose_overrides([f"+method={method}", f"+problem={problem}", *overrides])


def compose_overrides(overrides: Sequence[str]) -> DictConfig:
    """The config the CLI would build for `bench <overrides>` (e.g. `+experiment=<name>`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


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
