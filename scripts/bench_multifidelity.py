"""Early stopping at equal worker time: dtune without a pruner, with ASHA and with
Hyperband, random points with ASHA, ASHA with a joint model (``asha-joint``: one GP
over configuration and resource, ``resource_model="joint"``, as MOBSTER) and ASHA's
promotion variant (``asha-promotion``: trials pause at each rung and the best are
promoted, resuming as if from a checkpoint), Hyperband's (``hyperband-promotion``) and
ASHA ranking a trial against the latest 27 trials at its rung (``asha-window``;
``--window N`` sets every ASHA's and Hyperband's window), on
synthetic learning curves run by 8 workers of a local Dask cluster (the same cluster for
every method, one after the other).

Each trial "trains" for up to ``--epochs`` epochs. An epoch sleeps 0.5–1.5 × ``--epoch``
seconds (varying across the space, as in scripts/bench.py), then reports a value that
converges to the problem's value at that point (Branin, Hartmann6, the mixed space)::

    value(epoch) = f(x) + gap(x) · exp(-epoch / (speed(x) · epochs / 3))

``gap`` and ``speed`` vary across the space (a fixed scramble of the parameters), so
curves converge at different speeds and some cross: a good early value does not always
mean a good final one. So the last epoch's value still carries ``gap(x) · exp(-3 /
speed(x))`` above ``f(x)`` (``--curves leftover``, the default, as in runs 1-16 of
docs/PERFORMANCE.md). With ``--curves exact`` each curve is lowered by that leftover, so
it ends at ``f(x)`` itself, the known test function, and keeps its shape::

    value(epoch) = f(x) + gap(x) · (exp(-epoch / τ(x)) - exp(-epochs / τ(x)))

``--curves power`` draws curves of another family, power laws with the same ``gap`` and
``speed``, which fall most in their first epochs and keep falling slowly after (as deep
learning's often do), with a leftover at the end too::

    value(epoch) = f(x) + gap(x) · epoch^(-1 / speed(x))

A rule that predicts where a curve ends from its own first epochs fits one family
exactly by construction; judged on both, it shows whether it rests on knowing the
family.

``--startup E`` makes each run of a synthetic trial (a promoted one's again) first spend
``E`` mean epochs (``E × --epoch`` seconds) before its first report, whatever the
method, as a real run builds its model and loads its data first (the Keras digits' runs
pay 5-8 epochs' worth on this machine); ``--overhead`` places dtune's rungs for it.

Optuna (TPE with ``constant_liar``, and its SuccessiveHalving or Hyperband pruner) runs
on the same workers: one ``study.optimize`` per worker, sharing a journal-file storage
(``pip install -e ".[bench]"``; leave them out with ``--methods`` when Optuna is not
installed).

Ray Tune's ``ASHAScheduler`` with random search (``ray-random+asha``) runs on the same
machine with ``--workers`` trials at once, in Ray's own worker processes (with a wall-clock
budget only: ``--worker-budget`` does not apply to it). Ray is large and
in no extra: ``python -m venv ray-venv && ray-venv/bin/pip install -e . "ray[tune]" optuna``
and run this script with that Python.

Every method gets the same wall-clock budget on the same 8 workers (``--budget``
seconds; running trials then finish), so the same worker time give or take the tail
when every method keeps its workers equally busy. With ``--worker-budget W`` each search
stops starting trials once its finished trials have used ``W`` worker-seconds (dtune:
``Study.stop`` from a callback; Optuna: ``study.stop`` once the shared storage's trials
add up to it), so every method gets the same worker time whatever its utilization, and
``--budget`` is only a wall-clock cap. Reported, as medians over seeds:

- the regret of the best trial that ran to the full budget, at the worker-seconds every
  method of that seed reached (``regret@W``), and at the end;
- the worker-seconds each method needed to reach the regret dtune without a pruner
  reached at the end (``W to match``), and that over dtune-without's total;
- the same read off the medians instead of seed by seed (``÷ none's W, median curves``):
  where the method's median regret over the seeds, against worker-seconds, first reaches
  the median of dtune-without's final regrets, over the median of its totals. A seed's
  ratio rests on where that one full-budget search happened to end; this one rests on
  the seeds' medians;
- how firmly the seeds pin those two ratios: 90% percentile-bootstrap intervals over the
  seeds (each seed's full-budget search resampled with the method's), how many seeds
  meet issue 12's target (at most 1/3 of dtune-without's worker time, 1/2 on the Keras
  digits), and the share of resamples whose median meets it;
- trials started and pruned, utilization (busy worker-seconds over 8 × the wall time
  from the ``optimize`` call to the last result), and the same without the time trials
  spent in ``dtune.report`` (waiting for verdicts is busy time to Dask, not training);
- report-to-decision latency: from ``dtune.report`` being called to the trial knowing
  whether to go on (measured inside the objective), median, mean and p99 over the reports
  that can stop the trial (dtune: those reaching one of the trial's rungs; Optuna: every
  ``should_prune``), the share of dtune's that the worker judged itself by the rung's
  cutoff (those under 1 ms), and the mean time spent in a report over all reports;
- the share of dtune's points the driver drew without the model (``drawn without the
  model``: its fallback while the suggestion process is busy with a batch or a refit;
  none on simulated workers, whose clock waits for the model);
- the median regret of every method at budgets of 10%, 20%, … 100% of the worker time
  every method of the seed reached, and at how many of them dtune's ASHA and Hyperband
  are no worse than the best of the peers that ran (Optuna's, Ray's): issue 12 asks for
  that at every budget;
- on the synthetic problems, where the trials that stopped early would have ended (their
  curves are known) against the estimate the model is told of them, by the step they
  stopped at: the mean and root mean square of the error, and that in units of the
  deviation each rule would tell the model (the gains' spread, their root mean square).

``--save results.json`` writes every search's results after each search (a stopped run
keeps what it ran), with what they rest on besides the code: the commit, the numerical
libraries' versions, the BLAS kernel OpenBLAS picked for the CPU, and the command line.
``--from results.json …`` prints the tables of such files again, merged, with one line
per file saying what it ran on, and a warning when they ran on different numerical
libraries, BLAS kernels or CPUs: a simulated search repeats value for value only within
one (a last-bit difference in a GP fit sends it down another path), so compare methods
from the same machine and installation. ``--tag T`` names a run's methods ``METHOD@T``,
so that a run of another commit or setting reads beside this one's (``--from a.json
b.json``); two files that hold the same problem, method and seed are read with a warning,
the later file's search in the tables.

``--time-cutoffs 5000`` runs no search: it times the driver's rung cutoffs on that many
synthetic trials of 1, 3, 9 or 27 reports, computed afresh from every trial
(``Pruner.cutoffs``) against the ``RungTable`` the driver keeps (one trial's new report,
then the cutoffs), for ASHA and Hyperband.

``--simulated`` runs dtune's methods on simulated workers and a simulated clock
(:class:`dtune.sim.SimulatedCluster`) instead of a Dask cluster: the same driver, pruners
and model, every suggestion computed before the clock moves, every verdict at once, and
an epoch's seconds taken on the simulated clock, not slept. It measures the search alone,
without this machine's timing noise, so it can run many seeds (the budgets are then
simulated seconds; utilization is 1 but for the tail).

``--fresh`` starts a new cluster for each search and counts its utilization from the
cluster's start, as a user's first search meets it (workers start, import, load data).
``--problems keras-digits`` is the real workload (scripts/keras_digits.py): a small CNN on
scikit-learn's digits, TensorFlow on CPU, the validation error after each epoch; give it
minutes per search (``--budget 240``).

    python scripts/bench_multifidelity.py                                   # 3 problems, 3 seeds
    python scripts/bench_multifidelity.py --problems branin --seeds 1 --budget 10   # quick
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import functools
import hashlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench import MINIMUM, PROBLEMS, evaluate, space_of, suggest_stats
from keras_digits import KERAS, keras_epochs, keras_space, mark_epoch, warm

# How far an epoch-1 value lies above the final one, per problem (its value range).
GAP = {"branin": 5.0, "hartmann6": 0.3, "mixed": 0.1}
_HERE_MS = 1.0  # a decision this fast was made on the worker
# The budgets at which every method's median regret is compared: fractions of the worker
# time every method of a seed reached.
_BUDGETS = tuple(k / 10 for k in range(1, 11))
METHODS = (
    "none",
    "asha",
    "hyperband",
    "random+asha",
    "asha-joint",
    "asha-promotion",
    "hyperband-promotion",
    "asha-window",
    "optuna-tpe+sh",
    "optuna-tpe+hyperband",
)
# the methods --simulated runs: dtune's own
_SIMULATED = tuple(m for m in METHODS if not m.startswith("optuna"))
_WINDOW = 27  # asha-window's window when --window does not set one
# leftover: a curve's last epoch is f(x) + gap·exp(-3/speed); exact: it is f(x); flat:
# every epoch reports the leftover curve's last value (perfect early information); power:
# f(x) + gap·epoch^(-1/speed), another family, with a leftover too
CURVES = ("leftover", "exact", "flat", "power")
_SIM_START = 1e9  # the simulated clock's start


def _scramble(params: dict[str, Any], salt: str) -> float:
    """A fixed number in [0, 1) for these parameters."""
    text = json.dumps(params, sort_keys=True, default=str) + salt
    return int(hashlib.sha1(text.encode()).hexdigest()[:8], 16) / 2**32


def epochs_of(
    problem: str,
    params: dict[str, Any],
    epochs: int,
    epoch_s: float,
    curves: str = "leftover",
    checkpoint: Path | None = None,
    save_at: tuple[float, ...] = (),
    start: int = 0,
    startup_s: float = 0.0,
) -> Any:
    """The value after each epoch of a trial at ``params`` (to minimize), each yielded
    once that epoch's time has passed: a synthetic curve's sleep, or a real epoch.
    ``curves="exact"`` ends a synthetic curve at the problem's value at ``params``;
    ``curves="flat"`` reports the default curve's last value at every epoch, so that a
    pruner ranks by where a trial will end (a ceiling for any early-stopping rule);
    ``curves="power"`` falls as a power law of the epoch instead.
    A synthetic run first sleeps ``startup_s`` (a real one pays its own start-up).

    With a ``checkpoint`` folder, the epochs in ``save_at`` (where a promotion-type
    ASHA pauses trials) are saved there before they are yielded (the epoch, and the
    Keras model); from ``start`` > 0, the checkpoint there is gone on from."""
    if problem == KERAS:
        yield from keras_epochs(params, epochs, start, checkpoint, save_at)
        return
    final, fraction = evaluate(problem, params)
    speed = 0.2 + 1.6 * _scramble(params, "speed")  # > 1: slow to converge
    gap = GAP[problem] * (0.2 + _scramble(params, "gap"))
    tau = speed * epochs / 3
    leftover = gap * math.exp(-epochs / tau) if curves == "exact" else 0.0
    time.sleep(startup_s)
    for epoch in range(start + 1, epochs + 1):
        time.sleep(epoch_s * (0.5 + fraction))
        if checkpoint is not None and epoch in save_at:
            mark_epoch(checkpoint, epoch)
        if curves == "power":
            yield final + gap * epoch ** (-1 / speed)
        else:
            yield final + gap * math.exp(-(epochs if curves == "flat" else epoch) / tau) - leftover


def _startup_s(args: argparse.Namespace) -> float:
    """The seconds a synthetic run sleeps before its first epoch (``--startup``)."""
    return args.startup * args.epoch


def search_space(problem: str) -> dict[str, Any]:
    return keras_space() if problem == KERAS else space_of(problem)


def learning_curve(
    problem: str,
    epochs: int,
    epoch_s: float,
    curves: str,
    checkpoints: str | None = None,
    save_at: tuple[float, ...] = (),
    startup_s: float = 0.0,
    **params: Any,
) -> dict[str, Any]:
    """Trains for up to ``epochs`` epochs after a start-up of ``startup_s`` (each run),
    reporting each; returns the final value and
    how long each report waited for the pruner's verdict. With ``checkpoints`` (a
    folder; promotion-type ASHA on a real cluster), a trial keeps a checkpoint there at
    the epochs ``save_at`` (:func:`dtune.checkpoint_file`), and a promoted one goes on
    from it."""
    import dtune

    if checkpoints is None or dtune.current_trial() is None:
        return _curve(epochs_of(problem, params, epochs, epoch_s, curves, startup_s=startup_s))
    with dtune.checkpoint_file(checkpoints) as path:
        start = int((path / "epoch").read_text()) if path.exists() else 0
        values = epochs_of(
            problem, params, epochs, epoch_s, curves, path, save_at, start, startup_s
        )
        return _curve(values, start)


def _curve(values: Any, start: int = 0) -> dict[str, Any]:
    """:func:`learning_curve`'s reports of ``values``, the epochs' values after
    ``start`` (``first_step``: the first of them)."""

    import dtune

    waits: list[float] = []
    value = math.inf
    for epoch, value in enumerate(values, start + 1):
        started = time.perf_counter()
        try:
            dtune.report(value, epoch)
        except dtune.TrialPruned:
            waits.append(1000 * (time.perf_counter() - started))
            break
        waits.append(1000 * (time.perf_counter() - started))
    return {"value": value, "wait_ms": waits, "first_step": start + 1}


def _optuna_params(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    import dtune

    params: dict[str, Any] = {}
    for name, dim in space.items():
        log = getattr(dim, "prior", "uniform") == "log-uniform"
        if isinstance(dim, dtune.Categorical):
            params[name] = trial.suggest_categorical(name, list(dim.categories))
        elif isinstance(dim, dtune.Integer):
            params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=log)
        else:
            params[name] = trial.suggest_float(name, float(dim.low), float(dim.high), log=log)
    return params


def optuna_worker(
    problem: str, method: str, seed: int, index: int, path: str, args: argparse.Namespace
) -> list[float]:
    """One Dask worker's ``study.optimize`` of an Optuna study shared through a journal
    file; returns the report-to-decision times (report + should_prune) in ms."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    if method.endswith("hyperband"):
        pruner: Any = optuna.pruners.HyperbandPruner(
            args.min_resource, args.epochs, args.reduction_factor
        )
    else:
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=args.min_resource, reduction_factor=args.reduction_factor
        )
    sampler = optuna.samplers.TPESampler(seed=seed * 1000 + index, constant_liar=True)
    study = optuna.load_study(study_name="bench", storage=storage, sampler=sampler, pruner=pruner)
    space = search_space(problem)
    waits: list[float] = []

    def objective(trial: Any) -> float:
        params = _optuna_params(trial, space)
        value = math.inf
        for epoch, value in enumerate(
            epochs_of(
                problem, params, args.epochs, args.epoch, args.curves, startup_s=_startup_s(args)
            ),
            1,
        ):
            started = time.perf_counter()
            trial.report(value, epoch)
            stop = trial.should_prune()
            waits.append(1000 * (time.perf_counter() - started))
            if stop:
                raise optuna.TrialPruned()
        return value

    def budget(study: Any, trial: Any) -> None:
        if args.worker_budget is not None:
            spent = sum(
                (t.datetime_complete - t.datetime_start).total_seconds()
                for t in study.get_trials(deepcopy=False)
                if t.datetime_complete is not None and t.datetime_start is not None
            )
            if spent >= args.worker_budget:
                study.stop()

    study.optimize(objective, timeout=args.budget, callbacks=[budget])
    return waits


