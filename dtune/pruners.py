"""Early-stopping rules: which running trials to stop after a report.

Pass one as ``Study(..., pruner=...)``. The driver asks it after each report that a
running trial sends with :func:`dtune.report`; a trial told to stop ends ``PRUNED`` and
its slot (its GPU) takes the next trial at once.

- :class:`ASHA`: asynchronous successive halving (Li et al. 2020). Stopping variant (the
  default): a trial that reaches a rung continues if its value is in the top
  ``1/reduction_factor`` of the values recorded at that rung so far; no trial waits for
  others. Promotion variant: every trial pauses at each rung (``PAUSED``), and a free
  worker runs on the best paused trial that ranks high enough before it starts a new
  one (:meth:`Pruner.promotion`). With a ``window``, a trial is ranked against the
  latest trials at its rung only. With an ``overhead`` (a run's start-up, in units of
  the resource; :func:`estimate_overhead` measures it) the rungs lie where a run's cost,
  start-up included, grows by η.
- :class:`Hyperband`: brackets of ASHA with different first rungs, so that some
  trials are never stopped early (a hedge against curves that cross); stopping or
  promotion variant, with or without a window, within each bracket.
- :class:`MedianStop`: stop a trial whose best value so far is worse than the median of
  the other trials' best values at the same step.

ASHA and Hyperband also name their rungs: the study's model is fitted on the values at
the highest rung that has enough of them (as BOHB does), so that a pruned trial's early
results still guide the search (:meth:`Pruner.rungs`). Only the reports that reach one
of a trial's rungs can stop it (:meth:`Pruner.stops_at`); its other reports are recorded
without holding it up. Once a rung has :data:`LOCAL_AFTER` values, its verdict is a
comparison with one number, the rung's cutoff (:meth:`Pruner.cutoffs`): the driver sends
the cutoffs to the workers whenever they change, and a trial reaching that rung is
judged where it runs, without a round trip to the driver.
"""

from __future__ import annotations

import abc
import bisect
import functools
import math
import numbers
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from dtune.trial import Trial, TrialState

__all__ = [
    "ASHA",
    "LOCAL_AFTER",
    "Hyperband",
    "MedianStop",
    "Pruner",
    "RungTable",
    "estimate_overhead",
    "pruner_from_json",
]

# A rung's cutoff goes to the workers once this many trials have a value there; until
# then a trial that reaches it waits for the driver's verdict (a cutoff over a handful of
# values moves with each new one, and trials that start together reach it together).
LOCAL_AFTER = 8


def _resource(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}={value!r} must be a positive number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive, finite number")
    return float(value) if not isinstance(value, numbers.Integral) else int(value)


def _check_resources(min_resource: Any, max_resource: Any, reduction_factor: Any) -> None:
    low = _resource(min_resource, "min_resource")
    high = _resource(max_resource, "max_resource")
    if low >= high:
        raise ValueError(
            f"min_resource={min_resource!r} must be smaller than max_resource={max_resource!r}"
        )
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, numbers.Real):
        raise TypeError(f"reduction_factor={reduction_factor!r} must be a number >= 2")
    if not math.isfinite(reduction_factor) or reduction_factor < 2:
        raise ValueError(f"reduction_factor={reduction_factor!r} must be >= 2")


def _check_overhead(overhead: Any) -> None:
    if isinstance(overhead, bool) or not isinstance(overhead, numbers.Real):
        raise TypeError(f"overhead={overhead!r} must be a number >= 0")
    if not math.isfinite(overhead) or overhead < 0:
        raise ValueError(f"overhead={overhead!r} must be a finite number >= 0")


