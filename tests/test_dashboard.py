"""The live dashboard in a real headless Chromium, against a real store a real search is
writing to; and the static matplotlib plots.

What the page shows is read from the browser's own copy of the Bokeh document
(``Bokeh.documents[0]``): it changes only through the server's pushes over the websocket,
so a trial appearing there appeared without a reload. A screenshot of the page is saved
under ``test-artifacts/``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver

from dtune import Categorical, Integer, Real, Study, TrialState
from dtune.dashboard import serve_dashboard
from tests import objectives
from tests.conftest import headless_chromium

ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
SPACE = {
    "x": Real(0.0, 1.0),
    "lr": Real(1e-4, 1e-1, prior="log-uniform"),
    "units": Integer(8, 64),
    "act": Categorical(["relu", "tanh"]),
}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = headless_chromium()
    try:
        yield driver
    finally:
        driver.quit()


def _page(browser: webdriver.Chrome, script: str) -> Any:
    """Evaluate ``script`` with ``doc`` bound to the page's Bokeh document."""
    return browser.execute_script(
        "if (!window.Bokeh || !Bokeh.documents.length) return null;"
        "const doc = Bokeh.documents[0];"
        # a column of a ColumnDataSource, as an array
        "const col = (name, key) => {"
        "  const d = doc.get_model_by_name(name).data;"
        "  return Array.from(d instanceof Map ? d.get(key) : d[key]); };" + script
    )