def run_optuna(
    client: Any, problem: str, method: str, seed: int, args: argparse.Namespace, called: float
) -> dict[str, Any]:
    import tempfile

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/journal.log"
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        optuna.create_study(study_name="bench", storage=storage, direction="minimize")
        workers = sorted(client.scheduler_info()["workers"])
        futures = [
            client.submit(
                optuna_worker, problem, method, seed, i, path, args, workers=[w], pure=False
            )
            for i, w in enumerate(workers)
        ]
        waits = [w for f in futures for w in f.result()]
        trials = optuna.load_study(study_name="bench", storage=storage).get_trials(deepcopy=False)
    done = [t for t in trials if t.datetime_complete is not None and t.datetime_start]
    done.sort(key=lambda t: t.datetime_complete)
    spent, best, curve = 0.0, math.inf, []
    for t in done:
        spent += (t.datetime_complete - t.datetime_start).total_seconds()
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None:
            best = min(best, t.value)
        curve.append((spent, best - minimum(problem)))
    end = max(t.datetime_complete.timestamp() for t in done)
    return {
        "curve": curve,
        "worker_s": spent,
        "trials": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
        "utilization": spent / (len(workers) * (end - called)),
        "waits": waits,
        "in_report": waits,  # every should_prune decides
        "compute_utilization": (spent - sum(waits) / 1000) / (len(workers) * (end - called)),
    }


