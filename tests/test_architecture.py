"""The architecture's promises, checked on the source: no import circle among the package's
modules, no task known by name outside ``tasks/``, no module too long without a reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src" / "malpyeong"
SCRIPTS = [p for d in ("run", "orpo", "ensemble", "eda") for p in (ROOT / d).glob("*.py")]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Internal modules imported at module level (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("malpyeong"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("malpyeong"))
    return found


def test_no_import_circle():
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: {i for i in top_level_imports(p) if i in modules and i != m} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_task_known_by_name_outside_tasks():
    offenders = []
    for path in [*SRC.rglob("*.py"), *SCRIPTS]:
        if "tasks" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r"""["'](cci|dcs|rag|culture)["']|\.summary\b|kind\s*[!=]=\s*["'](choice|generate)""", line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_modules_stay_small_or_say_why():
    long = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        # 600 hand-wrapped lines were the limit; ruff format lays the same code out in about
        # 16% more lines (20,961 -> 24,309 for the whole package), so the limit is 720.
        if text.count("\n") > 720 and "Why this module is long" not in text:
            long.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    assert long == []


# The package's layers, lowest first. A module may import from its own layer or a lower one,
# never from a higher one. The ground floor is split in two: errors, io and rules stand on
# nothing; data and cli stand on the task interface (data reads items through a task's parser,
# cli builds every script's --task from the registry), so they sit just above tasks/.
LAYERS = [
    {"errors", "io", "rules"},
    {"metrics"},
    {"retrieval"},
    {"tasks"},
    {"data", "cli"},
    {"models"},
    {"inference"},
    {"training"},
    {"ensemble"},
    {"prep"},
    {"eda", "merging", "dialogue"},
    {"serving"},
]
GROUND_FLOOR = {"__init__", "errors", "io", "rules", "data", "cli"}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for n, names in enumerate(LAYERS):
        if top in names:
            return n
    raise AssertionError(f"{module}: its package {top!r} is in no layer of LAYERS")


def test_only_the_ground_floor_at_the_top():
    loose = sorted(p.stem for p in SRC.glob("*.py") if p.stem not in GROUND_FLOOR)
    assert loose == []


def test_imports_never_run_up_a_layer():
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    upward = []
    for m, p in sorted(modules.items()):
        if m == "malpyeong":
            continue
        for i in sorted(top_level_imports(p)):
            if i in modules and i != "malpyeong" and layer_of(i) > layer_of(m):
                upward.append(f"{m} -> {i}")
    assert upward == []
