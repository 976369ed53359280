"""The `bench` command: one Hydra app for a single cell or a multirun grid.

bench +method=pinn +problem=burgers
bench -m +method=pinn +problem=burgers seed=0,1,2 budget=smoke
"""

from __future__ import annotations

import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from bench.console import console, print_summary
from bench.registry import CONF_DIR, methods, problems, yaml_options
from bench.resume import RERUN_TAG, decide, record_skip
from bench.run import EXIT, execute


def _missing(group: str) -> str:
    return (
        f"no {group} chosen: add +{group}=<name>, e.g. "
        f"`bench +method=pinn +problem=burgers`. Available {group}s: "
        + ", ".join(yaml_options(group))
    )


def task(cfg: DictConfig) -> int:
    """One job. A module-level name, so process launchers (joblib) pickle it by reference."""
    hc = HydraConfig.get()
    choices = hc.runtime.choices
    method, problem = choices.get("method"), choices.get("problem")
    for group, name, table in (("method", method, methods()), ("problem", problem, problems())):
        if name is None:
            console.print(_missing(group), markup=False)
            sys.exit(2)
        if name not in table:  # a YAML file without a registered class
            console.print(
                f"{group} {name!r} has a config but no registered class; registered {group}s: "
                + ", ".join(sorted(table)),
                markup=False,
            )
            sys.exit(2)
    multirun = hc.mode == RunMode.MULTIRUN
    with open_dict(cfg):
        cfg.pop("hydra", None)
    job = hc.job.num if multirun else None
    budget = choices.get("budget", "custom")
    resume_from, tags = None, {}
    if cfg.get("resume") is True:
        decision = decide(cfg, method, problem, budget)
        console.print(decision.message, markup=False)
        if decision.skip:
            record_skip(cfg, job, decision, f"{method}/{problem}/{cfg.seed}")
            return 0
        resume_from, tags = decision.checkpoint_dir, {RERUN_TAG: decision.reason[:5000]}
    record = execute(cfg, method, problem, hc.runtime.output_dir, budget, job, resume_from, tags)
    if record["status"] == "not_applicable" and cfg.get("preset"):
        # a paper's protocol that cannot run is a broken preset, not a grid's empty cell
        console.print(
            f"experiment {cfg.preset!r}: method {method!r} does not apply to problem "
            f"{problem!r}: {record['message']}",
            markup=False,
        )
        sys.exit(2)
    if record["status"] != "not_applicable":
        print_summary(record)
    code = EXIT[record["status"]]
    if multirun:
        if code:  # Hydra records the failure, finishes the other jobs, then exits 1
            raise RuntimeError(f"{method}/{problem}: {record['status']}: {record['message']}")
        return code
    if code:
        sys.exit(code)
    return code


_hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")(task)


def sweep_safe(args: list[str]) -> list[str]:
    """In a multirun, Hydra applies the overrides that do not sweep before any `+method=` or
    `+problem=` choice exists, so `bench -m +method=fno,dymixop method.lr=0.01` would fail with
    "Key 'method' is not in struct". Such an override becomes a one-value sweep
    (`method.lr=choice(0.01)`), which Hydra applies inside every job, as the user meant."""
    if not any(a in ("-m", "--multirun") for a in args):
        return args
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for a in args:
        key, sep, value = a.partition("=")
        if sep and key.split(".")[0] in ("method", "problem") and "." in key:
            try:
                sweep = parser.parse_override(a).is_sweep_override()
            except Exception:  # let Hydra report a malformed override itself
                sweep = True
            if not sweep:
                a = f"{key}=choice({value})"
        out.append(a)
    return out


# The launchers of optional extras: the plugin's module and the extra that installs it.
LAUNCHER_EXTRAS = {
    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "launchers"),
}


def missing_launcher(args: list[str]) -> str | None:
    """The install line for a `hydra/launcher=<name>` whose plugin is not installed."""
    import importlib.util

    for a in args:
        key, _, name = a.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and name in LAUNCHER_EXTRAS:
            module, extra = LAUNCHER_EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                return (
                    f"hydra/launcher={name} needs the optional extra '{extra}', which is not "
                    f"installed: .venv/bin/pip install -e '.[{extra}]'"
                )
    return None


def main() -> None:
    """The console script: `bench [overrides]` (see the module doc)."""
    sys.argv = [sys.argv[0], *sweep_safe(sys.argv[1:])]
    if problem := missing_launcher(sys.argv[1:]):
        console.print(problem, markup=False)
        sys.exit(2)
    # conf/hydra/launcher/ray.yaml replaces the Ray plugin's config of the same name on
    # purpose (see that file); Hydra validates it against the plugin's schema and says so.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema"
    )
    _hydra_main()