def _ladder(low: float, high: float, eta: float, overhead: float = 0) -> list[float]:
    """The rungs below ``high``, then ``high``: ``low, low·η, low·η², …``, or with an
    ``overhead`` (a run's start-up, in units of resource) the resources whose cost
    ``overhead + r`` grows by η from rung to rung.

    >>> _ladder(1, 27, 3)
    [1.0, 3.0, 9.0, 27.0]
    >>> _ladder(1, 27, 3, overhead=5)  # costs 6, 18, then 32 (the top)
    [1.0, 13.0, 27.0]
    """
    rungs, cost = [], float(low) + overhead
    while cost - overhead < high * (1 - 1e-9):
        rungs.append(cost - overhead)
        cost *= eta
    return [*rungs, float(high)]


def value_at(trial: Trial, resource: float) -> float | None:
    """The value ``trial`` reported at its first step at or past ``resource``."""
    for report in trial.reports:
        if report.step >= resource:
            return report.value
    return None


class Pruner(abc.ABC):
    """An early-stopping rule (see the module's description)."""

    @abc.abstractmethod
    def should_stop(self, trial: Trial, trials: Sequence[Trial], minimize: bool) -> bool:
        """Whether ``trial``, which has just reported (its last report), should stop,
        given every trial of the study (``trial`` among them)."""

    def rungs(self) -> list[float] | None:
        """Resources at which trials are compared, lowest first (the last one the full
        resource); None if the rule has no rungs."""
        return None

    def stops_at(self, number: int) -> list[float] | None:
        """The resources at which this rule may stop trial ``number``: its report that
        first reaches one of them waits for the verdict, and any other goes on at once
        (:meth:`should_stop` must say False there). None: any report may stop it."""
        return None

    def group_of(self, number: int) -> int:
        """The group of trials that trial ``number`` is compared with (its Hyperband
        bracket; 0 for every trial of other rules)."""
        return 0

    #: Whether a stop is a pause: the trial ends ``PAUSED`` and may be promoted
    #: (:meth:`promotion`) to run on from where it paused.
    promotes = False

    def stops_for(self, trial: Trial) -> list[float] | None:
        """:meth:`stops_at` for the run of ``trial`` about to start: a promoted trial
        is not stopped again at the rungs it passed."""
        return self.stops_at(trial.number)

    def promotion(self, trials: Sequence[Trial], minimize: bool) -> int | None:
        """The number of a ``PAUSED`` trial to run on from where it paused, before a
        new configuration starts; None if none should be (or the rule never pauses)."""
        return None

    def cutoffs(
        self, trials: Sequence[Trial], minimize: bool
    ) -> dict[tuple[int, float], float] | None:
        """What lets a worker judge a report at a rung itself: for each (group, rung)
        with at least :data:`LOCAL_AFTER` values, the largest value, to minimize (the
        value times -1 when maximizing), with which a trial that reaches that rung now
        goes on; a larger one stops it, as :meth:`should_stop` would say. None: only
        the driver judges (the rule has no such cutoff). The driver keeps a
        :meth:`rung_table` instead, which gives the same without going over every trial."""
        table = self.rung_table(minimize)
        if table is None:
            return None
        for trial in trials:
            table.update(trial)
        return table.cutoffs()

    def rung_table(self, minimize: bool) -> RungTable | None:
        """An empty :class:`RungTable` for this rule, or None if it has no cutoffs."""
        return None

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The rule as JSON (kept with the study, so ``load_study`` restores it)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pruner) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        settings = self.to_json()
        kind = settings.pop("type")
        return f"{kind}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def _crossed(trial: Trial, ladder: Sequence[float]) -> int | None:
    """The highest rung below the top that ``trial``'s last report reached for the first
    time, or None."""
    if not trial.reports:
        return None
    step = trial.reports[-1].step
    before = trial.reports[-2].step if len(trial.reports) > 1 else -math.inf
    crossed = [k for k, r in enumerate(ladder[:-1]) if before < r <= step]
    return crossed[-1] if crossed else None


def _kept(n: int, fraction: float) -> int:
    """How many of ``n`` values are in their top ``fraction`` (at least one)."""
    return max(1, math.ceil(n * fraction))


