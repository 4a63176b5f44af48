"""``import dtune`` stays light: heavy optional packages load only when used."""

from __future__ import annotations

import subprocess
import sys


def test_import_dtune_does_not_import_heavy_packages():
    code = (
        "import sys, dtune; "
        "heavy = ['tensorflow', 'keras', 'torch', 'bokeh', 'matplotlib', 'distributed', "
        "'tqdm', 'skopt', 'sklearn', 'scipy', 'numpy', 'pandas']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_doctests_of_the_public_modules_pass():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--doctest-modules",
            "dtune",
            "-p",
            "no:cacheprovider",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:]
