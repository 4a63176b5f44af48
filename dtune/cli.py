"""The ``dtune`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


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
    study.optimize(digits_objective, n_trials=args.trials, n_workers=args.workers)
    _print_summary(study, top=5)
    print(f"\nstore: {storage}")
    print(f"inspect it again with: dtune show {args.storage}")
    return 0


def _print_summary(study: object, top: int) -> None:
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
    print(f"worker utilization: {utilization(trials):.2f}")
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
    demo.set_defaults(func=_demo)

    show = commands.add_parser("show", help="summarize the studies in a store file")
    show.add_argument("file", help="the SQLite store")
    show.add_argument("--study", help="only this study")
    show.add_argument("--top", type=_positive_int, default=10, help="best trials to list (10)")
    show.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dtune`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