def _in_top(value: float, others: Sequence[float], fraction: float) -> bool:
    """Whether ``value`` (to minimize) ranks in the top ``fraction`` of ``others`` and
    itself; the first at a rung always does, and ties count in its favour."""
    rank = sum(1 for v in others if v < value)
    return rank < _kept(len(others) + 1, fraction)


class RungTable:
    """The values at each (group, rung) below the top, kept sorted as trials report:
    the rungs' cutoffs (:meth:`Pruner.cutoffs`) then cost a look-up per rung, however
    many trials the study has. The driver keeps one per search and updates it with each
    trial whose reports change.

    Examples
    --------
    >>> from dtune.trial import Report
    >>> table = ASHA(1, 9, 3).rung_table(minimize=True)
    >>> for n in range(LOCAL_AFTER):
    ...     reports = (Report(1, float(n)), Report(3, float(n) / 2))
    ...     _ = table.update(Trial(number=n, state=TrialState.RUNNING, params={}, reports=reports))
    >>> table.cutoffs()  # 8 values at each rung: a newcomer is kept if among the best 3 of 9
    {(0, 1.0): 2.0, (0, 3.0): 1.0}
    """

    def __init__(self, pruner: _Rungs, minimize: bool) -> None:
        self._pruner = pruner
        self._sign = 1.0 if minimize else -1.0
        self._ladders = [ladder[:-1] for ladder in pruner._group_ladders()]
        self._fraction = 1.0 / pruner.reduction_factor
        self._window = pruner.window
        self._sorted: dict[tuple[int, float], list[float]] = {}
        self._of: dict[int, list[float]] = {}  # trial number -> its values, lowest rung first
        # With a window: the numbers of the trials at each rung, ascending.
        self._numbers: dict[tuple[int, float], list[int]] = {}

    def update(self, trial: Trial) -> bool:
        """Count ``trial`` as it stands now: a new report adds its values at the rungs
        it reached; a trial run again from the start (its reports dropped) loses the
        values of its earlier run. Whether any rung's values changed."""
        group = self._pruner.group_of(trial.number)
        rungs = self._ladders[group]
        values: list[float] = []
        for rung in rungs:
            value = value_at(trial, rung)
            if value is None:
                break  # steps increase: no higher rung either
            values.append(self._sign * value)
        old = self._of.get(trial.number, [])
        if values == old:
            return False
        for rung, value in zip(rungs, old, strict=False):
            at = self._sorted[(group, rung)]
            del at[bisect.bisect_left(at, value)]
            if self._window is not None:
                numbers = self._numbers[(group, rung)]
                del numbers[bisect.bisect_left(numbers, trial.number)]
        for rung, value in zip(rungs, values, strict=False):
            bisect.insort(self._sorted.setdefault((group, rung), []), value)
            if self._window is not None:
                bisect.insort(self._numbers.setdefault((group, rung), []), trial.number)
        self._of[trial.number] = values
        return True

    def _compared(self, key: tuple[int, float]) -> list[float]:
        """The values a trial reaching rung ``key`` is ranked against, ascending: all of
        them, or with a window, those of the latest trials (by number) there."""
        if self._window is None:
            return self._sorted[key]
        index = self._ladders[key[0]].index(key[1])
        return sorted(self._of[n][index] for n in self._numbers[key][-self._window :])

    def promotable(self, paused: Iterable[int]) -> int | None:
        """Of the ``paused`` trials, the one to promote (:meth:`Pruner.promotion`): at the
        highest rung (by resource, whatever the group) where one ranks among the top
        ⌊n/η⌋ of the n values of its group there, the best; None if none does. A look-up
        per paused trial."""
        best: dict[float, tuple[float, int]] = {}  # rung -> (value, number)
        for number in paused:
            values = self._of.get(number)
            if not values:
                continue
            k = len(values) - 1  # the rung it paused at
            group = self._pruner.group_of(number)
            rung = self._ladders[group][k]
            at = self._compared((group, rung))
            kept = int(len(at) // self._pruner.reduction_factor)
            if (
                kept
                and values[k] <= at[kept - 1]
                and (values[k], number) < best.get(rung, (math.inf, 0))
            ):
                best[rung] = (values[k], number)
        return best[max(best)][1] if best else None

    def cutoffs(self) -> dict[tuple[int, float], float]:
        """Per (group, rung) with at least :data:`LOCAL_AFTER` values, the largest value
        (to minimize) that :func:`_in_top` keeps against them: the m-th smallest, m being
        how many of them and a newcomer are kept."""
        cutoffs = {}
        for key, every in self._sorted.items():
            if len(every) >= LOCAL_AFTER:
                at = self._compared(key)
                m = _kept(len(at) + 1, self._fraction)
                cutoffs[key] = math.inf if m > len(at) else at[m - 1]
        return cutoffs


class _PauseTable(RungTable):
    """A promotion-type ASHA's :class:`RungTable`: every trial pauses at a rung it
    reaches, so a cutoff that no value passes lets the workers pause it at once."""

    def cutoffs(self) -> dict[tuple[int, float], float]:
        return {(g, rung): -math.inf for g, rungs in enumerate(self._ladders) for rung in rungs}


class _Rungs(Pruner):
    """A rule over rungs at ``min_resource·η^k`` up to ``max_resource``, in groups of
    trials with their own ladders (:meth:`group_of`), stopping or pausing trials."""

    def __init__(
        self,
        min_resource: float = 1,
        max_resource: float = 27,
        reduction_factor: float = 3,
        variant: str = "stopping",
        window: int | None = None,
        overhead: float = 0,
    ) -> None:
        _check_resources(min_resource, max_resource, reduction_factor)
        _check_overhead(overhead)
        if variant not in ("stopping", "promotion"):
            raise ValueError(f"variant={variant!r} must be 'stopping' or 'promotion'")
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, int) or window < 1
        ):
            raise ValueError(f"window={window!r} must be None or an int >= 1")
        self.min_resource = min_resource
        self.max_resource = max_resource
        self.reduction_factor = reduction_factor
        self.variant = variant
        self.promotes = variant == "promotion"
        self.window = window
        self.overhead = overhead
        self._ladder = _ladder(min_resource, max_resource, reduction_factor, overhead)

    def rungs(self) -> list[float]:
        return list(self._ladder)

    def stops_at(self, number: int) -> list[float] | None:
        return self._group_ladders()[self.group_of(number)][:-1]

    def _group_ladders(self) -> list[list[float]]:
        """Each group's rungs (one group: every trial on the same ladder)."""
        return [self._ladder]

    def should_stop(self, trial: Trial, trials: Sequence[Trial], minimize: bool) -> bool:
        group = self.group_of(trial.number)
        ladder = self._group_ladders()[group]
        if self.promotes:  # every rung below the top that the run reaches pauses it
            return _crossed(trial, ladder) is not None
        many = len(self._group_ladders()) > 1
        peers = [t for t in trials if self.group_of(t.number) == group] if many else trials
        return _rung_says_stop(trial, peers, ladder, self.reduction_factor, minimize, self.window)

    def stops_for(self, trial: Trial) -> list[float] | None:
        rungs = self.stops_at(trial.number)
        if not self.promotes or rungs is None:
            return rungs
        return [r for r in rungs if value_at(trial, r) is None]

    def promotion(self, trials: Sequence[Trial], minimize: bool) -> int | None:
        """The paused trial to promote (see :class:`ASHA`'s ``variant``), or None.

        >>> from dtune.trial import Report
        >>> def paused(n, value):
        ...     return Trial(number=n, state=TrialState.PAUSED, params={},
        ...                  reports=(Report(1, value),))
        >>> asha = ASHA(1, 9, 3, variant="promotion")
        >>> asha.promotion([paused(0, 0.5), paused(1, 0.2)], minimize=True) is None  # ⌊2/3⌋ = 0
        True
        >>> asha.promotion([paused(0, 0.5), paused(1, 0.2), paused(2, 0.9)], minimize=True)
        1
        """
        if not self.promotes:
            return None
        table = self.rung_table(minimize)
        for trial in trials:
            table.update(trial)
        return table.promotable(t.number for t in trials if t.state is TrialState.PAUSED)

    def rung_table(self, minimize: bool) -> RungTable:
        return _PauseTable(self, minimize) if self.promotes else RungTable(self, minimize)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "min_resource": self.min_resource,
            "max_resource": self.max_resource,
            "reduction_factor": self.reduction_factor,
            "variant": self.variant,
            "window": self.window,
            # Only when set: a study stored before there was an overhead compares equal.
            **({"overhead": self.overhead} if self.overhead else {}),
        }


