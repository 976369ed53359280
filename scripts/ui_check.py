"""`make ui-check`: the comparison of runs as a user of `make ui` sees it, in headless Chromium.

    .venv/bin/python scripts/ui_check.py --store results/mlflow.db --out /tmp/ui-check
    .venv/bin/python scripts/ui_check.py --grid --store /tmp/ui/mlflow.db --out /tmp/ui

It serves a copy of an MLflow store with `make ui`'s command (`mlflow ui --backend-store-uri
sqlite:///<store> --default-artifact-root <dir> --port <port>`), opens two views of one
experiment in headless Chromium, checks what they show and saves a screenshot of each:

- `table.png`, the runs table: each compared run is a row showing its `rel_l2` and
  `train_seconds`, and the rows are sorted by `rel_l2`;
- `charts.png`, the chart view: the `eval/rel_l2` curves and bars of `rel_l2` and
  `train_seconds`, each chart drawn and listing every compared run.

The compared runs are the first `--runs` (at most 10, the number of runs MLflow's charts show
by default) of the experiment by `rel_l2` (a multirun's parent run has none). Both views are one
MLflow saved view, `VIEW_NAME` (what the UI's Views menu saves: an experiment tag
`mlflow.sharedViewState.<id>` holding the columns, the sort and the charts, opened with
`?viewStateShareKey=<id>`), written into the copy of the store, never into the store itself
(the UI serves the copy). Without such a view the table
shows no metric columns, a multirun's runs are folded under their parent run, and MLflow draws
every final metric as a line of a single point (its charts draw bars only for metrics logged
at step 0, and the harness logs final metrics at the run's last step).

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`), so the
script needs nothing beyond the standard library and MLflow. The MLflow Assistant panel, which
opens by itself on a browser's first visit, is closed before the views load (as a user closes
it once), and `workflowType=machine_learning` selects the UI's "Model training" side.

`--grid` first fills a store that does not exist yet with a small grid from the real harness
(`GRID`: PINN and PIG on Burgers at budget `smoke`, one thread).

Exit status: 0 when every check passes; 1 when one fails (each failure is printed, the rendered
page is kept as `<view>.html` next to the screenshots); 2 when it cannot run (no Chromium, no
store, no such experiment or no scored run in it, the UI or the browser does not start).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import functools
import json
import os
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent

GRID = ["+method=pinn,pig", "+problem=burgers", "budget=smoke", "threads=1", "eval.figures=false"]
"""The small grid `--grid` runs: two runs, one multirun (so one parent run as well)."""

VIEW_ID = "physbench-ui-check"
VIEW_NAME = "physbench: error and cost"
TABLE_METRICS = ("rel_l2", "rel_l2_trivial", "train_seconds", "steps")
TABLE_TAGS = ("status",)
CURVE = "eval/rel_l2"
BARS = ("rel_l2", "train_seconds")
SECTION = "physbench-compare"


class CheckFailed(Exception):
    """A view does not show what it should; the message lists what is missing."""


class CannotRun(Exception):
    """The check cannot start: no browser, no store, no experiment, the UI does not start."""


def say(msg: str) -> None:
    print(f"ui-check: {msg}", flush=True)


# --- the store ------------------------------------------------------------------------------


def make_grid(store: Path) -> None:
    """Fill a new store with `GRID` through the `bench` command, the way a user runs it."""
    cmd = [
        str(BIN / "bench"),
        "-m",
        *GRID,
        f"tracking.uri=sqlite:///{store}",
        f"hydra.sweep.dir={store.parent / 'multirun'}",
    ]
    say(f"running the grid into {store}: {' '.join(cmd[1:])}")
    r = subprocess.run(cmd, cwd=store.parent, capture_output=True, text=True)
    if r.returncode != 0 or not store.exists():
        raise CannotRun(f"the grid failed (exit {r.returncode}):\n{r.stdout[-3000:]}{r.stderr}")


def copy_store(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite store, also while runs are writing to it."""
    with contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as a:
        with contextlib.closing(sqlite3.connect(dst)) as b:
            a.backup(b)


