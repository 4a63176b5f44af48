"""Execute the notebooks top to bottom and save them with their outputs (to refresh what
is committed). The test suite executes them the same way, in a scratch folder.

Usage: python scripts/run_notebooks.py [notebooks/NAME.ipynb ...]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def execute(path: Path, workdir: Path) -> nbformat.NotebookNode:
    """Run every cell of ``path`` with ``workdir`` as the current folder."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}
    ).execute()
    return notebook


def main(paths: list[str]) -> None:
    for path in [Path(p) for p in paths] or NOTEBOOKS:
        workdir = Path(tempfile.mkdtemp(prefix="dtune-notebook-"))
        try:
            notebook = execute(path, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        nbformat.write(notebook, path)
        print(f"executed {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