class ASHA(_Rungs):
    """Asynchronous successive halving (Li et al. 2020), stopping or promotion variant.

    Parameters
    ----------
    min_resource
        The first rung: no trial stops before reporting this step.
    max_resource
        The full resource (the objective's ``epochs``, say); trials that get there
        complete.
    reduction_factor
        η ≥ 2: rungs lie at ``min_resource·η^k``.
    variant
        ``"stopping"`` (the default): a trial continues past a rung if it is in the top
        1/η of the values recorded there so far, and stops (``PRUNED``) otherwise.
        ``"promotion"``: every trial pauses at each rung below the top (``PAUSED``,
        :class:`dtune.TrialPaused`); a free worker first runs on the paused trial that
        ranks best among the top ⌊n/η⌋ of the n values at its rung, the highest rung
        first, and starts a new configuration only when no paused trial ranks there.
        A promoted trial runs again under its number, and goes on from its checkpoint
        (:func:`dtune.checkpoint_file`) or retrains from the start; only the rungs
        above the one it paused at stop it. Trials still paused when a search ends
        stay ``PAUSED``, and may be promoted when the study resumes.
    window
        None (the default): a trial is ranked against every value its rung has seen.
        A number: against the values of the latest ``window`` trials (by number) to
        reach the rung. As the model's proposals improve, the early, worse values of
        the initial design stop letting most of them through, and the cut stays at
        1/η of the trials of the recent past.
    overhead
        0 (the default): rungs lie at ``min_resource·η^k``. A number ≥ 0: what a run
        costs before its first step (building the model, loading data, TensorFlow's
        tracing), in units of the resource; the rungs then lie where a run's cost
        ``overhead + resource`` grows by η, so that each rung takes the same share of the
        budget as without a start-up. :func:`estimate_overhead` measures it from
        trials that have run. With a start-up of five epochs, a 1-epoch rung costs six
        and the next rung lies at 13 epochs (cost 18), not at 3 (cost 8).

    Examples
    --------
    >>> ASHA(1, 27, 3).rungs()
    [1.0, 3.0, 9.0, 27.0]
    >>> ASHA(1, 27, 3).stops_at(0)  # the reports that wait for a verdict
    [1.0, 3.0, 9.0]
    >>> ASHA(5, 2)
    Traceback (most recent call last):
    ...
    ValueError: min_resource=5 must be smaller than max_resource=2
    >>> ASHA(1, 9, 3, variant="promotion")
    ASHA(min_resource=1, max_resource=9, reduction_factor=3, variant='promotion', window=None)
    >>> ASHA(1, 27, 3, overhead=5).rungs()
    [1.0, 13.0, 27.0]
    """

    def __init__(
        self,
        min_resource: float = 1,
        max_resource: float = 27,
        reduction_factor: float = 3,
        variant: str = "stopping",
        window: int | None = None,
        overhead: float = 0,
    ) -> None:
        # Its own signature, so a wrong argument's error names ASHA, not the base class.
        super().__init__(min_resource, max_resource, reduction_factor, variant, window, overhead)