def chart(kind: str, key: str) -> dict[str, Any]:
    """One chart card of MLflow's chart view, as its UI state serialises it."""
    card: dict[str, Any] = {
        "uuid": f"physbench-{key}",
        "type": kind,
        "metricSectionId": SECTION,
        "metricKey": key,
        "deleted": False,
        "isGenerated": False,  # a generated bar chart is turned into a line by MLflow
        "runsCountToCompare": 10,
    }
    if kind == "LINE":
        card.update(
            selectedMetricKeys=[key],
            scaleType="log",
            xAxisKey="step",
            xAxisScaleType="linear",
            lineSmoothness=0,
            useGlobalXaxisKey=False,
            useGlobalLineSmoothing=False,
        )
    return card


def view_state() -> dict[str, Any]:
    """The saved view: metric and status columns, sorted by rel_l2, and three charts."""

    def key(kind: str, name: str) -> str:
        return f"{kind}.`{name}`"

    return {
        "orderByKey": key("metrics", "rel_l2"),
        "orderByAsc": True,
        "selectedColumns": [key("metrics", m) for m in TABLE_METRICS]
        + [key("tags", t) for t in TABLE_TAGS],
        "compareRunCharts": [chart("LINE", CURVE)] + [chart("BAR", m) for m in BARS],
        "compareRunSections": [
            {"uuid": SECTION, "name": VIEW_NAME, "display": True, "isReordered": False}
        ],
        # MLflow adds a chart for every other metric; this filter (a regular expression over
        # the charts' metrics) leaves the three above.
        "chartsSearchFilter": "^(" + "|".join([CURVE, *BARS]) + ")$",
    }


def prepare(db: Path, experiment: str, n_runs: int) -> tuple[str, list[dict[str, Any]]]:
    """Write the saved view into the copy `db`; return the experiment's id and the runs the
    views should show, in rel_l2 order: name and the values of the checked metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise CannotRun(f"no experiment {experiment!r} in the store (it has {names})")
    found = client.search_runs(
        [exp.experiment_id],
        filter_string="metrics.rel_l2 >= 0",
        order_by=["metrics.rel_l2 ASC"],
        max_results=n_runs,
    )
    runs = [
        {"name": r.info.run_name, **{m: r.data.metrics.get(m) for m in TABLE_METRICS}}
        for r in found
    ]
    if not runs:
        raise CannotRun(f"experiment {experiment!r} has no run with a rel_l2 to compare")
    now = int(time.time() * 1000)
    saved = {
        "name": VIEW_NAME,
        "createdAt": now,
        "updatedAt": now,
        "state": json.dumps(view_state()),
    }
    client.set_experiment_tag(
        exp.experiment_id, f"mlflow.sharedViewState.{VIEW_ID}", json.dumps(saved)
    )
    return exp.experiment_id, runs


# --- the UI ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """End a process started in its own session and everything it started (the MLflow UI
    starts uvicorn workers and job consumers; Chromium its helpers)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.poll()


