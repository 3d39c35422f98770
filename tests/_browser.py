"""A driver of MLflow 3.17's web UI in headless Chromium, for end-to-end tests.

Two parts:

* ``unavailable()`` / ``launch()``: Playwright's sync API on the system's Chromium;
  ``unavailable()`` names what is missing so that a test can ``pytest.skip`` it.
* ``Ui(page, base_url, shots)``: readers of the pages an rlx user looks at: the runs
  table (names, columns, groups, the chart view), a run's page (description,
  datasets, logged and registered models, system-metric charts) and a registered
  model's page. Each reader waits for what it reads (selectors, the run count, an
  ``until`` predicate) rather than sleeping, and a failure saves a screenshot and the
  page's HTML and names them in the AssertionError.

What the selectors rely on (MLflow 3.17's React UI): the runs table is an AG Grid whose
rows carry ``row-id``/``row-index`` and whose cells carry ``col-id`` (``attributes.`Run
Name```, ``params.`KEY```, ``metrics.`KEY```, ``tags.`KEY```); the footer reads "N
matching runs"; chart cards are ``[data-testid=experiment-view-compare-runs-card]`` with
an ``h4[title=METRIC KEY]`` and a legend "LABEL (KEY)"; a run's description is
``[data-testid=note-editor-preview-content]``.

The UI's own state (visible columns, grouping) lives in the browser's localStorage under
``MLflowLocalStorage-1.1-ExperimentPage-["<id>"]-ReactComponentState``, so every ``Ui``
(one browser context) starts from MLflow's defaults. A URL cannot carry columns or
grouping, except through a *shared view*: the experiment tag
``mlflow.sharedViewState.<KEY>`` (rlx saves two, see ``rlx.mlflow_views``) opened with
``?viewStateShareKey=<KEY>``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

# generous: MLflow's bundles are parsed anew on every page load, on two busy CI cores
TIMEOUT_S = float(os.environ.get("RLX_UI_TIMEOUT_S", "90"))
START_S = 240.0  # MLflow server start-up on two busy cores (as tests/test_ui.py)
STOP_S = 10.0  # SIGTERM grace for the server's group before SIGKILL
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 # without these Chromium's own connections are refused on a closed network
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # 127.0.0.1 must never go through an http_proxy of the environment
                 "--no-proxy-server"]
VIEWPORT = {"width": 1600, "height": 1000}
# MLflow Assistant's side panel opens itself on a first visit and takes a third of the width
_INIT_SCRIPT = ("try { localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                " localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true'); } catch (e) {}")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_KINDS = {"metric": ("metrics", "Metrics"), "param": ("params", "Parameters"), "tag": ("tags", "Tags")}
T = TypeVar("T")


# ---------------------------------------------------------------- browser


def chromium_path() -> Optional[str]:
    """The system's Chromium: ``chromium`` on PATH, else /usr/bin/chromium; None if neither."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def unavailable() -> Optional[str]:
    """Why no browser can be driven here (a reason for ``pytest.skip``), or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not installed ({exc}); pip install playwright"
    if chromium_path() is None:
        return "no chromium binary (neither `chromium` on PATH nor /usr/bin/chromium); apt-get install chromium"
    return None


@contextlib.contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium (``playwright.sync_api.Browser``), closed at exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
                                     timeout=TIMEOUT_S * 1000)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def ui(browser: Any, base_url: str, shots: Path) -> Iterator["Ui"]:
    """A fresh browser context (empty localStorage: MLflow's default columns, no grouping)
    and its one page, as a ``Ui``; failure screenshots go to ``shots``."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(_INIT_SCRIPT)
        context.set_default_timeout(TIMEOUT_S * 1000)
        yield Ui(context.new_page(), base_url, Path(shots))
    finally:
        context.close()


# ---------------------------------------------------------------- server


# ---------------------------------------------------------------- pages


@dataclass
class Row:
    """A row of the runs table: a run (``run_id``, ``name``) or a group (``group``, ``count``)."""
    index: int
    row_id: str
    name: Optional[str] = None
    run_id: Optional[str] = None
    group: Optional[str] = None
    count: Optional[int] = None
    cells: dict[str, str] = field(default_factory=dict)  # col-id -> text


@dataclass
class Group:
    name: str  # the tag's value
    count: int  # as the group row says
    runs: list[str]  # run names under it, in table order


@dataclass
class Chart:
    title: str  # the metric key (``h4[title]``)
    legend: list[str]  # legend labels without the " (KEY)" suffix: run names, or group values when grouped
    plotted: bool  # a Plotly plot is drawn in the card


@dataclass
class RunOverview:
    name: str
    description_text: str  # "" when the run has none
    description_html: str  # MLflow's markdown rendering (``<p><strong>KILLED</strong> ...``)
    datasets: list[tuple[str, str]]  # ("name (digest)", context) as "About this run" lists them
    tags: dict[str, str]
    registered_models: list[tuple[str, str]]  # (model name, "v1")
    logged_models: list[dict[str, str]]  # per row of "Logged models": name, status, registered
    logged_models_heading: int = -1  # N of the heading "Logged models (N)"; -1 if none is drawn
    loading: bool = False  # a part of the page still shows a skeleton (``[aria-busy=true]``)


class UiError(AssertionError):
    pass


_READ_ROWS = r"""() => {
  const rows = new Map();
  for (const r of document.querySelectorAll('.ag-row[row-id]')) {
    if (!r.closest('.ag-root')) continue;
    const id = r.getAttribute('row-id');
    let e = rows.get(id);
    if (!e) { e = {row_id: id, index: +r.getAttribute('row-index'), cells: {}}; rows.set(id, e); }
    for (const c of r.querySelectorAll('[role=gridcell][col-id]')) e.cells[c.getAttribute('col-id')] = (c.innerText || '').trim();
    // the run-name cell (col-id "attributes.`Run Name`" in the table view, a number in the chart view)
    const a = r.querySelector('a[href*="/runs/"]');
    if (a && (e.name === undefined || r.closest('.ag-pinned-left-cols-container'))) {
      e.name = a.textContent.trim();
      e.run_id = a.getAttribute('href').split('/runs/')[1].split(/[/?]/)[0];
    }
    const g = [...r.querySelectorAll('span[title]')].find(s => /^Group:/.test(s.textContent));
    if (g) {
      const n = g.parentElement.querySelector('[role=status]');
      e.group = g.getAttribute('title'); e.count = n ? +n.textContent.trim() : null;
    }
  }
  return [...rows.values()].sort((a, b) => a.index - b.index);
}"""

_MATCHING = re.compile(r"^\s*(\d+)\s+matching runs?\s*$")


class Ui:
    """Readers of MLflow's pages on one browser page. Methods that open a page reload it
    (a new document: nothing of the previous page can be read by mistake); the browser
    context's localStorage (columns, grouping) carries over, as for a user."""

    def __init__(self, page: Any, base_url: str, shots: Path) -> None:
        self.page, self.base, self.shots = page, base_url.rstrip("/"), Path(shots)
        self._n = itertools.count(1)

    # ------------------------------------------------------------ plumbing

    def url(self, fragment: str) -> str:
        return f"{self.base}/#/{fragment.lstrip('/')}"

    def open(self, fragment: str, *, responses: tuple[str, ...] = ()) -> None:
        """Loads ``#/fragment`` as a new document; with ``responses``, also waits until a
        request whose URL contains each of them has finished (the page's data is in)."""
        seen: list[str] = []

        def finished(request: Any) -> None:
            seen.append(request.url)

        self.page.goto("about:blank")
        self.page.on("requestfinished", finished)
        try:
            self.page.goto(self.url(fragment), wait_until="domcontentloaded")
            if responses:
                self.poll(lambda: [r for r in responses if not any(r in u for u in seen)], lambda left: not left,
                          "the page's requests")
        finally:
            self.page.remove_listener("requestfinished", finished)

    def screenshot(self, label: str) -> Path:
        """The page as it is now: PNG and HTML under ``shots``; returns the PNG's path."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{next(self._n):02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)[:60]}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path), timeout=15_000)
        with contextlib.suppress(Exception):
            path.with_suffix(".html").write_text(self.page.content())
        return path

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Any failure inside becomes a UiError naming ``what``, the URL and a screenshot."""
        try:
            yield
        except UiError:
            raise
        except Exception as exc:  # playwright's TimeoutError/Error, AssertionError, ...
            url = self.page.url
            shot = self.screenshot(what)
            raise UiError(f"{what}: {type(exc).__name__}: {str(exc).strip()[:1500]}\n"
                          f"  at {url}\n  screenshot: {shot} (and .html)") from exc

    def poll(self, read: Callable[[], T], until: Optional[Callable[[T], bool]], what: str,
             timeout_s: float = TIMEOUT_S) -> T:
        """``read()`` until ``until(value)`` holds (None: the first value); fails with the
        last value read. The UI fills in by parts, so a reader alone may be early."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = read()
            if until is None or until(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: condition not met in {timeout_s:.0f} s; last read: {value!r}")
            self.page.wait_for_timeout(250)  # a poll interval, not a guess at loading time

    # ------------------------------------------------------------ runs table

    def open_runs(self, experiment_id: str, *, chart: bool = False, view_key: Optional[str] = None) -> int:
        """The runs page of an experiment in the model-training view (table, or the chart
        view with ``chart``; a shared view with ``view_key``); waits until the footer
        says "N matching runs" and N run rows are drawn (at most 100: AG Grid's first
        page). Returns N."""
        query = {"workflowType": "machine_learning"}
        if chart:
            query["compareRunsMode"] = "CHART"
        if view_key:
            query["viewStateShareKey"] = view_key
        with self.step(f"open runs of experiment {experiment_id}"):
            # the footer says "0 matching runs" until the runs' search has answered
            self.open(f"experiments/{experiment_id}/runs?{urllib.parse.urlencode(query)}",
                      responses=("/mlflow/runs/search",))
            footer = self.page.get_by_text(_MATCHING).first
            last: list[tuple[int, int]] = []

            def read() -> tuple[int, int]:
                m = _MATCHING.match(footer.inner_text()) if footer.count() else None
                n = int(m.group(1)) if m else -1
                return n, sum(r.run_id is not None for r in self.rows())

            def drawn(value: tuple[int, int]) -> bool:  # the footer's N rows, twice in a row
                n, runs = value
                ok = n >= 0 and runs >= min(n, 100) and last[-1:] == [value]
                last.append(value)
                return ok

            return self.poll(read, drawn, "the footer's count of runs drawn as rows")[0]

    def rows(self) -> list[Row]:
        """The runs table's rows as drawn now, in order (no waiting)."""
        return [Row(**r) for r in self.page.evaluate(_READ_ROWS)]

    def run_names(self, experiment_id: Optional[str] = None,
                  until: Optional[Callable[[list[str]], bool]] = None) -> list[str]:
        """The names of the runs in the table, top to bottom (opening it first when
        ``experiment_id`` is given)."""
        if experiment_id is not None:
            self.open_runs(experiment_id)
        with self.step("read run names"):
            return self.poll(lambda: [r.name for r in self.rows() if r.name is not None], until, "run names")

    def _has_header(self, col_id: str) -> bool:
        return self.page.evaluate("id => [...document.querySelectorAll('.ag-header-cell[col-id]')]"
                                  ".some(h => h.getAttribute('col-id') === id)", col_id)

    def _scroll_to_column(self, col_id: str) -> None:
        """AG Grid draws only the columns in view: scroll the table from its left edge to
        the right until the column's header is drawn."""
        if self._has_header(col_id):
            return
        for step in range(100):
            at_end = self.page.evaluate("""first => {
                const v = document.querySelector('.ag-body-horizontal-scroll-viewport');
                const c = document.querySelector('.ag-center-cols-viewport');
                if (!v) return true;
                const next = first ? 0 : v.scrollLeft + Math.max(200, v.clientWidth / 2);
                v.scrollLeft = next; if (c) c.scrollLeft = next;
                return v.scrollLeft + v.clientWidth >= v.scrollWidth - 1;
            }""", step == 0)
            with contextlib.suppress(Exception):
                self.page.wait_for_function(
                    "id => [...document.querySelectorAll('.ag-header-cell[col-id]')].some(h => h.getAttribute('col-id') === id)",
                    arg=col_id, timeout=1000)
                return
            if at_end and step > 0:
                break
        raise AssertionError(f"column {col_id} is not in the table (is it among the view's columns?)")

    def column_values(self, kind: str, key: str,
                      until: Optional[Callable[[dict[str, Optional[str]]], bool]] = None) -> dict[str, Optional[str]]:
        """{run name: cell text} of a shown metric/param/tag column ("-" where a run has
        none; None where the cell is not drawn, which the default ``until`` waits out)."""
        col_id = f"{_KINDS[kind][0]}.`{key}`"
        with self.step(f"read {kind} column {key}"):
            self._scroll_to_column(col_id)
            return self.poll(lambda: {r.name: r.cells.get(col_id) for r in self.rows() if r.name is not None},
                             until or (lambda v: bool(v) and None not in v.values()), f"values of {col_id}")

    def groups(self, until: Optional[Callable[[list[Group]], bool]] = None) -> list[Group]:
        """The group rows of a grouped table, in order, with the runs under each."""
        def read() -> list[Group]:
            out: list[Group] = []
            for r in self.rows():
                if r.group is not None:
                    out.append(Group(r.group, r.count if r.count is not None else -1, []))
                elif r.name is not None and out:
                    out[-1].runs.append(r.name)
            return out

        with self.step("read groups"):
            return self.poll(read, until, "groups")

    def chart(self, title: str, until: Optional[Callable[[Chart], bool]] = None) -> Chart:
        """The chart card titled ``title`` (a metric key) on the page (the runs page's
        chart view, or a run's metric tabs), scrolled into view and drawn."""
        with self.step(f"read chart {title}"):
            card = self.page.locator("[data-testid=experiment-view-compare-runs-card]").filter(
                has=self.page.locator(f"h4[title={json.dumps(title)}]")).first
            card.wait_for()
            card.scroll_into_view_if_needed()
            return self.poll(lambda: _read_chart(card, title), until or (lambda c: c.plotted and bool(c.legend)),
                             f"chart {title} drawn")

    def chart_titles(self, until: Optional[Callable[[list[str]], bool]] = None) -> list[str]:
        """The titles (metric keys) of the chart cards on the page."""
        with self.step("read chart titles"):
            cards = self.page.locator("[data-testid=experiment-view-compare-runs-card] h4[title]")
            return self.poll(lambda: [t for t in cards.evaluate_all("els => els.map(e => e.title)")],
                             until or bool, "chart cards")

    # ------------------------------------------------------------ run page

    def run_overview(self, experiment_id: str, run_id: str,
                     until: Optional[Callable[[RunOverview], bool]] = None) -> RunOverview:
        """A run's Overview tab: description (markdown), datasets, tags, registered
        models and the "Logged models" table."""
        with self.step(f"read overview of run {run_id}"):
            # the run, then its registered versions and (if it has any) logged models, each a
            # request of its own; the logged models' table is a skeleton until they are in
            self.open(f"experiments/{experiment_id}/runs/{run_id}",
                      responses=("/mlflow/model-versions/search",))
            self.page.get_by_text(run_id, exact=True).first.wait_for()  # "About this run": Run ID
            self.page.locator("h4", has_text=re.compile(r"^Description")).first.wait_for()
            return self.poll(self._read_overview, until or _overview_drawn, "run overview")

    def _read_overview(self) -> RunOverview:
        data = self.page.evaluate(r"""() => {
          const section = (title) => {
            const h = [...document.querySelectorAll('h4')].find(h => h.textContent.trim() === title);
            return h ? h.parentElement : null;
          };
          const note = document.querySelector('[data-testid=note-editor-preview-content]');
          const ds = section('Datasets');
          // an element's text split into its name and the trailing text of its status badge
          const badged = (el) => {
            const badge = el.querySelector('[role=status]');
            const tail = badge ? badge.textContent.trim() : '';
            const text = el.textContent.trim();
            return [tail && text.endsWith(tail) ? text.slice(0, -tail.length).trim() : text, tail];
          };
          const datasets = ds ? [...ds.querySelectorAll('[role=button]')].map(badged) : [];
          const tg = section('Tags');
          const tags = {};
          if (tg) for (const t of tg.querySelectorAll('[role=status][title]')) {
            const v = t.querySelector('span[title]:not([title="' + t.title.replace(/"/g, '\\"') + '"])');
            tags[t.title] = v ? v.title : '';
          }
          const rm = section('Registered models');
          const registered = rm ? [...rm.querySelectorAll('a[href*="#/models/"]')].map(badged) : [];
          const lh = [...document.querySelectorAll('h4')].find(h => /^Logged models/.test(h.textContent.trim()));
          const logged = [];
          const lm = lh ? /\((\d+)\)/.exec(lh.textContent) : null;
          if (lh) {
            let box = lh.parentElement;
            while (box && !box.querySelector('.ag-root')) box = box.parentElement;
            const rows = new Map();
            if (box) for (const r of box.querySelectorAll('.ag-row[row-id]')) {
              const e = rows.get(r.getAttribute('row-id')) || {};
              for (const c of r.querySelectorAll('[role=gridcell][col-id]')) e[c.getAttribute('col-id')] = (c.innerText || '').trim();
              rows.set(r.getAttribute('row-id'), e);
            }
            for (const e of rows.values()) logged.push({
              name: (e.name || '').replace(/^#[0-9a-f]{6}\s*/i, '').trim(),  // after the colour swatch
              status: e.status || '', registered: (e.registered_models || '').replace(/\s+/g, ' ')});
          }
          const title = document.querySelector('[data-testid=runs-header]');
          return {name: title ? title.textContent.trim() : '', description_text: note ? note.innerText.trim() : '',
                  description_html: note ? note.innerHTML : '', datasets, tags, registered_models: registered,
                  logged_models: logged, logged_models_heading: lm ? +lm[1] : -1,
                  loading: !!document.querySelector('main [aria-busy=true], [data-testid=entity-overview-container] [aria-busy=true]')};
        }""")
        return RunOverview(**{**data, "datasets": [tuple(d) for d in data["datasets"]],
                              "registered_models": [tuple(r) for r in data["registered_models"]]})

    def system_metric_charts(self, experiment_id: str, run_id: str,
                             until: Optional[Callable[[list[str]], bool]] = None) -> list[str]:
        """Opens the run's "System metrics" tab; returns its chart titles (the metric
        keys, e.g. ``system/cpu_utilization_percentage``); ``chart(key)`` reads one."""
        with self.step(f"open system metrics of run {run_id}"):
            self.open(f"experiments/{experiment_id}/runs/{run_id}")
            tab = self.page.get_by_role("tab", name="System metrics")
            tab.click()
            self.page.wait_for_url(re.compile(r"/system-metrics"))
        return self.chart_titles(until)

    # ------------------------------------------------------------ model registry

    def model_versions(self, name: str, until: Optional[Callable[[list[str]], bool]] = None) -> list[str]:
        """The versions ("1", "2", ...) listed on a registered model's page."""
        with self.step(f"read versions of registered model {name}"):
            self.open(f"models/{urllib.parse.quote(name, safe='')}")
            links = self.page.locator(f"a[href^={json.dumps('#/models/' + urllib.parse.quote(name, safe='') + '/versions/')}]")
            links.first.wait_for()
            return self.poll(lambda: [h.rsplit("/", 1)[1] for h in links.evaluate_all("els => els.map(e => e.getAttribute('href'))")],
                             until, f"versions of {name}")


def _overview_drawn(ov: RunOverview) -> bool:
    """The parts that arrive late are drawn: the rows of "Logged models (N)" with their
    cells (the grid adds a row before its cells' text: read then, a row is all ''), and every
    logged model that says it is registered is also in "Registered models"."""
    registered = {f"{n} {v}" for n, v in ov.registered_models}
    if ov.loading:
        return False
    if ov.logged_models_heading >= 0 and len(ov.logged_models) < ov.logged_models_heading:
        return False
    if any(not m["name"] for m in ov.logged_models):
        return False
    return all(not m["registered"] or m["registered"] in registered for m in ov.logged_models)


def _read_chart(card: Any, title: str) -> Chart:
    data = card.evaluate("""(card, key) => {
        const suffix = ' (' + key + ')';
        const legend = [...card.querySelectorAll('span')].map(s => s.textContent.trim())
            .filter(t => t.endsWith(suffix)).map(t => t.slice(0, -suffix.length));
        return {legend, plotted: !!card.querySelector('.js-plotly-plot .main-svg, svg.main-svg')};
    }""", title)
    return Chart(title, data["legend"], data["plotted"])