def _rung_says_stop(
    trial: Trial,
    trials: Sequence[Trial],
    ladder: Sequence[float],
    eta: float,
    minimize: bool,
    window: int | None = None,
) -> bool:
    k = _crossed(trial, ladder)
    if k is None:
        return False
    sign = 1.0 if minimize else -1.0
    value = sign * trial.reports[-1].value
    if window is not None:  # the latest by number (the driver's list is in that order)
        trials = sorted(trials, key=lambda t: t.number)
    others = []
    for other in trials:
        if other.number == trial.number:
            continue
        v = value_at(other, ladder[k])
        if v is not None:
            others.append(sign * v)
    if window is not None:
        others = others[-window:]
    return not _in_top(value, others, 1.0 / eta)


class Hyperband(_Rungs):
    """Asynchronous Hyperband: brackets of :class:`ASHA` whose first rungs are
    ``min_resource·η^b``; the last bracket runs every trial to ``max_resource``.

    Each trial's bracket follows from its number, drawn with the weights of synchronous
    Hyperband's bracket sizes, so a resumed study keeps every trial in its bracket.
    ``variant`` and ``window`` are :class:`ASHA`'s, within each bracket: with
    ``variant="promotion"`` a trial pauses at each of its bracket's rungs, and a free
    worker first runs on the paused trial that ranks best among the top ⌊n/η⌋ of its
    bracket's values at its rung, the highest rung (resource) first.

    Examples
    --------
    >>> hb = Hyperband(1, 9, 3)
    >>> hb.brackets()
    [[1.0, 3.0, 9.0], [3.0, 9.0], [9.0]]
    >>> hb.rungs()
    [1.0, 3.0, 9.0]
    >>> one_per_bracket = [next(n for n in range(99) if hb.bracket_of(n) == b) for b in range(3)]
    >>> [hb.stops_at(n) for n in one_per_bracket]  # the reports that wait for a verdict
    [[1.0, 3.0], [3.0], []]
    >>> Hyperband(1, 9, 3, variant="promotion", window=27)
    Hyperband(min_resource=1, max_resource=9, reduction_factor=3, variant='promotion', window=27)
    """

    def __init__(
        self,
        min_resource: float = 1,
        max_resource: float = 27,
        reduction_factor: float = 3,
        variant: str = "stopping",
        window: int | None = None,
        overhead: float = 0,
    ) -> None:
        # Its own signature, so a wrong argument's error names Hyperband, not the base class.
        super().__init__(min_resource, max_resource, reduction_factor, variant, window, overhead)

    @functools.cached_property
    def _brackets(self) -> list[list[float]]:
        """Each bracket's rungs: the full ladder from its b-th rung on."""
        return [self._ladder[b:] for b in range(len(self._ladder))]

    @functools.cached_property
    def _cumulative(self) -> list[float]:
        """The brackets' cumulative shares of the trials."""
        s_max, eta = len(self._ladder) - 1, self.reduction_factor
        # Synchronous Hyperband starts ⌈(s+1)/(s-b+1) · η^(s-b)⌉ configurations in bracket b.
        sizes = [
            math.ceil((s_max + 1) / (s_max - b + 1) * eta ** (s_max - b)) for b in range(s_max + 1)
        ]
        total = sum(sizes)
        return [sum(sizes[: b + 1]) / total for b in range(len(sizes))]

    def brackets(self) -> list[list[float]]:
        """Each bracket's rungs."""
        return [list(b) for b in self._brackets]

    def bracket_of(self, number: int) -> int:
        """The bracket of trial ``number``."""
        u = ((number * 2654435761 + 97) % 2**32) / 2**32  # a fixed scramble of the number
        last = len(self._cumulative) - 1
        return next(b for b, c in enumerate(self._cumulative) if u < c or b == last)

    def group_of(self, number: int) -> int:
        return self.bracket_of(number)

    def _group_ladders(self) -> list[list[float]]:
        return self._brackets


