"""The benchmarks run (smoke mode; their figures live in docs/PERFORMANCE.md)."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import TF_START_UP_LINES

ROOT = Path(__file__).resolve().parents[1]


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python scripts/NAME ARGS``, checked to exit 0."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _run_code(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c CODE`` in scripts/ (a process of its own), checked to exit 0."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=300, cwd=ROOT / "scripts",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _method_rows(stdout: str, problem: str) -> list[str]:
    """bench_multifidelity's first table's rows for ``problem`` (its 15 columns): one per
    method."""
    rows = [line for line in stdout.splitlines() if line.startswith(f"| {problem} |")]
    return [row for row in rows if len(row.split("|")) == 17]


@pytest.mark.slow
def test_bench_smoke_mode_runs_every_loop_on_every_problem():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for problem in ("branin", "hartmann6", "mixed"):
        assert f"### {problem}" in out.stdout
    loops = ("dtune", "dtune-hedge", "random", "sync-batch", "naive", "liar-copy", "sequential")
    for loop in loops:
        assert f"| {loop} |" in out.stdout
    assert "utilization, dtune / random points:" in out.stdout


def test_bench_optimizer_runs_a_small_grid():
    out = _run_script("bench_optimizer.py", "--problems", "branin", "--seeds", "1",
                      "--trials", "14", "--workers", "3", "--grid", "refit")  # fmt: skip
    assert out.stdout.count("| branin |") == 4  # three schedules and skopt's reference


def test_bench_checkpoint_times_keras_trials_with_and_without_checkpoints():
    out = _run_script("bench_checkpoint.py", "--trials", "1", "--epochs", "3", "--units", "16")
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| 16 |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "1,482"  # parameters
    # weights, Adam's two moments and the best epoch's weights, float32, plus the state
    assert 4 * 4 * 1482 / 1e6 <= float(cells[6]) < 0.1


def test_bench_fit_finds_the_same_optimum_with_both_likelihoods():
    out = _run_script("bench_fit.py", "--problems", "branin,mixed", "--sizes", "30",
                      "--evaluations", "16", "--repeats", "2")  # fmt: skip
    fits = [line for line in out.stdout.splitlines() if line.startswith("| ") and " s |" in line]
    assert len(fits) == 2
    assert all(line.rstrip(" |").endswith(("yes", "same likelihood")) for line in fits)


def test_bench_multifidelity_times_the_rung_cutoffs_afresh_and_kept():
    out = _run_script("bench_multifidelity.py", "--time-cutoffs", "300")
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| ASHA", "| Hyperband"))]
    assert len(rows) == 2, out.stdout
    for row in rows:
        afresh_ms, kept_us = (float(cell) for cell in row.split("|")[2:4])
        assert afresh_ms > 0, row
        assert kept_us > 0, row


@pytest.mark.slow
@pytest.mark.parametrize("cluster", ["warm", "fresh"])
def test_bench_multifidelity_runs_dtune_with_and_without_pruners(cluster):
    out = _run_script("bench_multifidelity.py", "--problems", "branin", "--seeds", "1",
                      "--budget", "3", "--workers", "2", "--epochs", "9", "--epoch", "0.02",
                      "--methods", "none,asha,hyperband,asha-promotion",
                      *(["--fresh"] if cluster == "fresh" else []))  # fmt: skip
    rows = _method_rows(out.stdout, "branin")
    methods = [row.split("|")[2].strip() for row in rows]
    assert methods == ["none", "asha", "hyperband", "asha-promotion"]
    assert " 0 pruned" in out.stdout  # none prunes nothing
    utilization = [float(row.split("|")[10]) for row in rows]
    assert all(0.0 < u <= 1.0 for u in utilization), rows
    # the share of points the driver drew without the model: a percentage of the trials
    drawn = [row.split("|")[15].strip() for row in rows]
    assert all(d.endswith("%") and 0 <= int(d[:-1]) <= 100 for d in drawn), rows


@pytest.mark.slow
def test_bench_multifidelity_without_the_full_budget_search_still_gives_utilization():
    out = _run_script("bench_multifidelity.py", "--problems", "branin", "--seeds", "1",
                      "--budget", "3", "--workers", "2", "--epochs", "9", "--epoch", "0.02",
                      "--methods", "asha", "--overhead", "2")  # fmt: skip
    assert "rungs for a start-up of 2 epochs" in out.stdout  # ASHA(1, 9, 3, overhead=2)
    (row,) = _method_rows(out.stdout, "branin")
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[5:8] == ["–", "–", "–"]  # nothing to match without "none"
    assert int(cells[8]) > 0, row  # trials
    assert 0.0 < float(cells[10]) <= 1.0, row  # utilization


def test_bench_multifidelity_simulated_gives_each_search_the_same_worker_time_and_repeats():
    # 20 worker-s: under 100 results, so no polish or restart search (10-15 s a search on
    # 2 busy cores; at 30 worker-s, 25-80 s, and the script's 300-s timeout ran out)
    def run(methods: str) -> subprocess.CompletedProcess[str]:
        return _run_script("bench_multifidelity.py", "--simulated", "--problems", "branin",
                           "--seeds", "1", "--budget", "600", "--worker-budget", "20",
                           "--epochs", "9", "--methods", methods)  # fmt: skip

    def searches(out: subprocess.CompletedProcess[str]) -> list[str]:
        return [line for line in out.stdout.splitlines() if line.startswith("branin seed 0")]

    out = run("none,asha,asha-joint,asha-promotion")
    assert len(searches(out)) == 4, out.stdout
    for line in searches(out):
        # 20 simulated worker-s; then the 7 other running trials and the one that took
        # the slot freed as the budget was crossed (callbacks run after the refill)
        # finish, each at most 9 epochs of 0.075 s
        spent = float(line.split(" worker-s")[0].rsplit(" ", 1)[1])
        assert 20.0 <= spent <= 20.0 + 9 * 0.675, line
    none, asha, joint, promotion = searches(out)
    assert " 0 pruned" in none
    assert " 0 pruned" not in asha
    assert " 0 pruned" not in joint
    assert " 0 pruned" not in promotion  # paused, and left so
    # The same trials for the same seed, whatever ran before it in the process
    assert searches(run("asha,asha-promotion")) == [asha, promotion]
    rows = _method_rows(out.stdout, "branin")
    methods = [row.split("|")[2].strip() for row in rows]
    assert methods == ["none", "asha", "asha-joint", "asha-promotion"]
    assert rows[1].split("|")[12].strip() == "–"  # no decision times: none are taken
    # the simulated clock waits for the model: no point is drawn without it
    assert [row.split("|")[15].strip() for row in rows] == ["0%"] * 4
    # the full-budget search's own median curve reaches its median end within its time
    assert 0.0 < float(rows[0].split("|")[7]) <= 1.0, rows[0]
    # the pruned trials' estimates against where their curves would have ended, by the
    # step they stopped at: every search that stops trials early, none that does not
    imputed = [r.split("|")[1:-1] for r in out.stdout.splitlines() if r.count("|") == 9]
    imputed = [[c.strip() for c in r] for r in imputed if r[0].strip() == "branin"]
    assert {r[1] for r in imputed} == {"asha", "asha-joint", "asha-promotion"}, out.stdout
    for _, _, step, trials, _, rms, by_spread, by_squares in imputed:
        assert 1 <= int(step) < 9
        assert int(trials) > 0
        assert float(rms) > 0
        # the mean square of the gains is at least their variance: a wider deviation
        assert 0 < float(by_squares) <= float(by_spread)


def test_bench_multifidelity_seeds_split_across_runs_merge_into_one_runs_tables(tmp_path):
    def run(*args: str) -> str:
        return _run_script("bench_multifidelity.py", "--simulated", "--problems", "branin",
                           "--budget", "600", "--worker-budget", "10", "--epochs", "9",
                           "--methods", "none,asha", *args).stdout  # fmt: skip

    whole = run("--seeds", "2")
    first = run("--seeds", "1", "--save", str(tmp_path / "a.json"))
    second = run("--seeds", "1", "--first-seed", "1", "--save", str(tmp_path / "b.json"))
    assert "seeds 1..1" in second
    assert "branin seed 1 asha" in second
    assert "branin seed 0" not in second
    assert "branin seed 1" not in first
    out = _run_script(
        "bench_multifidelity.py", "--from", str(tmp_path / "a.json"), str(tmp_path / "b.json")
    ).stdout
    # one line per file on what it ran on; the same machine and installation: no warning
    said = [line for line in out.splitlines() if line.startswith(("# a.json", "# b.json"))]
    assert len(said) == 2, out
    assert not any("BLAS not recorded" in line for line in said), said
    assert "WARNING" not in out
    merged = "\n".join(line for line in out.splitlines() if line not in said) + "\n"
    assert merged.strip()
    assert merged in whole
    # the W ratio's bootstrap over the two seeds: the median lies in its interval
    (ratios,) = [row for row in merged.splitlines() if row.startswith("| branin | asha | 2 |")]
    cells = [cell.strip() for cell in ratios.split("|")]
    low, high = map(float, cells[7].split("–"))
    assert low <= float(cells[6]) <= high, ratios
    assert cells[8].endswith("%"), ratios
    assert out != _run_script("bench_multifidelity.py", "--from", str(tmp_path / "a.json")).stdout


def test_bench_multifidelity_saves_what_a_run_rests_on_and_warns_across_machines(tmp_path):
    saved = tmp_path / "t.json"
    out = _run_script("bench_multifidelity.py", "--simulated", "--problems", "branin",
                      "--budget", "600", "--worker-budget", "10", "--epochs", "9",
                      "--methods", "none,asha", "--tag", "new",
                      "--save", str(saved)).stdout  # fmt: skip
    assert "branin seed 0 asha@new" in out
    ran = json.loads(saved.read_text())
    assert ran["methods"] == ["none@new", "asha@new"]
    env = ran["environment"]
    assert len(env["commit"]) == 40
    assert env["versions"]["scikit-optimize"]
    assert env["blas"]
    # OpenBLAS (numpy's and scipy's wheels) names the kernel it picked for this CPU
    assert all(b["architecture"] for b in env["blas"] if b["internal_api"] == "openblas")
    assert env["argv"][-2:] == ["--save", str(saved)]
    # the same searches as if run on another BLAS kernel, untagged: read beside them, warned
    other = tmp_path / "other.json"
    env["blas"][0]["architecture"] = "SandyBridge"
    ran["methods"] = ["none", "asha"]
    ran["results"] = {key.replace("@new", ""): r for key, r in ran["results"].items()}
    other.write_text(json.dumps(ran))
    both = _run_script("bench_multifidelity.py", "--from", str(saved), str(other)).stdout
    assert "WARNING: these files ran on different" in both
    assert "(t.json | other.json)" in both
    rows = [row.split("|")[2].strip() for row in both.splitlines() if row.startswith("| branin |")]
    assert {"none", "asha", "asha@new"} <= set(rows), rows
    assert "holds too" not in both  # tagged: no search in both
    # the same searches twice, untagged (another setting's run, say): the later is read, warned
    again = tmp_path / "again.json"
    again.write_text(json.dumps(ran))
    twice = _run_script("bench_multifidelity.py", "--from", str(other), str(again)).stdout
    n = len(ran["results"])
    assert f"WARNING: again.json holds {n} search(es) that other.json holds too" in twice, twice
    bad = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_multifidelity.py"), "--tag", "a|b"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "--tag 'a|b' must be" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_bench_multifidelity_with_a_worker_budget_gives_each_search_the_same_worker_time(
    tmp_path,
):
    saved = tmp_path / "results.json"
    out = _run_script("bench_multifidelity.py", "--problems", "branin", "--seeds", "1",
                      "--budget", "60", "--worker-budget", "2", "--workers", "2",
                      "--epochs", "9", "--epoch", "0.02", "--methods", "none,asha,optuna-tpe+sh",
                      "--save", str(saved))  # fmt: skip
    searches = [line for line in out.stdout.splitlines() if line.startswith("branin seed 0")]
    assert len(searches) == 3, out.stdout
    for line in searches[:2]:  # dtune's: stopped by Study.stop from a callback
        # stopped once 2 worker-s were used; the 2 running trials (< 0.3 s each) finish
        spent = float(line.split(" worker-s")[0].rsplit(" ", 1)[1])
        assert 2.0 <= spent <= 3.5, line
    # The regret at each budget, against the peer, and the saved results give the same
    # tables again without running anything.
    rows = [line for line in out.stdout.splitlines() if line.startswith("| branin | ")]
    by_method = _method_rows(out.stdout, "branin")
    budgets = [row.split("|")[2].strip() for row in rows if row not in by_method]
    budgets = [cell for cell in budgets if cell.endswith("%")]  # not the W ratios' table
    assert budgets == [f"{k}0%" for k in range(1, 11)]
    assert len(by_method) == 3, by_method
    assert "- branin, asha: no worse than the best of optuna-tpe+sh at " in out.stdout
    # the suggestion process's summary reached the results: ASHA's model made batches
    asha = json.loads(saved.read_text())["results"]["branin|asha|0"]
    assert asha["model_batches"] > 0, asha
    assert 0 <= asha["drawn_without_model"] <= asha["trials"], asha
    again = _run_script("bench_multifidelity.py", "--from", str(saved)).stdout.splitlines()
    assert again[0].startswith("# results.json: commit "), again[0]  # what the run rests on
    assert "\n".join(again[1:]).strip() in out.stdout


def test_bench_multifidelity_gives_every_synthetic_run_a_start_up(tmp_path):
    saved = tmp_path / "results.json"
    out = _run_script("bench_multifidelity.py", "--simulated", "--problems", "branin",
                      "--seeds", "1", "--budget", "600", "--worker-budget", "10",
                      "--epochs", "9", "--methods", "none,asha", "--startup", "3",
                      "--overhead", "3", "--save", str(saved))  # fmt: skip
    assert "a start-up of 3 epochs per run, rungs for a start-up of 3 epochs" in out.stdout
    results = json.loads(saved.read_text())["results"]
    for method in ("none", "asha"):
        # 3 mean epochs of start-up, counted in each trial's own epochs (0.5-1.5 of one)
        assert 2.0 <= results[f"branin|{method}|0"]["overhead"] <= 6.0, method
    # A real run sleeps it before its first epoch, every run (a promoted one's again).
    code = (
        "import time\n"
        "from bench_multifidelity import epochs_of\n"
        "started = time.perf_counter()\n"
        "next(epochs_of('branin', {'x1': 0.0, 'x2': 5.0}, 9, 0.0, startup_s=0.3))\n"
        "print(time.perf_counter() - started)\n"
    )
    assert float(_run_code(code).stdout) >= 0.3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--simulated", "--startup", "-1"], "--startup -1 must be a finite number of epochs"),
        (["--startup", "2", "--problems", "keras-digits"], "'keras-digits' pays its own"),
    ],
)
def test_bench_multifidelity_names_a_bad_start_up(args, message):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_multifidelity.py"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2
    assert message in out.stderr


def test_synthetic_curves_exact_end_at_the_function_flat_show_their_end_power_laws_cross():
    code = (
        "import json\n"
        "from bench import evaluate, space_of\n"
        "from bench_multifidelity import epochs_of\n"
        "for problem in ('branin', 'hartmann6', 'mixed'):\n"
        "    space = space_of(problem)\n"
        "    for seed in range(5):\n"
        "        params = {k: d.rvs(1, random_state=seed)[0] for k, d in space.items()}\n"
        "        left = list(epochs_of(problem, params, 27, 0.0))\n"
        "        exact = list(epochs_of(problem, params, 27, 0.0, 'exact'))\n"
        "        flat = list(epochs_of(problem, params, 27, 0.0, 'flat'))\n"
        "        power = list(epochs_of(problem, params, 27, 0.0, 'power'))\n"
        "        row = [problem, evaluate(problem, params)[0], left, exact, flat, power]\n"
        "        print(json.dumps(row))\n"
    )
    out = _run_code(code)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 15
    curves: dict[str, list[list[float]]] = {}
    for problem, final, left, exact, flat, power in rows:
        # A power law: falling at every epoch to a leftover above f(x), by a share of what
        # is left that shrinks (an exponential's is the same at every epoch).
        assert all(a > b for a, b in itertools.pairwise(power)), problem
        assert power[-1] > final, problem
        left_power = [v - final for v in power]
        ratios = [b / a for a, b in itertools.pairwise(left_power)]
        assert all(a < b for a, b in itertools.pairwise(ratios)), problem
        curves.setdefault(problem, []).append(power)
        assert flat == pytest.approx([left[-1]] * 27), problem  # the end, from the first epoch
        assert exact[-1] == pytest.approx(final, abs=1e-9), problem
        assert left[-1] > final + 1e-6, problem  # the default keeps a leftover at the end
        shift = [a - b for a, b in zip(left, exact, strict=True)]
        assert shift == pytest.approx([shift[0]] * 27), problem  # the same curve, lowered
        assert exact[0] > exact[-1], problem  # still falling from the first epoch

    # Power-law curves cross too: on some problem the order at the first epoch is not the
    # order at the last.
    def order(these: list[list[float]], epoch: int) -> list[int]:
        return sorted(range(len(these)), key=lambda k: these[k][epoch])

    assert any(order(these, 0) != order(these, -1) for these in curves.values())


def test_the_keras_workload_trains_a_cnn_and_reports_its_validation_error_each_epoch():
    # In a process of its own: the workload sets TensorFlow's threads before it starts.
    code = (
        "from keras_digits import keras_epochs, keras_space\n"
        "print(sorted(keras_space()))\n"
        "params = dict(learning_rate=0.01, keep_prob=0.9, channels=3, units=32, pool='max')\n"
        "print(list(keras_epochs(params, 3)))\n"
    )
    out = _run_code(code)
    names, errors = (ast.literal_eval(line) for line in out.stdout.splitlines()[-2:])
    assert names == ["channels", "keep_prob", "learning_rate", "pool", "units"]
    assert len(errors) == 3
    assert all(0.0 <= e <= 1.0 for e in errors)
    assert errors[-1] < 0.5  # it learns: ten classes, 0.9 at chance
    # TensorFlow loaded as dtune.keras loads it: no C++ start-up lines in the bench's log
    for noise in TF_START_UP_LINES:
        assert noise not in out.stderr, out.stderr[-3000:]


def test_bench_multifidelity_doctests_pass():
    """The statistics the tables rest on (the median curves, the bootstrap) as documented."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--doctest-modules", "bench_multifidelity.py",
         "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=300, cwd=ROOT / "scripts",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 passed" in out.stdout, out.stdout
