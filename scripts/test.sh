#!/usr/bin/env bash
# Install dtune with its test tools, then run every check: ruff, mypy, the test suite.
# Usage (from a fresh clone, with Python >= 3.10): bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# A real browser for the dashboard tests: Debian's chromium and its driver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
fi
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[dev]"
ruff check dtune tests scripts
ruff format --check dtune tests scripts
mypy
python -m pytest "$@"
