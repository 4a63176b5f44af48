#!/usr/bin/env bash
# Install dtune with its test tools, then run every check: ruff, mypy, the test suite.
# Usage (from a fresh clone, with Python >= 3.10): bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[dev]"
ruff check dtune tests scripts
ruff format --check dtune tests scripts
mypy
python -m pytest "$@"
