"""The package's layout: dependencies run one way (docs/ARCHITECTURE.md), checked by
reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "dtune"

# Each module (or package) may import only those of a lower rank, and its own package.
RANKS = {
    "trial": 0,
    "exceptions": 0,
    "jsonable": 0,
    "reporting": 1,
    "pruners": 1,
    "_isolated": 2,
    "space": 1,
    "stats": 1,
    "storage": 2,
    "optimizer": 2,
    "cluster": 3,
    "execution": 4,
    "ledger": 5,
    "suggest": 6,
    "driver": 7,
    "sim": 7,
    "dashboard": 8,
    "study": 9,
    "plots": 10,
    "retrain": 10,
    "keras": 10,
    "demo": 10,
    "cli": 11,
    "__init__": 12,  # the root's re-exports load any module
}


def _unit(module: str) -> str:
    """``dtune.optimizer.core`` -> ``optimizer``."""
    return module.split(".")[1]


def _runtime_imports(tree: ast.AST) -> list[str]:
    """dtune modules imported anywhere in ``tree`` (inside functions too), except under
    ``if TYPE_CHECKING:`` (annotations only)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names if a.name.startswith("dtune."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "dtune":  # a module, or a name the package root re-exports
                for alias in node.names:
                    is_module = (PACKAGE / alias.name).is_dir() or (
                        PACKAGE / f"{alias.name}.py"
                    ).is_file()
                    if is_module:
                        found.append(f"dtune.{alias.name}")
                    elif alias.name != "__version__":
                        found.append(f"dtune.__init__.{alias.name}")
            elif node.module.startswith("dtune."):
                found.append(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_every_module_has_a_rank():
    units = {p.stem if p.parent == PACKAGE else p.parent.name for p in PACKAGE.rglob("*.py")}
    assert units == set(RANKS)


def test_dependencies_run_one_way():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if relative.parts == ("dtune", "__init__"):
            continue  # the package root re-exports lazily
        unit = relative.parts[1]
        for imported in _runtime_imports(ast.parse(path.read_text())):
            other = _unit(imported)
            if other != unit and RANKS[other] >= RANKS[unit]:
                wrong.append(f"{'.'.join(relative.parts)} imports {imported}")
    assert wrong == []


def test_the_driver_knows_neither_the_study_nor_the_dashboard():
    tree = ast.parse((PACKAGE / "driver.py").read_text())
    imported = {_unit(m) for m in _runtime_imports(tree)}
    assert not imported & {"study", "dashboard"}