@contextlib.contextmanager
def serve(db: Path, artifacts: Path, port: int, log: Path, timeout: float) -> Iterator[str]:
    """`make ui`'s command on `db`; yields the UI's address once it answers."""
    cmd = [
        str(BIN / "mlflow"),
        "ui",
        "--backend-store-uri",
        f"sqlite:///{db}",
        "--default-artifact-root",
        str(artifacts),
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    say(f"starting the UI: mlflow ui ... --port {port} (log: {log})")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}  # as the Makefile exports
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise CannotRun(f"the UI exited ({proc.returncode}) before answering:\n{tail}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > end:
                raise CannotRun(f"the UI did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


class Browser:
    """Headless Chromium over the DevTools protocol on a pipe: Chromium reads commands on its
    fd 3 and writes replies on fd 4, each a JSON object ended by a NUL byte."""

    def __init__(
        self, exe: str, width: int, height: int, profile: Path, sandbox: bool = True
    ) -> None:
        cmd_r, self._w = os.pipe()
        self._r, res_w = os.pipe()
        # Above 4, so that the child's dup2 onto 3 and 4 cannot overwrite one of them.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (cmd_r, res_w)]
        os.close(cmd_r)
        os.close(res_w)

        def pipe_fds() -> None:  # in the child, before exec: dup2'd fds stay open across it
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        args = [
            exe,
            "--headless",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "--no-first-run",
            "--no-default-browser-check",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
        ]
        if not sandbox or os.geteuid() == 0:  # as root Chromium refuses to start sandboxed
            args.append("--no-sandbox")
        self.proc = subprocess.Popen(
            [*args, "about:blank"],
            preexec_fn=pipe_fds,
            close_fds=False,  # only inheritable fds pass, i.e. 0-4: os.pipe's are not
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for fd in ends:
            os.close(fd)
        self._buf = b""
        self._id = 0
        self._session: str | None = None
        try:
            pages = [
                t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page"
            ]
            if not pages:
                raise CannotRun("Chromium opened no page")
            attached = self.send(
                "Target.attachToTarget", targetId=pages[0]["targetId"], flatten=True
            )
            self._session = attached["sessionId"]
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except (OSError, RuntimeError, TimeoutError) as e:
            self.close()
            hint = " (without its sandbox: --no-sandbox)" if sandbox else ""
            raise CannotRun(f"Chromium ({exe}) did not start{hint}: {e}") from e

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self._session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:  # anything else is an event
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} within {timeout:.0f} s")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buf += chunk

    def js(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    def open(self, url: str, timeout: float = 30.0) -> None:
        """Load `url` as a new document (through about:blank, so that a hash route is not
        taken as a navigation within the previous page)."""
        for target in ("about:blank", url):
            self.send("Page.navigate", url=target)
            blank = "true" if target == "about:blank" else "false"
            ready = f"(location.href === 'about:blank') === {blank} && document.readyState"
            end = time.monotonic() + timeout
            while self.js(ready) != "complete":
                if time.monotonic() > end:
                    raise CannotRun(f"{target} did not load within {timeout:.0f} s")
                time.sleep(0.1)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close", timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        stop_group(self.proc, grace=2)
        for fd in (self._w, self._r):
            with contextlib.suppress(OSError):
                os.close(fd)


# --- the checks -----------------------------------------------------------------------------

TABLE_JS = """(() => {
  const rows = {};
  for (const row of document.querySelectorAll('.ag-row[row-index]')) {
    const i = row.getAttribute('row-index');  // the pinned and the scrolled part of a row
    rows[i] = (rows[i] || '') + ' \\t ' + row.innerText.replace(/\\s+/g, ' ');
  }
  const headers = [...document.querySelectorAll('.ag-header-cell')].map(h => h.innerText.trim());
  return {rows, headers};
})()"""

CHARTS_JS = """(() => [...document.querySelectorAll(
    '[data-testid="experiment-view-compare-runs-card"]')].map(card => ({
  title: (card.querySelector('h4') || {}).textContent || '',
  plots: card.querySelectorAll('.main-svg').length,
  text: card.textContent,
})))()"""


def check_table(page: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """What the runs table lacks: a column, a run's row with its values, the rel_l2 order.
    Each run's values are looked for as the page writes them (`shown`, JavaScript's String)."""
    problems = []
    for name in (*TABLE_METRICS, *TABLE_TAGS):
        if name not in page["headers"]:
            problems.append(f"no column {name!r} (columns: {page['headers']})")
    rows = {int(i): text for i, text in page["rows"].items()}
    used: list[int] = []
    for run in runs:
        want = [f" {run['name']} ", *(run["shown"][m] for m in ("rel_l2", "train_seconds"))]
        match = [i for i in sorted(rows) if i not in used and all(w in rows[i] for w in want)]
        if not match:
            problems.append(f"no row shows run {run['name']} with {want[1:]}")
        else:
            used.append(match[0])
    if not problems and used != sorted(used):
        problems.append(f"rows not sorted by rel_l2: the runs in rel_l2 order are rows {used}")
    return problems


def check_charts(cards: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """What the chart view lacks: a chart, its plot, a run in its legend."""
    problems = []
    titles = [c["title"] for c in cards]
    for key in (CURVE, *BARS):
        card = next((c for c in cards if c["title"] == key), None)
        if card is None:
            problems.append(f"no chart {key!r} (charts: {titles})")
            continue
        if not card["plots"]:
            problems.append(f"chart {key!r} has no plot drawn")
        missing = [r["name"] for r in runs if r["name"] not in card["text"]]
        if missing:
            problems.append(f"chart {key!r} does not list runs {missing}")
    return problems


def look(
    browser: Browser,
    url: str,
    probe: str,
    check: Callable[[Any], list[str]],
    name: str,
    out: Path,
    timeout: float,
) -> None:
    """Open a view, wait until `check` finds nothing missing (or `timeout`), screenshot it."""
    say(f"{name}: {url}")
    browser.open(url)
    end = time.monotonic() + timeout
    while True:
        problems = check(browser.js(probe))
        if not problems or time.monotonic() > end:
            break
        time.sleep(0.5)
    if not problems:
        time.sleep(1.0)  # the charts' last transitions
    browser.screenshot(out / f"{name}.png")
    say(f"{name}: saved {out / f'{name}.png'}")
    if problems:
        (out / f"{name}.html").write_text(browser.js("document.documentElement.outerHTML"))
        raise CheckFailed(
            f"{name} view after {timeout:.0f} s (page kept as {out / f'{name}.html'}):\n  "
            + "\n  ".join(problems)
        )


def show_views(
    browser: Browser, ui: str, exp_id: str, runs: list[dict[str, Any]], out: Path, timeout: float
) -> list[str]:
    """Open, check and screenshot both views; what each lacks, if anything."""
    values = json.dumps([[r["rel_l2"], r["train_seconds"]] for r in runs])
    shown = browser.js(f"{values}.map(v => v.map(String))")  # as the page writes them
    for run, (rel_l2, seconds) in zip(runs, shown):
        run["shown"] = {"rel_l2": rel_l2, "train_seconds": seconds}
    # A user closes the assistant panel once; the UI then remembers it (in localStorage).
    browser.open(f"{ui}/health")
    browser.js(
        "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
        "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false')"
    )
    view = f"{ui}/#/experiments/{exp_id}/runs?viewStateShareKey={VIEW_ID}"
    view += "&workflowType=machine_learning"
    failures = []
    for name, url, probe, check in (
        ("table", view, TABLE_JS, check_table),
        ("charts", f"{view}&compareRunsMode=CHART", CHARTS_JS, check_charts),
    ):
        try:
            look(browser, url, probe, functools.partial(check, runs=runs), name, out, timeout)
        except CheckFailed as e:
            failures.append(str(e))
    return failures


def run_checks(args: argparse.Namespace) -> None:
    exe = shutil.which(args.chromium or "chromium")
    if not exe:
        raise CannotRun(
            f"no browser {args.chromium!r}"
            if args.chromium
            else "no `chromium` on PATH "
            "(Debian: apt-get install chromium; elsewhere pass --chromium PATH)"
        )
    store = args.store.resolve()
    if args.grid and not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        make_grid(store)
    if not store.is_file():
        raise CannotRun(f"no store at {store} (`--grid` makes one with a small grid)")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    artifacts = (args.artifacts or store.parent / "mlartifacts").resolve()
    with tempfile.TemporaryDirectory(prefix="ui-check-") as tmp:
        db = Path(tmp) / "mlflow.db"
        copy_store(store, db)
        exp_id, runs = prepare(db, args.experiment, max(1, min(args.runs, 10)))
        say(f"comparing {len(runs)} runs of experiment {args.experiment!r} (id {exp_id})")
        with serve(
            db, artifacts, args.port or free_port(), out / "mlflow-ui.log", args.start_timeout
        ) as ui:
            profile = Path(tmp) / "profile"
            browser = Browser(exe, args.width, args.height, profile, not args.no_sandbox)
            try:
                failures = show_views(browser, ui, exp_id, runs, out, args.timeout)
            finally:
                browser.close()
    if failures:
        raise CheckFailed("\n".join(failures))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--store", type=Path, required=True, help="the SQLite file of an MLflow store")
    p.add_argument("--out", type=Path, default=Path("results/ui-check"), help="screenshots go here")
    p.add_argument(
        "--grid", action="store_true", help="make --store with a small grid when missing"
    )
    p.add_argument("--port", type=int, default=0, help="the UI's port (default: a free one)")
    p.add_argument("--artifacts", type=Path, help="artifact root (default: mlartifacts/ beside it)")
    p.add_argument("--experiment", default="physbench")
    p.add_argument("--runs", type=int, default=10, help="how many runs to compare (at most 10)")
    p.add_argument("--chromium", help="the browser (default: `chromium` on PATH)")
    p.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run Chromium without its sandbox (always as root; where the sandbox cannot start)",
    )
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=810)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for each view to show")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds for the UI to start")
    args = p.parse_args(argv)
    try:
        run_checks(args)
    except CannotRun as e:
        say(f"cannot check: {e}")
        return 2
    except CheckFailed as e:
        say(f"FAILED: {e}")
        return 1
    say("ok: both views show every compared run and the metrics rel_l2 and train_seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
