"""The package's shape: an import graph without cycles, modules small enough to read, a public root API."""

import ast
from pathlib import Path

import pytest

import orthoxfer

ROOT = Path(orthoxfer.__file__).resolve().parent
DATA_TABLES = {"orthoxfer.data.classnames"}  # class names and prompt templates: tables, not code
MAX_LINES = 500  # counted as ruff formats them (120 columns, one argument a line where they do not fit)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path) -> set[str]:
    """orthoxfer modules ``path`` imports anywhere (functions included), except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # a submodule imported by name
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in MODULES}


def test_the_import_graph_has_no_cycle():
    graph = {name: imported_modules(path) - {name} for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


def test_the_graph_walker_sees_a_cycle_hidden_in_a_function(tmp_path):
    """The check above would fail on the kind of cycle it exists for: one import at top level, one inside a function."""
    a = tmp_path / "a.py"
    a.write_text("from orthoxfer.vectors import sites\n")
    b = tmp_path / "b.py"
    b.write_text(
        "def f():\n    from orthoxfer.errors import UsageError\n\nif TYPE_CHECKING:\n    import orthoxfer.runs\n"
    )
    assert imported_modules(a) == {"orthoxfer.vectors", "orthoxfer.vectors.sites"}
    assert imported_modules(b) == {"orthoxfer.errors"}  # the function-level import counts, TYPE_CHECKING does not


def test_no_module_is_too_long_to_read():
    long = {
        name: n
        for name, path in MODULES.items()
        if name not in DATA_TABLES and (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_root_exports_the_public_api():
    for name in orthoxfer.__all__:
        assert getattr(orthoxfer, name) is not None
    with pytest.raises(AttributeError):
        orthoxfer.not_a_name  # noqa: B018


def test_readmes_python_examples_import_from_the_root_only():
    readme = (ROOT.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    imports = [line for block in blocks for line in block.splitlines() if line.startswith(("from ", "import "))]
    assert imports and all(line.startswith("from orthoxfer import ") for line in imports), imports
    for line in imports:
        exec(line, {})  # every name resolves