def _ray_space(space: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    import dtune

    ray_space: dict[str, Any] = {}
    for name, dim in space.items():
        log = getattr(dim, "prior", "uniform") == "log-uniform"
        if isinstance(dim, dtune.Categorical):
            ray_space[name] = tune.choice(list(dim.categories))
        elif isinstance(dim, dtune.Integer):
            sample = tune.lograndint if log else tune.randint
            ray_space[name] = sample(int(dim.low), int(dim.high) + 1)
        else:
            sample = tune.loguniform if log else tune.uniform
            ray_space[name] = sample(float(dim.low), float(dim.high))
    return ray_space


def run_ray(problem: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Ray Tune's ASHAScheduler with random search, ``--workers`` trials at once on this
    machine (Ray's own worker processes; the Dask cluster idles meanwhile)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    def trainable(config: dict[str, Any]) -> None:
        startup_s = _startup_s(args)
        for value in epochs_of(
            problem, dict(config), args.epochs, args.epoch, args.curves, startup_s=startup_s
        ):
            tune.report({"value": value})

    last: dict[str, tuple[float, float, int, float]] = {}

    class Recorder(tune.Callback):
        def on_trial_result(self, iteration: int, trials: Any, trial: Any, result: Any) -> None:
            last[trial.trial_id] = (
                time.time(),
                float(result["time_total_s"]),
                int(result["training_iteration"]),
                float(result["value"]),
            )

    # Ray's workers import this script's helpers (scripts/bench.py) from its folder.
    folder = str(Path(__file__).parent)
    ray.init(
        num_cpus=args.workers,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": folder}},
    )
    try:
        called = time.time()
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=_ray_space(search_space(problem)),
            tune_config=tune.TuneConfig(
                metric="value",
                mode="min",
                scheduler=ASHAScheduler(
                    max_t=args.epochs,
                    grace_period=args.min_resource,
                    reduction_factor=args.reduction_factor,
                ),
                num_samples=-1,
                time_budget_s=args.budget,
                max_concurrent_trials=args.workers,
                reuse_actors=True,  # a new actor per trial costs seconds on 2 cores
                search_alg=tune.search.BasicVariantGenerator(random_state=seed),
            ),
            run_config=tune.RunConfig(
                verbose=0,
                storage_path=f"/tmp/dtune-ray-{os.getpid()}",
                callbacks=[Recorder()],
            ),
        )
        errors = [r.error for r in tuner.fit() if r.error is not None]
        if errors and not last:
            raise RuntimeError(f"every Ray trial failed; the first: {errors[0]!r}")
    finally:
        ray.shutdown()
    rows = list(last.values())
    rows.sort()
    spent, best, curve = 0.0, math.inf, []
    for _, seconds, iterations, value in rows:
        spent += seconds
        if iterations >= args.epochs:
            best = min(best, value)
        curve.append((spent, best - minimum(problem)))
    end = max(r[0] for r in rows)
    return {
        "curve": curve,
        "worker_s": spent,
        "trials": len(rows),
        "pruned": sum(r[2] < args.epochs for r in rows),
        "utilization": spent / (args.workers * (end - called)),
        "waits": [],
        "in_report": [],
        "compute_utilization": math.nan,
    }


def run(
    client: Any, problem: str, method: str, seed: int, args: argparse.Namespace, called: float
) -> dict[str, Any]:
    """One search; utilization is counted from ``called`` (the search's call, or the
    start of its fresh cluster; with ``--simulated``, the simulated clock's start)."""
    if method.startswith("optuna"):
        return run_optuna(client, problem, method, seed, args, called)
    if method == "ray-random+asha":
        return run_ray(problem, seed, args)
    import dtune
    from dtune.pruners import estimate_overhead

    rungs = (args.min_resource, args.epochs, args.reduction_factor)
    # every dtune pruner's ranking window and start-up (asha-window: a window of its own)
    common = {"window": args.window, "overhead": args.overhead}
    pruner = {
        "none": None,
        "asha": dtune.ASHA(*rungs, **common),
        "hyperband": dtune.Hyperband(*rungs, **common),
        "random+asha": dtune.ASHA(*rungs, **common),
        "asha-joint": dtune.ASHA(*rungs, **common),
        "asha-promotion": dtune.ASHA(*rungs, variant="promotion", **common),
        "hyperband-promotion": dtune.Hyperband(*rungs, variant="promotion", **common),
        "asha-window": dtune.ASHA(*rungs, window=args.window or _WINDOW, overhead=args.overhead),
    }[method]
    options: dict[str, Any] = {"random_state": seed}
    if method.endswith("-joint"):  # one GP over configuration and resource (MOBSTER's)
        options["resource_model"] = "joint"
    if method.startswith("random"):
        options["n_initial_points"] = 100_000
    study = dtune.Study(search_space(problem), objective_key="value", pruner=pruner, **options)
    # Simulated: the epochs and the start-up take no time here; the cluster's clock
    # takes them.
    epoch_s = 0.0 if args.simulated else args.epoch
    objective = functools.partial(
        learning_curve,
        problem,
        args.epochs,
        epoch_s,
        args.curves,
        startup_s=0.0 if args.simulated else _startup_s(args),
    )
    checkpoints = None
    if pruner is not None and pruner.promotes and not args.simulated:
        # Paused trials keep their epoch (and Keras model) to go on from when promoted;
        # simulated ones are charged only the epochs after their pause by the cluster.
        checkpoints = tempfile.mkdtemp(prefix="dtune-bench-")
        objective = functools.partial(
            objective, checkpoints=checkpoints, save_at=tuple(pruner.rungs()[:-1])
        )
    # The best full-budget value after each run that ends, against the worker-seconds
    # spent so far (a promoted trial's runs each count when they end).
    spent, best, curve = [0.0], [math.inf], []
    counted: dict[int, float] = {}

    def budget(study: dtune.Study, trial: dtune.Trial) -> None:
        seconds = trial.duration or 0.0
        spent[0] += seconds - counted.get(trial.number, 0.0)
        counted[trial.number] = seconds
        if trial.state is dtune.TrialState.COMPLETE and trial.value is not None:
            best[0] = min(best[0], trial.value)
        curve.append((spent[0], best[0] - minimum(problem)))
        if args.worker_budget is not None and spent[0] >= args.worker_budget:
            study.stop()

    with suggest_stats() as stats:  # the suggestion process's summary, logged at the end
        study.optimize(
            objective,
            100_000,
            client=client,
            timeout=args.budget,
            callbacks=[budget],
            progress=False,
            dashboard=False,
        )
    if checkpoints is not None:  # the paused trials' (the study goes no further)
        shutil.rmtree(checkpoints, ignore_errors=True)
    trials = [t for t in study.trials if t.duration is not None]
    trials.sort(key=lambda t: t.finished or 0.0)
    end = max(t.finished or 0.0 for t in trials)
    busy = sum(t.duration or 0.0 for t in trials)
    # Decisions: the reports that wait for a verdict (those reaching one of the trial's
    # rungs); every report's time in dtune.report is counted apart.
    n_slots = args.workers if args.simulated else len(client.scheduler_info()["workers"])
    waits, in_report = [], []
    for t in trials if not args.simulated else ():  # simulated verdicts take no time
        stops = pruner.stops_at(t.number) if pruner is not None else []
        for step, wait in enumerate(t.metrics.get("wait_ms", []), t.metrics.get("first_step", 1)):
            in_report.append(wait)
            if stops is None or step in stops:
                waits.append(wait)
    return {
        "curve": curve,
        "worker_s": busy,
        "trials": len(trials),
        "pruned": sum(t.state.is_stopped_early() for t in trials),  # or left paused
        "utilization": busy / (n_slots * (end - called)),
        "waits": waits,
        # judged on the worker by the rung's cutoff (a verdict from the driver is a round
        # trip through the scheduler: never under a millisecond here)
        "here": sum(w < _HERE_MS for w in waits),
        "in_report": in_report,
        # without the time trials spent in dtune.report
        "compute_utilization": (busy - sum(in_report) / 1000) / (n_slots * (end - called)),
        # Points past the initial design that the driver drew without the model, while
        # the suggestion process was busy (a refit, a batch): none on simulated workers,
        # whose clock waits for the model.
        "drawn_without_model": stats.get("drawn_in_driver", 0),
        "model_batches": stats.get("asks", 0),  # the suggestion process's
        # a run's start-up in epochs, from the report times (ASHA's overhead)
        "overhead": estimate_overhead(trials),
        "imputed": imputation_errors(problem, study, args) if problem != KERAS else [],
    }


def imputation_errors(problem: str, study: Any, args: argparse.Namespace) -> list[list[float]]:
    """For each trial of a synthetic search that stopped early at a step (pruned, or left
    paused): [the step, where its curve would have ended less the estimate the model is
    told of it at the search's end (its value there plus the median gain from there to
    the end of the trials that completed), those gains' variance, their mean square]."""
    import dtune

    complete = [t for t in study.trials if t.state is dtune.TrialState.COMPLETE]
    rows = []
    for trial in study.trials:
        if not (trial.state.is_stopped_early() and trial.intermediate):
            continue
        step = max(trial.intermediate)
        gains = [t.value - t.intermediate[step] for t in complete if step in t.intermediate]
        if len(gains) < 3:  # the ledger's _MIN_GAINS: it is told the worst value instead
            continue
        *_, end = epochs_of(problem, trial.params, args.epochs, 0.0, args.curves)
        error = end - (trial.intermediate[step] + statistics.median(gains))
        rows.append([step, error, statistics.pvariance(gains), _rms(gains) ** 2])
    return rows


def minimum(problem: str) -> float:
    """The best value the problem can reach (an error rate's 0 for the Keras search)."""
    return 0.0 if problem == KERAS else MINIMUM[problem]


def regret_at(curve: list[tuple[float, float]], worker_s: float) -> float:
    regret = math.inf
    for spent, r in curve:
        if spent > worker_s:
            break
        regret = r
    return regret


def worker_s_to(curve: list[tuple[float, float]], target: float) -> float:
    return next((spent for spent, r in curve if r <= target), math.inf)


def median_curve_share(rows: list[dict[str, Any]], bases: list[dict[str, Any]]) -> float:
    """Where the median over the seeds of ``rows``' regret curves first reaches the median
    of the ``bases``' final regrets, over the median of their worker-seconds (inf: never).

    >>> none = [{"curve": [(5.0, 0.3), (10.0, 0.1)], "worker_s": 10.0}] * 3
    >>> asha = [{"curve": [(2.0, 0.2), (4.0, 0.1)]}, {"curve": [(3.0, 0.05)]}]
    >>> asha.append({"curve": [(9.0, 1.0)]})
    >>> median_curve_share(asha, none)
    0.4
    """
    bar = statistics.median(b["curve"][-1][1] for b in bases)

    def reached(worker_s: float) -> bool:
        return statistics.median(regret_at(r["curve"], worker_s) for r in rows) <= bar

    # Every curve only falls, so their median does: the first budget that reaches the
    # bar is found by bisection over the budgets at which some curve moves.
    spent = sorted({w for r in rows for w, _ in r["curve"]})
    first = bisect.bisect_left(spent, True, key=reached)
    at = spent[first] if first < len(spent) else math.inf
    return at / statistics.median(b["worker_s"] for b in bases)


def resampled(
    items: list[Any], stat: Any, draws: int = 1000, level: float = 0.9
) -> tuple[float, float, list[float]]:
    """A percentile bootstrap over the seeds' ``items``: ``stat`` of ``draws`` resamples
    (drawn with replacement, from a fixed seed), the central ``level`` interval of them,
    and the sorted values themselves.

    >>> low, high, values = resampled([0.2, 0.3, 0.4, 0.5, math.inf], statistics.median)
    >>> (low, high), len(values)
    ((0.2, inf), 1000)
    """
    rng = random.Random(0)
    n = len(items)
    values = sorted(stat(rng.choices(items, k=n)) for _ in range(draws))
    tail = round((1 - level) / 2 * draws)
    return values[tail], values[draws - 1 - tail], values


def _simulated(problem: str, args: argparse.Namespace) -> Any:
    """Simulated workers whose trials take, on the simulated clock, the seconds the same
    trial's start-up and epochs sleep on a real one (all ``--epochs`` of them; a pruned
    trial ends at its last report)."""
    from dtune.sim import SimulatedCluster

    def seconds(params: dict[str, Any]) -> float:
        return args.epochs * args.epoch * (0.5 + evaluate(problem, dict(params))[1])

    return SimulatedCluster(
        args.workers, duration=seconds, start=_SIM_START, startup=_startup_s(args)
    )


@contextlib.contextmanager
def _cluster(args: argparse.Namespace, warm_for: list[str]) -> Iterator[Any]:
    """A local cluster of ``--workers`` single-threaded workers and its client, warmed
    (imports, the Keras data) for ``warm_for``'s problems, so that the first method
    does not pay for them alone."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        if warm_for:
            client.run(lambda: __import__("dtune.execution"))
        if KERAS in warm_for:
            client.run(warm)
        yield client


def time_cutoffs(n_trials: int, epochs: int) -> None:
    """The rungs' cutoffs at ``n_trials`` trials: afresh against the driver's table."""
    from dtune import ASHA, Hyperband, Report, Trial, TrialState

    rng = random.Random(0)
    ladder = [1, 3, 9, epochs]
    trials = [
        Trial(
            number=n,
            state=TrialState.PRUNED,
            params={},
            reports=tuple(Report(s, rng.random()) for s in range(1, rng.choice(ladder) + 1)),
        )
        for n in range(n_trials)
    ]
    print(f"# the rungs' cutoffs at {n_trials} trials (medians of repeats)")
    print(
        "| rule | afresh from every trial (ms) "
        "| the driver's table: a report, then the cutoffs (µs) | ratio |"
    )
    print("|---|---|---|---|")
    for pruner in (ASHA(1, epochs, 3), Hyperband(1, epochs, 3)):
        afresh = []
        for _ in range(5):
            start = time.perf_counter()
            pruner.cutoffs(trials, minimize=True)
            afresh.append(time.perf_counter() - start)
        table = pruner.rung_table(minimize=True)
        for trial in trials:
            table.update(trial)
        kept = []
        for trial in trials[:500]:  # each run again from the start, one report at a time
            for step in range(len(trial.reports) + 1):
                news = Trial(
                    number=trial.number,
                    state=TrialState.RUNNING,
                    params={},
                    reports=trial.reports[:step],
                )
                start = time.perf_counter()
                table.update(news)
                table.cutoffs()
                kept.append(time.perf_counter() - start)
        a, k = statistics.median(afresh), statistics.median(kept)
        print(f"| {type(pruner).__name__} | {a * 1e3:.1f} | {k * 1e6:.1f} | {a / k:.0f}x |")


# What a simulated search's results rest on besides the code: the numerical libraries and
# the BLAS kernel OpenBLAS picks for this CPU at run time (a last-bit difference in a GP
# fit sends a search down another path; docs/PERFORMANCE.md, "Session 42").
_NUMERICAL = ("numpy", "scipy", "scikit-learn", "scikit-optimize")


def environment() -> dict[str, Any]:
    """What this run's results rest on: the commit, the libraries' versions, the BLAS
    libraries loaded and the kernel each picked, the CPU, and the command line."""
    from importlib import metadata

    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    def git(*command: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *command],
                cwd=Path(__file__).resolve().parent.parent,
                capture_output=True,
                text=True,
            )
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    from threadpoolctl import threadpool_info  # a dependency of dtune's suggester

    blas = [
        {k: lib.get(k) for k in ("internal_api", "version", "architecture")}
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    changed = git("status", "--porcelain", "--", "dtune", "scripts")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": bool(changed) if changed is not None else None,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in (*_NUMERICAL, "dask", "distributed", "optuna")},
        "blas": blas,
        "cpu": cpu,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "argv": sys.argv[1:],
    }


def _numerics(env: dict[str, Any]) -> tuple[Any, ...]:
    """The part of an :func:`environment` that decides whether a simulated search repeats
    value for value: the numerical libraries, the BLAS kernels and the CPU."""
    versions = env.get("versions", {})
    blas = tuple(sorted(tuple(sorted(b.items(), key=str)) for b in env.get("blas", [])))
    return tuple(versions.get(p) for p in _NUMERICAL), blas, env.get("cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="run seeds FIRST..FIRST+SEEDS-1 (to split seeds across processes; see --from)",
    )
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=27)
    parser.add_argument("--epoch", type=float, default=0.05, help="seconds per epoch (x0.5-1.5)")
    parser.add_argument("--budget", type=float, default=20.0, help="wall seconds per search")
    parser.add_argument("--min-resource", type=int, default=1, help="every pruner's first rung")
    parser.add_argument("--reduction-factor", type=int, default=3, help="every pruner's η")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help=f"dtune's ASHA and Hyperband rank against the latest N at a rung "
        f"(asha-window: {_WINDOW})",
    )
    parser.add_argument(
        "--overhead",
        type=float,
        default=0.0,
        help="dtune's ASHA and Hyperband place rungs where a run's cost, this start-up "
        "(in epochs) plus its epochs, grows by η",
    )
    parser.add_argument(
        "--startup",
        type=float,
        default=0.0,
        help="each run of a synthetic trial (a promoted one's too) first spends this many "
        "epochs' worth (of --epoch seconds) before its first, as a real run builds its model",
    )
    parser.add_argument(
        "--curves",
        choices=CURVES,
        default="leftover",
        help="synthetic curves whose last epoch keeps a leftover above f(x), or ends at f(x), "
        "or that report that leftover curve's last value at every epoch (flat), or power "
        "laws of the epoch with a leftover (power)",
    )
    parser.add_argument(
        "--worker-budget",
        type=float,
        default=None,
        help="worker-seconds per search (then --budget is only a wall-clock cap)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="a new cluster for each search, counted from its start (a user's first search)",
    )
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="dtune's methods on simulated workers and clock (no Dask; budgets in simulated s)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        help="also write every search's results here (JSON), with what they rest on: the "
        "commit, the numerical libraries, the BLAS kernels and the CPU",
    )
    parser.add_argument(
        "--tag",
        help="name this run's methods METHOD@TAG in its results (to read code versions or "
        "settings side by side with --from)",
    )
    parser.add_argument(
        "--from",
        dest="saved",
        type=Path,
        nargs="+",
        help="print the tables of the results one or more --save files hold, running nothing "
        "(files of other seeds or methods are merged)",
    )
    parser.add_argument(
        "--time-cutoffs",
        type=int,
        metavar="N",
        help="time the driver's rung cutoffs at N synthetic trials, running no search",
    )
    args = parser.parse_args()
    if args.time_cutoffs is not None:
        time_cutoffs(args.time_cutoffs, args.epochs)
        return
    if args.saved is not None:
        report(*_merged(args.saved))
        return
    problems, methods = args.problems.split(","), args.methods.split(",")
    for problem in problems:
        if problem not in (*PROBLEMS, KERAS):
            parser.error(f"unknown problem {problem!r}; choose from {(*PROBLEMS, KERAS)}")
    if not 0 <= args.startup < math.inf:
        parser.error(f"--startup {args.startup:g} must be a finite number of epochs >= 0")
    if args.startup and KERAS in problems:
        parser.error(f"--startup is for the synthetic problems; {KERAS!r} pays its own")
    if args.simulated:
        if KERAS in problems:
            parser.error(f"--simulated runs the synthetic problems only, not {KERAS!r}")
        others = [m for m in methods if m not in _SIMULATED]
        if others:
            parser.error(f"--simulated runs {', '.join(_SIMULATED)} only, not {others}")

    if args.tag is not None and not args.tag.replace("-", "").replace("_", "").isalnum():
        parser.error(f"--tag {args.tag!r} must be letters, digits, '-' and '_'")

    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    kind = "a fresh cluster per search" if args.fresh else "warm"
    print(
        f"# {args.workers} {'simulated ' if args.simulated else ''}workers"
        f"{'' if args.simulated else f' ({kind})'}, "
        f"{args.epochs} epochs of {args.epoch} s (x0.5-1.5), {args.budget:g} s per search"
        + (f" (at most; {args.worker_budget:g} worker-s)" if args.worker_budget else "")
        + f", seeds {seeds[0]}..{seeds[-1]}, {args.curves} curves"
        + (f", ASHA's window {args.window}" if args.window else "")
        + (f", a start-up of {args.startup:g} epochs per run" if args.startup else "")
        + (f", rungs for a start-up of {args.overhead:g} epochs" if args.overhead else "")
    )
    labels = {m: m if args.tag is None else f"{m}@{args.tag}" for m in methods}
    results: dict[tuple[str, str, str], dict[str, Any]] = {}
    searches = [(p, s, m) for p in problems for s in seeds for m in methods]
    env: dict[str, Any] | None = None  # after the first search, once every library is loaded
    with contextlib.ExitStack() as stack:
        warm_cluster = not (args.fresh or args.simulated)
        shared = stack.enter_context(_cluster(args, problems)) if warm_cluster else None
        for problem, seed, method in searches:
            if args.simulated:
                result = run(_simulated(problem, args), problem, method, seed, args, _SIM_START)
            else:
                called = time.time()
                # fresh: a user's first search, whose workers start, import and load in it
                cluster = _cluster(args, []) if shared is None else contextlib.nullcontext(shared)
                with cluster as client:
                    result = run(client, problem, method, seed, args, called)
            results[problem, labels[method], str(seed)] = result
            overhead = result.get("overhead") or 0.0  # a hair above 0 with no start-up
            print(
                f"{problem} seed {seed} {labels[method]}: {result['trials']} trials, "
                f"{result['pruned']} pruned, regret {result['curve'][-1][1]:.4g}, "
                f"{result['worker_s']:.1f} worker-s, util {result['utilization']:.3f}"
                + (f", start-up {overhead:.1f} epochs" if overhead >= 0.05 else ""),
                flush=True,
            )
            if args.save is not None:  # after each search: a stopped run keeps what it ran
                env = env or environment()
                args.save.write_text(
                    json.dumps(
                        {
                            "problems": problems,
                            "methods": list(labels.values()),
                            "seeds": seeds,
                            "environment": env,
                            "results": {"|".join(key): r for key, r in results.items()},
                        }
                    )
                )
    report(results, problems, list(labels.values()), seeds)


def _merged(
    paths: list[Path],
) -> tuple[dict[tuple[str, ...], dict[str, Any]], list[str], list[str], list[int]]:
    """The results, problems, methods and seeds of the ``--save`` files at ``paths``, as
    one run's (the seeds of a file saved before ``--first-seed`` existed are 0..N-1)."""
    results: dict[tuple[str, ...], dict[str, Any]] = {}
    problems: list[str] = []
    methods: list[str] = []
    seeds: set[int] = set()
    numerics: dict[tuple[Any, ...], list[str]] = {}
    source: dict[str, str] = {}  # each search's key -> the file it was read from
    for path in paths:
        saved = json.loads(path.read_text())
        env = saved.get("environment")  # files saved before it was recorded have none
        if env is not None:
            numerics.setdefault(_numerics(env), []).append(path.name)
            print(
                f"# {path.name}: commit {str(env['commit'])[:10]}"
                + (" (uncommitted changes)" if env.get("uncommitted") else "")
                + f", {env['cpu']}, BLAS "
                + (
                    ", ".join(
                        f"{b['internal_api']} {b['version']} {b['architecture']}"
                        for b in env["blas"]
                    )
                    or "not recorded"
                )
            )
        # earlier files holding searches this one holds too, with how many
        clashes = collections.Counter(source[key] for key in saved["results"] if key in source)
        for key, r in saved["results"].items():
            source[key] = path.name
            results[tuple(key.split("|"))] = r
        for earlier, n in clashes.items():
            print(
                f"# WARNING: {path.name} holds {n} search(es) that {earlier} holds too (the same "
                f"problem, method and seed); {path.name}'s are read. Name one run's methods "
                "with --tag to read both"
            )
        problems += [p for p in saved["problems"] if p not in problems]
        methods += [m for m in saved["methods"] if m not in methods]
        ran = saved["seeds"]
        seeds.update(range(ran) if isinstance(ran, int) else ran)
    if len(numerics) > 1:
        print(
            "# WARNING: these files ran on different numerical libraries, BLAS kernels or CPUs "
            f"({' | '.join(', '.join(names) for names in numerics.values())}); a simulated "
            "search repeats only within one, so compare methods from the same group"
        )
    return results, problems, methods, sorted(seeds)


def report(
    results: dict[tuple[str, ...], dict[str, Any]],
    problems: list[str],
    methods: list[str],
    seeds: list[int],
) -> None:
    """The tables (markdown): medians over the seeds of each problem and method, then
    the median regret at budgets up to the common worker time."""
    done = {
        p: [s for s in seeds if all((p, m, str(s)) in results for m in methods)] for p in problems
    }
    for problem in problems:
        if len(done[problem]) < len(seeds):
            print(
                f"# {problem}: only seeds {done[problem]} ran every method; the tables count those"
            )
    problems = [p for p in problems if done[p]]

    def of(problem: str, method: str) -> list[dict[str, Any]]:
        return [results[problem, method, str(s)] for s in done[problem]]

    def common(problem: str, seed: int) -> float:
        """The worker time every method of that seed reached."""
        return min(results[problem, m, str(seed)]["worker_s"] for m in methods)

    print()
    print(
        "| problem | method | regret@W | regret at end | W to match | ÷ none's W "
        "| ÷ none's W, median curves | trials | pruned | utilization | without report waits "
        "| decision ms median / mean / p99 | judged on the worker | ms in a report, mean "
        "| drawn without the model |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    shares: dict[tuple[str, str], list[float]] = {}  # each seed's W ratio, for the bootstrap
    for problem in problems:
        for method in methods:
            rows = of(problem, method)
            at_w, at_end, to_match = [], [], []
            share = shares[problem, method] = []
            for seed, r in zip(done[problem], rows, strict=True):
                at_w.append(regret_at(r["curve"], common(problem, seed)))
                at_end.append(r["curve"][-1][1])
                if "none" in methods:
                    base = results[problem, "none", str(seed)]
                    w = worker_s_to(r["curve"], base["curve"][-1][1])
                    to_match.append(w)
                    share.append(w / base["worker_s"])
            waits = sorted(w for r in rows for w in r["waits"])
            decision = (
                f"{statistics.median(waits):.1f} / {statistics.fmean(waits):.1f} / "
                f"{waits[int(0.99 * (len(waits) - 1))]:.1f}"
                if waits and method != "none"
                else "–"
            )
            here = sum(r.get("here", 0) for r in rows)
            decision += f" | {here / len(waits):.0%}" if waits and "here" in rows[0] else " | –"
            in_report = [w for r in rows for w in r["in_report"]]
            decision += f" | {statistics.fmean(in_report):.1f}" if in_report else " | –"
            # saved by runs before the column existed: "–"
            drawn = [
                r["drawn_without_model"] / r["trials"] for r in rows if "drawn_without_model" in r
            ]
            decision += f" | {statistics.median(drawn):.0%}" if drawn else " | –"
            # Without "none" there is nothing to match; the other columns stand.
            matched = (
                f"{statistics.median(to_match):.0f} | {statistics.median(share):.2f} "
                f"| {median_curve_share(rows, of(problem, 'none')):.2f}"
                if to_match
                else "– | – | –"
            )
            print(
                f"| {problem} | {method} | {statistics.median(at_w):.4g} "
                f"| {statistics.median(at_end):.4g} | {matched} "
                f"| {statistics.median(r['trials'] for r in rows):.0f} "
                f"| {statistics.median(r['pruned'] for r in rows):.0f} "
                f"| {statistics.median(r['utilization'] for r in rows):.3f} "
                f"| {statistics.median(r['compute_utilization'] for r in rows):.3f} | {decision} |"
            )

    if "none" in methods:
        _ratio_intervals(results, problems, [m for m in methods if m != "none"], done, shares)
    _imputation_table(results, problems, methods, done)

    # Issue 12: at every budget, dtune's pruned searches against the best peer's.
    print()
    print("Median regret at each budget (a fraction of the worker time every method of the")
    print("seed reached):")
    print()
    print(f"| problem | budget | {' | '.join(methods)} |")
    print(f"|---|---|{'---|' * len(methods)}")
    peers = [m for m in methods if m.startswith(("optuna", "ray"))]
    verdicts = []
    for problem in problems:
        at = {
            m: [
                statistics.median(
                    regret_at(r["curve"], fraction * common(problem, s))
                    for s, r in zip(done[problem], of(problem, m), strict=True)
                )
                for fraction in _BUDGETS
            ]
            for m in methods
        }
        for i, fraction in enumerate(_BUDGETS):
            cells = " | ".join(f"{at[m][i]:.4g}" for m in methods)
            print(f"| {problem} | {fraction:.0%} | {cells} |")
        if not peers:
            continue
        best_peer = [min(at[p][i] for p in peers) for i in range(len(_BUDGETS))]
        for method in (
            m
            for m in (
                "asha",
                "hyperband",
                "asha-joint",
                "asha-promotion",
                "hyperband-promotion",
                "asha-window",
            )
            if m in methods
        ):
            level = sum(a <= b for a, b in zip(at[method], best_peer, strict=True))
            verdicts.append(
                f"- {problem}, {method}: no worse than the best of {', '.join(peers)} "
                f"at {level} of {len(_BUDGETS)} budgets"
            )
    if verdicts:
        print()
        print("\n".join(verdicts))


def _imputation_table(
    results: dict[tuple[str, ...], dict[str, Any]],
    problems: list[str],
    methods: list[str],
    done: dict[str, list[int]],
) -> None:
    """How far the pruned trials' curves would have ended from the estimates the model is
    told of them, by the step they stopped at, over every seed (saved by runs before the
    column existed: nothing)."""
    lines = []
    for problem in problems:
        for method in methods:
            by_step: dict[int, list[list[float]]] = {}
            for seed in done[problem]:
                for row in results[problem, method, str(seed)].get("imputed", []):
                    by_step.setdefault(int(row[0]), []).append(row)
            for step, rows in sorted(by_step.items()):
                errors = [r[1] for r in rows]
                # the errors in units of the deviation the estimate is told with
                by_spread, by_squares = (
                    _rms([r[1] / math.sqrt(r[k]) for r in rows if r[k] > 0]) for k in (2, 3)
                )
                lines.append(
                    f"| {problem} | {method} | {step} | {len(rows)} "
                    f"| {statistics.fmean(errors):.3g} | {_rms(errors):.3g} "
                    f"| {by_spread:.2f} | {by_squares:.2f} |"
                )
    if not lines:
        return
    print()
    print("Where the trials stopped early would have ended, less the estimate the model is")
    print("told of them (their value at the step plus the median gain from there of the")
    print("trials that completed, at the search's end), over every seed; and that error's")
    print("root mean square in units of the gains' deviation (what the ledger tells the model)")
    print("and of their root mean square (run 33's wider rule, not kept): 1 is calibrated,")
    print("above 1 the estimates are surer than they should be:")
    print()
    print(
        "| problem | method | step | trials | mean error | rms error "
        "| rms ÷ the gains' deviation | rms ÷ their rms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


def _rms(values: list[float]) -> float:
    """The root mean square of ``values`` (nan: none)."""
    return math.sqrt(statistics.fmean(v * v for v in values)) if values else math.nan


def _ratio_intervals(
    results: dict[tuple[str, ...], dict[str, Any]],
    problems: list[str],
    methods: list[str],
    done: dict[str, list[int]],
    shares: dict[tuple[str, str], list[float]],
) -> None:
    """How firmly the seeds pin the W ratios (``shares``: each seed's, in ``done``'s
    order): a bootstrap over the seeds (paired: a resample takes a seed's full-budget
    search with the method's), and how many seeds and resamples meet issue 12's target
    (≤ 1/3; ≤ 1/2 on the Keras digits)."""
    print()
    print("The W ratios over the seeds, with 90% bootstrap intervals (1,000 resamples of")
    print("the seeds, each seed's searches kept together; 200 for the median curves). The")
    print("target is issue 12's: at most 1/3 of the worker time, 1/2 on the Keras digits.")
    print()
    print(
        "| problem | method | seeds | never reached | at the target | ÷ none's W, seed by seed "
        "| 90% interval | resamples at the target | median curves | 90% interval |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for problem in problems:
        seeds = done[problem]
        target = 1 / 2 if problem == KERAS else 1 / 3  # issue 12's
        bases = [results[problem, "none", str(s)] for s in seeds]
        for method in methods:
            rows = [results[problem, method, str(s)] for s in seeds]
            share = shares[problem, method]
            low, high, draws = resampled(share, statistics.median)
            c_low, c_high, _ = resampled(
                list(zip(rows, bases, strict=True)),
                lambda pairs: median_curve_share([r for r, _ in pairs], [b for _, b in pairs]),
                draws=200,
            )
            print(
                f"| {problem} | {method} | {len(seeds)} | {sum(map(math.isinf, share))} "
                f"| {sum(x <= target for x in share)} | {statistics.median(share):.2f} "
                f"| {low:.2f}–{high:.2f} | {sum(d <= target for d in draws) / len(draws):.0%} "
                f"| {median_curve_share(rows, bases):.2f} | {c_low:.2f}–{c_high:.2f} |"
            )


if __name__ == "__main__":
    main()
