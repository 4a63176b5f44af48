#!/usr/bin/env bash
# Every check, from the project's own files: a fresh virtual environment (.venv) with dtune
# and its `dev` extra, then ruff, mypy and the test suite. Usage, from a fresh clone with
# Python >= 3.10:  bash scripts/test.sh [pytest args]
# DTUNE_REUSE_VENV=1 keeps an existing .venv (quicker while developing).
set -euo pipefail
cd "$(dirname "$0")/.."
# A real browser for the dashboard tests: Debian's chromium and its driver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
fi
if [ "${DTUNE_REUSE_VENV:-0}" != 1 ] || [ ! -x .venv/bin/python ]; then
    python3 -m venv --clear .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
fi
# shellcheck disable=SC1091
source .venv/bin/activate
ruff check dtune tests scripts
ruff format --check dtune tests scripts
mypy
python -m pytest --durations=15 "$@"  # the slowest tests named in the log
