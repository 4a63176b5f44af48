"""The ``dtune`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


_PRUNERS = {
    "asha": "ASHA:MIN_RESOURCE:MAX_RESOURCE:REDUCTION_FACTOR",
    "asha-promotion": "ASHA:MIN_RESOURCE:MAX_RESOURCE:REDUCTION_FACTOR",
    "hyperband": "Hyperband:MIN_RESOURCE:MAX_RESOURCE:REDUCTION_FACTOR",
    "hyperband-promotion": "Hyperband:MIN_RESOURCE:MAX_RESOURCE:REDUCTION_FACTOR",
    "median": "MedianStop:WARMUP_STEPS:MIN_TRIALS",
}
_PRUNER_OPTIONS = {
    "asha-promotion": {"variant": "promotion"},
    "hyperband-promotion": {"variant": "promotion"},
}


def _pruner(text: str) -> Any:
    """``asha:1:27:3``, ``asha-promotion:1:27:3``, ``hyperband:1:27:3``,
    ``hyperband-promotion:1:27:3`` or ``median:5:5`` as a pruner (trailing numbers may be
    left out: the pruner's defaults), then any ``name=number`` options, e.g. ASHA's and
    Hyperband's ``window=27`` or ``overhead=5``.

    >>> _pruner("asha-promotion:1:9")
    ASHA(min_resource=1, max_resource=9, reduction_factor=3, variant='promotion', window=None)
    >>> _pruner("asha:1:27:3:window=27").window
    27
    >>> _pruner("hyperband-promotion:1:9:3:window=9")
    Hyperband(min_resource=1, max_resource=9, reduction_factor=3, variant='promotion', window=9)
    >>> _pruner("asha:1:27:3:overhead=5").rungs()
    [1.0, 13.0, 27.0]
    """
    from dtune import pruners

    kind, *parts = text.split(":")
    if kind.lower() not in _PRUNERS:
        raise argparse.ArgumentTypeError(
            f"unknown pruner {kind!r} in {text!r}; choose from "
            + ", ".join(f"{k}[:{v.split(':', 1)[1].lower()}]" for k, v in _PRUNERS.items())
        )
    cls_name, *names = _PRUNERS[kind.lower()].split(":")
    first = next((i for i, part in enumerate(parts) if "=" in part), len(parts))
    numbers, options = parts[:first], [part.split("=", 1) for part in parts[first:]]
    if any(len(option) == 1 for option in options):
        raise argparse.ArgumentTypeError(f"{text!r}: the name=number options come last")
    if len({name for name, _ in options}) < len(options):
        raise argparse.ArgumentTypeError(f"{text!r}: an option is given twice")
    if len(numbers) > len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: {kind} takes at most {len(names)} numbers")
    values = [_number(number, text) for number in numbers]
    keywords = {name: _number(value, text) for name, value in options}
    try:
        return getattr(pruners, cls_name)(
            *values, **_PRUNER_OPTIONS.get(kind.lower(), {}), **keywords
        )
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _number(text: str, spec: str) -> float:
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} in {spec!r} is not a number") from None


def _gpu_ids(text: str) -> list[str]:
    from dtune.cluster import parse_gpu_ids

    try:
        return parse_gpu_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _demo(args: argparse.Namespace) -> int:
    from dtune.demo import DIGITS_SPACE, digits_objective
    from dtune.study import Study

    storage = os.path.abspath(args.storage)
    print(f"dtune demo: tuning an MLP on scikit-learn's digits; store: {storage}")
    study = Study(
        DIGITS_SPACE,
        name="digits",
        storage=storage,
        objective_key="val_loss",
        random_state=args.seed,
        n_initial_points=min(8, args.trials),
    )
    since = len(study.trials)  # a demo run before in this folder: the study goes on
    if args.gpus is None:
        study.optimize(digits_objective, n_trials=args.trials, n_workers=args.workers)
    else:
        from distributed import Client

        from dtune.cluster import LocalGPUCluster

        with LocalGPUCluster(gpus=args.gpus) as cluster, Client(cluster) as client:
            gpus = ",".join(args.gpus)
            print(f"dtune demo: one worker per GPU ({gpus}); dashboard: {client.dashboard_link}")
            study.optimize(digits_objective, n_trials=args.trials, client=client)
    _print_summary(study, top=5, since=since)
    print(f"\nstore: {storage}")
    print(f"inspect it again with: dtune show {args.storage}")
    return 0


def _print_summary(study: object, top: int, since: int | None = None) -> None:
    """The study's trials and best ones; ``since``: the number of this call's first
    trial, whose trials alone the utilization counts (a continued study's earlier
    searches, hours or days before, would count the time between them as idle)."""
    from dtune.pruners import estimate_overhead
    from dtune.stats import utilization
    from dtune.study import Study

    assert isinstance(study, Study)
    trials = study.trials
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.value] = states.get(t.state.value, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    print(f"\nstudy {study.name!r}: {len(trials)} trials ({summary})")
    best = study.top(top)
    if not best:
        print("no complete trial yet")
        return
    if since:
        ours = [t for t in trials if t.number >= since]
        print(f"worker utilization, this search's {len(ours)} trials: {utilization(ours):.2f}")
    else:
        print(f"worker utilization: {utilization(trials):.2f}")
    start_up = estimate_overhead(trials)
    if start_up is not None:  # from the reports' times
        print(f"a run's start-up: {start_up:.1f} steps' worth (ASHA's and Hyperband's overhead)")
    print(f"best {study.objective_key or 'value'} ({study.direction}): {best[0].value:.6g}")
    print(f"best parameters: {best[0].params}")
    frame = study.trials_dataframe()
    columns = [
        "number",
        "value",
        *[str(c) for c in frame if str(c).startswith("params_")],
        "duration",
    ]
    ranked = frame.set_index("number").loc[[t.number for t in best]].reset_index()
    print(f"\ntop {len(best)}:")
    print(ranked[columns].to_string(index=False))


def _show(args: argparse.Namespace) -> int:
    from dtune.storage import open_storage
    from dtune.study import load_study

    if not os.path.isfile(args.file):
        print(f"dtune show: no store at {args.file!r}", file=sys.stderr)
        return 2
    names = [args.study] if args.study else open_storage(args.file).study_names()
    for name in names:
        _print_summary(load_study(args.file, name=name), top=args.top)
    return 0


def _load_search_file(path: str, objective: str, space: str) -> tuple[Any, Any]:
    """The objective and space a ``dtune run`` file defines."""
    import runpy

    if not os.path.isfile(path):
        raise ValueError(f"no file {path!r}")
    # Run under a module name that workers cannot import, so that the objective is
    # pickled by value (with what it refers to in the file), not by reference.
    names = runpy.run_path(path, run_name="__dtune_run__")
    for name in (objective, space):
        if name not in names:
            raise ValueError(f"{path!r} defines no {name!r} (see dtune run --help)")
    return names[objective], names[space]


def _stored_pruner(storage: str, name: str) -> Any:
    """The pruner study ``name`` in ``storage`` was run with, if the study exists."""
    from dtune.pruners import pruner_from_json
    from dtune.storage import open_storage

    if not os.path.isfile(storage):
        return None
    record = open_storage(storage).get_study(name)
    return None if record is None else pruner_from_json(record.optimizer.get("pruner"))


def _run(args: argparse.Namespace) -> int:
    from dtune.study import Study

    try:
        objective, space = _load_search_file(args.file, args.objective, args.space)
        # A study continued without --pruner keeps the one it was started with.
        pruner = args.pruner or _stored_pruner(args.storage, args.study)
        study = Study(
            space,
            name=args.study,
            storage=args.storage,
            direction=args.direction,
            objective_key=args.objective_key,
            random_state=args.seed,
            pruner=pruner,
        )
    except ValueError as exc:
        print(f"dtune run: {exc}", file=sys.stderr)
        return 2
    done = sum(t.state.is_finished() for t in study.trials)
    since = len(study.trials)
    print(f"dtune run: study {study.name!r} in {os.path.abspath(args.storage)} ({done} finished)")
    study.optimize(
        objective,
        n_trials=args.trials,
        client=args.scheduler,
        n_workers=args.workers,
        trial_timeout=args.trial_timeout,
        isolate=args.isolate,
    )
    _print_summary(study, top=5, since=since)
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import signal
    import threading

    from dtune.dashboard import serve_dashboard

    if not os.path.isfile(args.file):
        print(f"dtune dashboard: no store at {args.file!r}", file=sys.stderr)
        return 2
    try:
        server = serve_dashboard(args.file, args.study, port=args.port, address=args.address)
    except (ValueError, OSError) as exc:
        print(f"dtune dashboard: {exc}", file=sys.stderr)
        return 2
    print(f"dtune dashboard: {server.url} (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    # Handlers of our own: a shell starts background jobs with SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from dtune.cluster import launch_gpu_workers

    try:
        return launch_gpu_workers(
            args.scheduler,
            args.gpus,
            gpus_per_worker=args.gpus_per_worker,
            name_prefix=args.name_prefix,
            dask_options=args.dask_options,
        )
    except ValueError as exc:
        print(f"dtune worker: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtune`` command."""
    from dtune import __version__

    parser = argparse.ArgumentParser(
        prog="dtune", description="Distributed asynchronous Bayesian hyperparameter search."
    )
    parser.add_argument("--version", action="version", version=f"dtune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run a real search on an embedded local Dask cluster (digits MLP)"
    )
    demo.add_argument("--trials", type=_positive_int, default=24, help="trials to run (24)")
    demo.add_argument(
        "--workers", type=_positive_int, default=None, help="local workers (one per core)"
    )
    demo.add_argument("--storage", default="dtune-demo.db", help="SQLite store (dtune-demo.db)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (0)")
    demo.add_argument(
        "--gpus",
        type=_gpu_ids,
        help="run on a local GPU-pinned cluster, one worker per id, e.g. 0,1",
    )
    demo.set_defaults(func=_demo)

    run = commands.add_parser(
        "run",
        help="run a search defined in a Python file (resumes the study if it exists)",
        description=(
            "Run a search from the shell. FILE defines `space` (a dict of dimensions) and "
            "`objective` (called with the parameters). Run it again with the same --storage "
            "and --study to continue the study: trials a stopped driver left running are "
            "evaluated again first."
        ),
    )
    run.add_argument("file", help="Python file defining `space` and `objective`")
    run.add_argument("--trials", type=_positive_int, required=True, help="trials to run now")
    run.add_argument("--storage", default="dtune.db", help="SQLite store (dtune.db)")
    run.add_argument("--study", default="study", help="study name in the store (study)")
    run.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    run.add_argument("--workers", type=_positive_int, help="local workers (one per core)")
    run.add_argument("--objective", default="objective", help="objective's name in FILE")
    run.add_argument("--space", default="space", help="space's name in FILE")
    run.add_argument("--objective-key", help="metric to optimize when objective returns a dict")
    run.add_argument("--direction", choices=["minimize", "maximize"], default="minimize")
    run.add_argument("--seed", type=int, help="random seed")
    run.add_argument("--trial-timeout", type=float, help="stop any trial after this many s")
    run.add_argument(
        "--pruner",
        type=_pruner,
        help=(
            "stop hopeless trials early (the objective calls dtune.report): asha:MIN:MAX:ETA, "
            "asha-promotion:MIN:MAX:ETA (trials pause at rungs and the best go on), "
            "hyperband:MIN:MAX:ETA, hyperband-promotion:MIN:MAX:ETA or "
            "median:WARMUP:MIN_TRIALS, e.g. asha:1:27:3; ASHA and Hyperband rank "
            "against the latest N trials at a rung with :window=N, and place their "
            "rungs for a run's start-up of S epochs with :overhead=S (a continued "
            "study keeps its pruner unless this gives another)"
        ),
    )
    run.add_argument(
        "--isolate", action="store_true", help="run each trial in a fresh child process"
    )
    run.set_defaults(func=_run)

    worker = commands.add_parser(
        "worker",
        help="start one GPU-pinned Dask worker per GPU (any other option goes to dask worker)",
        description=(
            "Start one Dask worker process (under a Nanny, which restarts it if it dies) per "
            "GPU or group of GPUs, each with CUDA_VISIBLE_DEVICES set to its own id(s), one "
            "thread and resource GPU=N. Options not listed here, such as --memory-limit or "
            "--tls-ca-file/--tls-cert/--tls-key, are passed to each `dask worker`."
        ),
    )
    worker.add_argument("scheduler", help="the scheduler's address, e.g. tcp://10.0.0.5:8786")
    worker.add_argument(
        "--gpus",
        type=_gpu_ids,
        help="GPU ids or UUIDs, e.g. 0,1,2 (default: CUDA_VISIBLE_DEVICES, else nvidia-smi -L)",
    )
    worker.add_argument(
        "--gpus-per-worker",
        type=_positive_int,
        default=1,
        help="GPUs per worker for multi-GPU trials, e.g. 2 gives 0,1 and 2,3 (1)",
    )
    worker.add_argument("--name-prefix", help="worker names start with this (the host name)")
    worker.set_defaults(func=_worker)

    dashboard = commands.add_parser(
        "dashboard",
        help="serve the live dashboard of a study in a store file (running or finished)",
    )
    dashboard.add_argument("file", help="the SQLite store")
    dashboard.add_argument("--study", help="the study (needed when the store holds several)")
    dashboard.add_argument("--port", type=int, default=5006, help="port (5006; 0: any free)")
    dashboard.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to listen on (127.0.0.1: this machine only; 0.0.0.0: any, no login)",
    )
    dashboard.set_defaults(func=_dashboard)

    show = commands.add_parser("show", help="summarize the studies in a store file")
    show.add_argument("file", help="the SQLite store")
    show.add_argument("--study", help="only this study")
    show.add_argument("--top", type=_positive_int, default=10, help="best trials to list (10)")
    show.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dtune`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "worker":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.dask_options = extra
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader left (``dtune show FILE | head``): stop quietly, as ``cat`` does.
        # Point stdout at /dev/null so that flushing it at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
