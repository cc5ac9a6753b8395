"""The layering the code relies on, checked from the source: no import cycles between the parts of
`pipeline` (function-local imports included, so none can hide), and task plug-ins that import nothing
from the modules that call them."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
CALLERS = {"flow", "tune", "serve", "cli", "demo", "predictor", "evaluate", "runtime", "train"}


def part(module: str) -> str | None:
    """pipeline.data.clean -> data; pipeline.flow -> flow; the package root itself -> None."""
    names = module.split(".")
    return names[1] if names[0] == "pipeline" and len(names) > 1 else None


def imports() -> dict[str, set[str]]:
    """Module (dotted) -> every pipeline module it imports, wherever the import statement is."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(("pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("pipeline")}
        out[module] = found
    return out


def test_no_import_cycles_between_the_parts_of_the_package():
    graph: dict[str, set[str]] = {}
    for module, targets in imports().items():
        source = part(module)
        for target in targets:
            if source and part(target) and part(target) != source:
                graph.setdefault(source, set()).add(part(target))

    def cycle_from(start, node, seen):
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = cycle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    for start in graph:
        assert cycle_from(start, start, [start]) is None, " -> ".join(cycle_from(start, start, [start]))


@pytest.mark.parametrize("module", sorted(m for m in imports() if m.startswith("pipeline.tasks")))
def test_task_plugins_import_nothing_from_their_callers(module):
    callers = {t for t in imports()[module] if part(t) in CALLERS}
    assert not callers, f"{module} imports {sorted(callers)}"
