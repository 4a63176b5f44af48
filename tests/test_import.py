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


def test_importing_any_dtune_module_leaves_the_scripts_folder_on_sys_path(tmp_path):
    # A user's script imports a module beside it after dtune: importing the suggestion
    # process's module once deleted sys.path[0], the script's own folder.
    (tmp_path / "mymodels.py").write_text("NAME = 'beside the script'\n")
    script = tmp_path / "train.py"
    script.write_text(
        "import importlib, pkgutil, sys\n"
        "import dtune\n"
        "before = list(sys.path)\n"
        "for info in pkgutil.walk_packages(dtune.__path__, 'dtune.'):\n"
        "    if info.name != 'dtune.keras':  # TensorFlow: slow, and not the point\n"
        "        importlib.import_module(info.name)\n"
        "assert sys.path == before, (before, sys.path)\n"
        "import mymodels\n"
        "print(mymodels.NAME)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "beside the script"