class MedianStop(Pruner):
    """Stop a trial whose best value so far is worse than the median of the other
    trials' best values up to the same step (the median stopping rule).

    Parameters
    ----------
    warmup_steps
        No trial stops at a step below this.
    min_trials
        The rule waits until this many other trials have reported that far.

    Examples
    --------
    >>> MedianStop(warmup_steps=2, min_trials=3)
    MedianStop(warmup_steps=2, min_trials=3)
    """

    def __init__(self, warmup_steps: int = 1, min_trials: int = 5) -> None:
        for name, value in (("warmup_steps", warmup_steps), ("min_trials", min_trials)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an int >= 0")
        self.warmup_steps = warmup_steps
        self.min_trials = min_trials

    def should_stop(self, trial: Trial, trials: Sequence[Trial], minimize: bool) -> bool:
        if not trial.reports:
            return False
        step = trial.reports[-1].step
        if step < self.warmup_steps:
            return False
        sign = 1.0 if minimize else -1.0
        best = min(sign * r.value for r in trial.reports)
        others = []
        for other in trials:
            if other.number == trial.number or not other.reports:
                continue
            if other.reports[-1].step < step and other.state is TrialState.RUNNING:
                continue  # not that far yet
            upto = [sign * r.value for r in other.reports if r.step <= step]
            if upto:
                others.append(min(upto))
        if len(others) < max(1, self.min_trials):
            return False
        return best > statistics.median(others)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "MedianStop",
            "warmup_steps": self.warmup_steps,
            "min_trials": self.min_trials,
        }