def _wait_for(browser: webdriver.Chrome, script: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _page(browser, script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page never satisfied: {script}")


def _numbers_in_page(browser: webdriver.Chrome, state: str | None = None) -> set[int]:
    data = _page(
        browser,
        "return [col('dtune-trials', 'number'), col('dtune-trials', 'state')];",
    )
    return {int(n) for n, s in zip(*data, strict=True) if state is None or s == state}


def nap_four(x: float, lr: float, units: int, act: str) -> float:
    # 1-2 s: the search (32 trials on 4 workers) outlasts the page's load on a busy machine
    time.sleep(1.0 + 1.0 * x)
    return (x - 0.3) ** 2 + (0.1 if act == "tanh" else 0.0) + units / 640


def test_the_page_follows_a_running_search_without_reload(browser, client, tmp_path):
    store = tmp_path / "s.db"
    study = Study(SPACE, name="live", storage=store, random_state=0, n_initial_points=6)
    search = threading.Thread(
        target=study.optimize, args=(nap_four, 32), kwargs={"client": client, "progress": False}
    )
    search.start()
    try:
        while sum(t.state is TrialState.COMPLETE for t in study.trials) < 2:
            time.sleep(0.1)
        with serve_dashboard(store, "live") as server:
            assert server.url.startswith("http://127.0.0.1:")
            started = time.monotonic()
            browser.get(server.url)
            # every plot has been rendered into a view
            _wait_for(browser, "return Object.keys(Bokeh.index).length > 0")
            _wait_for(
                browser,
                "return col('dtune-trials', 'number').length > 0",
            )
            load_s = time.monotonic() - started
            seen = _numbers_in_page(browser, "COMPLETE")
            assert len(seen) >= 2
            # the search is still going: some trial shows RUNNING (a moment between a
            # result being recorded and its worker's next trial may show none)
            deadline = time.monotonic() + 30
            running_then = _numbers_in_page(browser, "RUNNING")
            while not running_then and time.monotonic() < deadline:
                time.sleep(0.1)
                running_then = _numbers_in_page(browser, "RUNNING")
            assert running_then
            # a trial that was running finishes: the page shows it without a reload
            _wait_for(
                browser,
                f"const watched = {sorted(running_then)};"
                "const n = col('dtune-trials', 'number'), s = col('dtune-trials', 'state');"
                "return watched.some(w => s[n.indexOf(w)] === 'COMPLETE');",
            )
            search.join(timeout=120)
            assert not search.is_alive()
            # ... and in the end it holds every trial, as the store does
            _wait_for(
                browser,
                "const s = col('dtune-trials', 'state');"
                "return s.length === 32 && s.every(x => x === 'COMPLETE');",
            )
            header = _page(browser, "return doc.get_model_by_name('dtune-header').text")
            assert "32 finished" in header
            best = study.best_trial
            assert f"trial {best.number}" in header
            progress_len = _page(browser, "return col('dtune-progress', 'n').length")
            assert progress_len == 32
            # clicking a trial (selecting its row) shows its details from the server
            _page(browser, "doc.get_model_by_name('dtune-trials').selected.indices = [3];")
            details = _wait_for(
                browser,
                "const t = doc.get_model_by_name('dtune-details').text;"
                "return t.includes('<th>trial</th>') ? t : null;",
            )
            number = _page(browser, "return col('dtune-trials', 'number')[3]")
            assert f"<td>{number}</td>" in details
            assert "worker" in details
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
            print(f"page load with data: {load_s:.2f} s")
    finally:
        search.join(timeout=120)


def test_optimize_serves_the_dashboard_while_it_runs(client, capsys):
    pages = []

    def fetch(study, trial):
        if not pages:
            url = re.search(r"dashboard at (http://\S+)", capsys.readouterr().out).group(1)
            pages.append(urllib.request.urlopen(url, timeout=30).read().decode())

    study = Study({"x": Real(0.0, 1.0)}, random_state=0)
    study.optimize(
        objectives.nap, 4, client=client, progress=False, dashboard=True, callbacks=[fetch]
    )
    assert "bokeh" in pages[0].lower()
    assert "dtune: study" in pages[0]


def test_dtune_dashboard_serves_a_store_file_until_stopped(tmp_path):
    store = tmp_path / "s.db"
    study = Study({"x": Real(0.0, 1.0)}, name="done", storage=store, random_state=0)
    for _ in range(3):
        t = study.ask()
        study.tell(t, t.params["x"])
    process = subprocess.Popen(
        [sys.executable, "-m", "dtune.cli", "dashboard", str(store), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", line).group(1)
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "dtune: done" in page
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_dashboard_arguments_are_checked(tmp_path):
    store = tmp_path / "s.db"
    Study({"x": Real(0.0, 1.0)}, name="a", storage=store)
    with pytest.raises(ValueError, match=r"no study named 'b'.*'a'"):
        serve_dashboard(store, "b")
    with pytest.raises(ValueError, match="must be True, False or a port"):
        Study({"x": Real(0.0, 1.0)}).optimize(objectives.nap, 1, dashboard="yes")


def test_static_plots_show_convergence_and_timeline(client):
    import matplotlib

    matplotlib.use("Agg")
    from dtune.plots import plot_convergence, plot_timeline

    study = Study({"x": Real(0.0, 10.0)}, objective_key="val_loss", random_state=0)
    study.optimize(
        objectives.sometimes_bad, 10, client=client, progress=False, max_consecutive_failures=None
    )
    ax = plot_convergence(study)
    complete = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert len(ax.collections[0].get_offsets()) == len(complete)
    ax = plot_timeline(study)
    assert len(ax.patches) == 10  # one bar per trial, failed ones included
    assert {t.get_text() for t in ax.get_yticklabels()} == {t.worker for t in study.trials}
    ARTIFACTS.mkdir(exist_ok=True)
    ax.figure.savefig(ARTIFACTS / "timeline.png")


@pytest.mark.parametrize("variant", ["stopping", "promotion"])
def test_the_page_draws_learning_curves_with_pruned_trials_stopped(
    browser, client, tmp_path, variant
):
    from dtune import ASHA

    store = tmp_path / "s.db"
    study = Study(
        {"x": Real(0.0, 1.0)}, name="curves", storage=store, random_state=0,
        n_initial_points=6, pruner=ASHA(1, 9, 3, variant),
    )  # fmt: skip
    study.optimize(objectives.learning_curve, 16, client=client, progress=False)
    state = TrialState.PRUNED if variant == "stopping" else TrialState.PAUSED
    pruned = {t.number: t.last_step for t in study.trials if t.state is state}
    assert pruned
    with serve_dashboard(store, "curves") as server:
        browser.get(server.url)
        _wait_for(browser, "return col('dtune-curves', 'number').length === 16")
        rows = _page(
            browser,
            "return [col('dtune-curves', 'number'), col('dtune-curves', 'state'),"
            " col('dtune-curves', 'x'), col('dtune-curves', 'xs').map(a => a.length)];",
        )
        shown = {int(n): (s, x, length) for n, s, x, length in zip(*rows, strict=True)}
        for number, step in pruned.items():
            assert shown[number] == (state.value, step, step)  # the line stops where it was
        assert all(x == 9 for s, x, _ in shown.values() if s == "COMPLETE")
        table = _numbers_in_page(browser, state.value)
        assert table == set(pruned)
        header = _page(browser, "return doc.get_model_by_name('dtune-header').text")
        assert f"{len(pruned)} {state.value.lower()}" in header.lower()
        browser.save_screenshot(str(ARTIFACTS / f"dashboard-curves-{variant}.png"))
