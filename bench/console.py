"""Terminal output with rich: a live progress bar on a terminal, plain log lines elsewhere.

Nothing user-supplied is parsed as markup (units like `[s]` would vanish), so every string goes
through `Text` or `escape`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

# log lines carry the time, not the source line that printed them (Rich adds that by default)
console = Console(highlight=False, log_path=False)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3e}" if (v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4)) else f"{v:.4g}"
    return str(v)


class RunProgress:
    """Shows one run's progress. `mode`: bar | lines | off."""

    def __init__(self, title: str, mode: str, line_every_s: float = 10.0) -> None:
        self.title = title
        self.mode = mode
        self.line_every_s = line_every_s
        self._last_line = 0.0
        self._rel_l2 = float("nan")
        self._progress: Progress | None = None
        self._task: Any = None

    @staticmethod
    def pick_mode(requested: str, multirun: bool) -> str:
        if requested in ("bar", "lines", "off"):
            return requested
        if multirun or not console.is_interactive:
            return "lines"
        return "bar"

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.title, total=1.0, info="starting")
        else:
            self.log(f"{self.title}: started")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, message: str) -> None:
        if self.mode != "off":
            console.log(escape(message))

    def on_eval(self, row: Mapping[str, float]) -> None:
        self._rel_l2 = row.get("rel_l2", self._rel_l2)

    def on_step(self, monitor: Any) -> None:
        loss = monitor.scalars.get("loss")  # absent for a method that learns nothing
        err = "-" if self._rel_l2 != self._rel_l2 else f"{self._rel_l2:.3e}"  # nan: not yet
        info = f"step {monitor.step}  loss {'-' if loss is None else f'{loss:.3e}'}  rel_l2 {err}"
        if self._progress is not None:
            self._progress.update(self._task, completed=monitor.fraction_used(), info=info)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= self.line_every_s:
                self._last_line = now
                pct = 100 * monitor.fraction_used()
                self.log(f"{self.title}: {info}  ({pct:.0f}% of budget, {monitor.seconds:.0f} s)")


class DataProgress:
    """Progress of operator-data generation (`progress(done, total)` callbacks): a bar on a
    terminal, a line every `line_every_s` seconds otherwise."""

    def __init__(self, title: str, mode: str, line_every_s: float = 10.0) -> None:
        self.title, self.mode, self.line_every_s = title, mode, line_every_s
        self._progress: Progress | None = None
        self._task: Any = None
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.mode == "bar":
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("{task.description}", markup=False),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(),
                    TimeRemainingColumn(),
                    console=console,
                )
                self._progress.start()
                self._task = self._progress.add_task(self.title, total=total)
            self._progress.update(self._task, completed=done, total=total)
            if done >= total:
                self.close()
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last >= self.line_every_s or done >= total:
                self._last = now
                console.log(escape(f"{self.title}: {done}/{total}"))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def summary_table(record: Mapping[str, Any]) -> Table:
    """The end-of-run summary: status, stop reason and every final metric."""
    r = record
    title = f"{r['method']} × {r['problem']}  seed {r['seed']}  budget {r['budget']}"
    table = Table(title=escape(title), box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("status", escape(str(record["status"])))
    if record.get("stop_reason"):
        table.add_row("stopped by", escape(str(record["stop_reason"])))
    for k, v in record.get("metrics", {}).items():
        table.add_row(escape(k), escape(_fmt(v)))
    table.add_row("outputs", escape(str(record.get("run_dir", ""))))
    if record.get("mlflow_run_id"):
        table.add_row("mlflow run", escape(str(record["mlflow_run_id"])))
    return table


def print_summary(record: Mapping[str, Any]) -> None:
    console.print(summary_table(record))
    if record.get("message"):
        console.print(escape(str(record["message"])))