def estimate_overhead(trials: Iterable[Trial]) -> float | None:
    """A run's start-up in units of the resource (``overhead`` of :class:`ASHA` and
    :class:`Hyperband`), from the trials' report times. For each trial with two reports
    or more: the time from its run's start to its first report, counted in steps of
    the trial's own pace (between its first and last reports), less the first report's
    step. The median over those trials; None if no trial has two reports yet.

    Each trial's own pace is used, so slow and fast configurations both count. Trials
    that a promotion-type rule paused and promoted are left out (their last run starts
    from a checkpoint). ``started`` is taken on the worker and the reports' times on the
    driver, so on a cluster of several hosts their clocks must agree.

    >>> from dtune.trial import Report
    >>> t = Trial(number=0, state=TrialState.COMPLETE, params={}, started=100.0,
    ...           reports=(Report(1, 0.5, time=106.0), Report(2, 0.4, time=107.0),
    ...                    Report(3, 0.3, time=108.0)))
    >>> estimate_overhead([t])  # 6 s to step 1 at 1 s a step: 5 steps of start-up
    5.0
    """
    overheads = []
    for trial in trials:
        if trial.started is None or trial.earlier_s:
            continue  # a promoted trial's run starts at an unknown step
        times = [(r.step, r.time) for r in trial.reports if r.time is not None]
        if len(times) < 2 or times[-1][0] <= times[0][0]:
            continue
        (first_step, first), (last_step, last) = times[0], times[-1]
        per_step = (last - first) / (last_step - first_step)
        if per_step > 0:
            overheads.append(max(0.0, (first - trial.started) / per_step - first_step))
    return statistics.median(overheads) if overheads else None


def pruner_from_json(data: dict[str, Any] | None) -> Pruner | None:
    """The pruner :meth:`Pruner.to_json` described (None for None)."""
    if data is None:
        return None
    settings = dict(data)
    kinds = {"ASHA": ASHA, "Hyperband": Hyperband, "MedianStop": MedianStop}
    kind = settings.pop("type", None)
    if kind not in kinds:
        raise ValueError(f"unknown pruner type {kind!r}; known: {sorted(kinds)}")
    return kinds[kind](**settings)
