"""The Bokeh document of dtune's dashboard: built per browser session, fed from the store.

Every second the page's :class:`TrialFeed` asks the store only for trials that may have
changed (numbered from the oldest unfinished one on), then *streams* new rows and
*patches* changed ones into the page's data sources, so an update costs what changed,
not the size of the study.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, gridplot
from bokeh.models import (
    ColumnDataSource,
    DataTable,
    Div,
    FactorRange,
    HoverTool,
    NumberFormatter,
    TableColumn,
    TabPanel,
    Tabs,
)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.transform import linear_cmap

from dtune.space import SearchSpace
from dtune.stats import utilization
from dtune.storage import BaseStorage
from dtune.trial import Trial, TrialState

__all__ = ["TrialFeed", "build_document"]

_UPDATE_MS = 1000
_STATE_LINE = {
    "FAILED": "crimson",
    "INTERRUPTED": "#888888",
    "PRUNED": "darkorange",
    "PAUSED": "goldenrod",
    "RUNNING": "#333333",
}
_CURVE_COLOR = {
    "COMPLETE": "steelblue",
    "PRUNED": "darkorange",
    "PAUSED": "goldenrod",
    "FAILED": "crimson",
}


class TrialFeed:
    """The trials of one study, read incrementally from its store."""

    def __init__(self, storage: BaseStorage, study: str) -> None:
        self.storage = storage
        self.study = study
        self.trials: dict[int, Trial] = {}

    def poll(self) -> tuple[list[Trial], list[Trial]]:
        """(new trials, trials whose record changed) since the last poll."""
        open_numbers = [n for n, t in self.trials.items() if not t.state.is_finished()]
        start = min(open_numbers, default=max(self.trials, default=-1) + 1)
        new, changed = [], []
        for trial in self.storage.get_trials(self.study, from_number=start):
            known = self.trials.get(trial.number)
            if known is None:
                new.append(trial)
            elif known != trial:
                changed.append(trial)
            self.trials[trial.number] = trial
        return new, changed


def _ms(seconds: float | None) -> float:
    return math.nan if seconds is None else seconds * 1000.0


def _summary(error: str | None) -> str:
    lines = (error or "").strip().splitlines()
    return lines[-1][:200] if lines else ""


class _Page:
    """One browser session's view of a study."""

    def __init__(
        self,
        doc: Document,
        storage: BaseStorage,
        study: str,
        dask_dashboard: str | None,
    ) -> None:
        record = storage.get_study(study)
        if record is None:
            raise ValueError(f"no study named {study!r} in {storage!r}")
        self.doc = doc
        self.name = study
        self.direction = record.direction
        self.key = record.objective_key or "value"
        self.space = SearchSpace.from_json(record.space)
        self.dask_dashboard = dask_dashboard
        self.feed = TrialFeed(storage, study)
        self.index: dict[int, int] = {}  # trial number → row in self.trials
        self.best: float | None = None
        self.n_finished = 0
        self._build()

    # -- layout ---------------------------------------------------------------------------

    def _build(self) -> None:
        params: dict[str, list[Any]] = {f"p_{n}": [] for n in self.space.names}
        self.trials = ColumnDataSource(
            {
                "number": [],
                "state": [],
                "value": [],
                "duration": [],
                "worker": [],
                "device": [],
                "error": [],
                "start": [],
                "end": [],
                "line": [],
                "width": [],
                **params,
            },
            name="dtune-trials",
        )
        self.curves = ColumnDataSource(
            {"xs": [], "ys": [], "number": [], "state": [], "color": [], "x": [], "y": []},
            name="dtune-curves",
        )
        self.curve_index: dict[int, int] = {}  # trial number → row in self.curves
        self.progress = ColumnDataSource(
            {"n": [], "when": [], "value": [], "best": [], "number": []}, name="dtune-progress"
        )
        self.done = ColumnDataSource(
            {"value": [], "number": [], **{n: [] for n in self.space.names}}, name="dtune-done"
        )
        palette = list(Viridis256) if self.direction == "maximize" else list(Viridis256)[::-1]
        self.colors = linear_cmap("value", palette, 0.0, 1.0, nan_color="#d9d9d9")
        self.header = Div(text="", name="dtune-header", sizing_mode="stretch_width")
        self.details = Div(
            text="<i>click a trial in the table for its details</i>",
            sizing_mode="stretch_width",
            name="dtune-details",
        )
        layout = column(
            self.header,
            Tabs(
                tabs=[
                    TabPanel(child=self._convergence(by="n"), title="by trial"),
                    TabPanel(child=self._convergence(by="when"), title="by time"),
                ],
                sizing_mode="stretch_width",
            ),
            self._timeline(),
            self._learning_curves(),
            self._parameters(),
            self._table(),
            self.details,
            sizing_mode="stretch_width",
        )
        self.doc.add_root(layout)
        self.doc.title = f"dtune: {self.name}"
        self.update()
        self.doc.add_periodic_callback(self.update, _UPDATE_MS)

    def _convergence(self, by: str) -> Any:
        fig = figure(
            height=280,
            sizing_mode="stretch_width",
            x_axis_type="datetime" if by == "when" else "linear",
            x_axis_label="finished at" if by == "when" else "trials finished",
            y_axis_label=self.key,
            tools="pan,box_zoom,wheel_zoom,reset,save",
            name=f"dtune-convergence-{by}",
        )
        fig.scatter(by, "value", source=self.progress, size=6, alpha=0.6, legend_label="trial")
        fig.step(
            by,
            "best",
            source=self.progress,
            mode="after",
            line_width=2,
            color="crimson",
            legend_label=f"best so far ({self.direction})",
        )
        fig.add_tools(HoverTool(tooltips=[("trial", "@number"), (self.key, "@value")]))
        fig.legend.location = "top_right"
        return fig

    def _timeline(self) -> Any:
        fig = figure(
            height=260,
            sizing_mode="stretch_width",
            x_axis_type="datetime",
            y_range=FactorRange(factors=[]),
            title="workers: one bar per trial, from start to finish (gaps are idle time)",
            tools="xpan,xwheel_zoom,reset,save",
            name="dtune-timeline",
        )
        fig.hbar(
            y="worker",
            left="start",
            right="end",
            height=0.7,
            source=self.trials,
            fill_color=self.colors,
            line_color="line",
            line_width="width",
        )
        fig.add_tools(
            HoverTool(
                tooltips=[
                    ("trial", "@number (@state)"),
                    (self.key, "@value"),
                    ("device", "@device"),
                    ("seconds", "@duration{0.0}"),
                    ("error", "@error"),
                ]
            )
        )
        self.timeline = fig
        return fig

    def _learning_curves(self) -> Any:
        fig = figure(
            height=260,
            sizing_mode="stretch_width",
            title="learning curves: the values trials reported, by step (orange: pruned, "
            "stopped where the cross is; gold: paused, may go on; blue: complete; black: "
            "running)",
            x_axis_label="step",
            y_axis_label=self.key,
            tools="pan,wheel_zoom,box_zoom,reset,save",
            name="dtune-learning-curves",
        )
        fig.multi_line(xs="xs", ys="ys", line_color="color", line_alpha=0.6, source=self.curves)
        fig.scatter(x="x", y="y", marker="x", size=7, color="color", source=self.curves)
        fig.add_tools(HoverTool(tooltips=[("trial", "@number (@state)")]))
        return fig

    def _curve(self, t: Trial) -> dict[str, Any]:
        steps = [r.step for r in t.reports]
        values = [r.value for r in t.reports]
        return {
            "xs": steps,
            "ys": values,
            "number": t.number,
            "state": t.state.value,
            "color": _CURVE_COLOR.get(t.state.value, "#333333"),
            "x": steps[-1],
            "y": values[-1],
        }

    def _update_curves(self, trials: Sequence[Trial]) -> None:
        new: list[dict[str, Any]] = []
        patches: dict[str, list[tuple[int, Any]]] = {}
        for t in trials:
            if not t.reports:
                continue
            row = self._curve(t)
            if t.number in self.curve_index:
                for k, v in row.items():
                    patches.setdefault(k, []).append((self.curve_index[t.number], v))
            else:
                self.curve_index[t.number] = len(self.curves.data["number"]) + len(new)
                new.append(row)
        if new:
            self.curves.stream({k: [r[k] for r in new] for k in new[0]})
        if patches:
            self.curves.patch(patches)

    def _parameters(self) -> Any:
        figs = []
        for name, dim in zip(self.space.names, self.space.dimensions, strict=True):
            categorical = hasattr(dim, "categories")
            log = getattr(dim, "prior", None) == "log-uniform"
            ranges = {"x_range": [str(c) for c in dim.categories]} if categorical else {}
            fig = figure(
                height=220,
                width=300,
                title=name,
                **ranges,
                x_axis_type="log" if log else "auto",
                y_axis_label=self.key,
                tools="pan,box_zoom,reset",
                name=f"dtune-param-{name}",
            )
            fig.scatter(
                name,
                "value",
                source=self.done,
                size=6,
                alpha=0.7,
                fill_color=self.colors,
                line_color=None,
            )
            figs.append(fig)
        return gridplot(figs, ncols=4, toolbar_location=None)

    def _table(self) -> DataTable:
        number = NumberFormatter(format="0.[000000]")
        columns = [
            TableColumn(field="number", title="#", width=50),
            TableColumn(field="state", title="state", width=90),
            TableColumn(field="value", title=self.key, formatter=number),
            *[TableColumn(field=f"p_{n}", title=n) for n in self.space.names],
            TableColumn(field="duration", title="seconds", formatter=NumberFormatter(format="0.0")),
            TableColumn(field="worker", title="worker"),
            TableColumn(field="device", title="device", width=60),
            TableColumn(field="error", title="error", width=300),
        ]
        table = DataTable(
            source=self.trials,
            columns=columns,
            height=320,
            sizing_mode="stretch_width",
            sortable=True,
            index_position=None,
            name="dtune-table",
        )
        self.trials.selected.on_change("indices", self._show_details)
        return table

    # -- updates ----------------------------------------------------------------------------

    def _row(self, t: Trial, now: float) -> dict[str, Any]:
        end = (
            t.finished
            if t.finished is not None
            else (now if t.state is TrialState.RUNNING else None)
        )
        return {
            "number": t.number,
            "state": t.state.value,
            "value": math.nan if t.value is None else t.value,
            "duration": math.nan if t.duration is None else t.duration,
            "worker": t.worker or "(not started)",
            "device": t.device or "",
            "error": _summary(t.error),
            "start": _ms(t.started if t.started is not None else t.submitted),
            "end": _ms(end),
            "line": _STATE_LINE.get(t.state.value, "white"),
            "width": 2.5 if t.state is TrialState.FAILED else 1.0,
            **{f"p_{k}": v for k, v in t.params.items()},
        }

    def update(self) -> None:
        now = time.time()
        new, changed = self.feed.poll()
        if new:
            rows = [self._row(t, now) for t in new]
            start = len(self.trials.data["number"])
            for i, t in enumerate(new):
                self.index[t.number] = start + i
            self.trials.stream({k: [r[k] for r in rows] for k in rows[0]})
        patches: dict[str, list[tuple[int, Any]]] = {}
        for t in changed:
            for k, v in self._row(t, now).items():
                patches.setdefault(k, []).append((self.index[t.number], v))
        running = [n for n, t in self.feed.trials.items() if t.state is TrialState.RUNNING]
        if running:  # their bars grow until they finish
            ends = dict(patches.get("end", []))
            ends.update((self.index[n], now * 1000.0) for n in running)
            patches["end"] = list(ends.items())
        if patches:
            self.trials.patch(patches)
        finished = sorted(
            (t for t in [*new, *changed] if t.state.is_finished() and t.finished is not None),
            key=lambda t: t.finished or 0.0,
        )
        self._stream_finished(finished)
        self._update_curves([*new, *changed])
        self._update_ranges(new)
        self.header.text = self._header_html(now)

    def _stream_finished(self, finished: Sequence[Trial]) -> None:
        progress: dict[str, list[Any]] = {k: [] for k in self.progress.data}
        done: dict[str, list[Any]] = {k: [] for k in self.done.data}
        sign = -1.0 if self.direction == "maximize" else 1.0
        for t in finished:
            self.n_finished += 1
            if t.value is None or t.state is not TrialState.COMPLETE:
                continue  # a pruned trial's value is not a final one
            if self.best is None or sign * t.value < sign * self.best:
                self.best = t.value
            progress["n"].append(self.n_finished)
            progress["when"].append(_ms(t.finished))
            progress["value"].append(t.value)
            progress["best"].append(self.best)
            progress["number"].append(t.number)
            done["value"].append(t.value)
            done["number"].append(t.number)
            for k, v in t.params.items():
                done[k].append(str(v) if isinstance(v, str) else v)
        if progress["n"]:
            self.progress.stream(progress)
            self.done.stream(done)

    def _update_ranges(self, new: Sequence[Trial]) -> None:
        values = self.progress.data["value"]
        if len(values):
            low, high = float(np.min(values)), float(np.max(values))
            transform = self.colors["transform"]
            if (transform.low, transform.high) != (low, high):
                transform.low, transform.high = low, high if high > low else low + 1e-12
        workers = {str(t.worker or "(not started)") for t in self.feed.trials.values()}
        factors = sorted(workers)
        if list(self.timeline.y_range.factors) != factors:
            self.timeline.y_range.factors = factors
            self.timeline.height = max(160, 60 + 28 * len(factors))

    def _header_html(self, now: float) -> str:
        trials = list(self.feed.trials.values())
        n = {s: sum(t.state is s for t in trials) for s in TrialState}
        starts = [s for t in trials if (s := t.started or t.submitted) is not None]
        ends = [t.finished for t in trials if t.finished is not None]
        last = now if n[TrialState.RUNNING] or not ends else max(ends)
        elapsed = last - min(starts) if starts else 0.0
        finished = n[TrialState.COMPLETE] + n[TrialState.PRUNED] + n[TrialState.FAILED]
        counts = (
            f"{finished} finished · {n[TrialState.RUNNING]} running · "
            f"{n[TrialState.PRUNED]} pruned · {n[TrialState.FAILED]} failed · "
            f"{n[TrialState.INTERRUPTED]} interrupted"
        )
        if n[TrialState.PAUSED]:  # a promotion-type ASHA's
            counts += f" · {n[TrialState.PAUSED]} paused"
        parts = [
            f'<h2 style="margin:4px 0">dtune · {html.escape(self.name)}</h2>',
            f'<span class="dtune-counts">{counts}</span>',
            f" · utilization {utilization(trials):.2f} · elapsed {elapsed:.0f} s",
        ]
        if self.dask_dashboard:
            url = html.escape(self.dask_dashboard)
            parts.append(f' · <a href="{url}" target="_blank">Dask dashboard</a>')
        complete = [t for t in trials if t.state is TrialState.COMPLETE]
        if complete:
            sign = -1.0 if self.direction == "maximize" else 1.0
            top = min(complete, key=lambda t: sign * (t.value or 0.0))
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in top.params.items()
            )
            parts.append(
                f"<br><b>best {html.escape(self.key)}</b> {top.value:.6g} "
                f"(trial {top.number}: {html.escape(params)})"
            )
        return f'<div class="dtune-header">{"".join(parts)}</div>'

    def _show_details(self, attr: str, old: list[int], new: list[int]) -> None:
        if not new:
            return
        number = self.trials.data["number"][new[0]]
        t = self.feed.trials[int(number)]
        rows = [
            ("trial", t.number),
            ("state", t.state.value),
            (self.key, t.value),
            ("params", t.params),
            ("metrics", t.metrics),
            ("worker", t.worker),
            ("host", t.host),
            ("device", t.device),
            ("seconds", t.duration),
        ]
        body = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        error = f"<pre>{html.escape(t.error)}</pre>" if t.error else ""
        self.details.text = f'<table class="dtune-details">{body}</table>{error}'


def build_document(
    doc: Document, storage: BaseStorage, study: str, dask_dashboard: str | None = None
) -> None:
    """Fill ``doc`` with the dashboard of ``study`` (a Bokeh server app's handler)."""
    _Page(doc, storage, study, dask_dashboard)
