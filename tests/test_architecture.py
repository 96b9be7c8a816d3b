"""The package's shape, as docs/design.md §1 states it: imports point down the layer order, no
module imports itself back through others, and modules, classes and functions stay short
enough to read. Everything is read with ``ast``, so lazy imports inside functions and
``TYPE_CHECKING`` imports count like any other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aim_cli"
DESIGN = ROOT / "docs" / "design.md"

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 350
MAX_FUNCTION_LINES = 80
#: A definition may pass a limit only with this comment on the line above it, saying why.
SIZE_EXCEPTION = "# size-exception:"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layers() -> dict[str, int]:
    """Package or module prefix -> rank, from the ``layer N  name name`` lines of docs/design.md."""
    ranks = {}
    for line in DESIGN.read_text().splitlines():
        m = re.fullmatch(r"layer (\d+)\s+(.+)", line.strip())
        if m:
            for name in m.group(2).split():
                ranks[name] = int(m.group(1))
    return ranks


def rank_of(module: str, ranks: dict[str, int]) -> int | None:
    """The rank of the longest prefix of ``module`` that the layer table names."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ranks:
            return ranks[prefix]
    return None


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The aim_cli modules that ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            # `from aim_cli.pull import plan` imports the module aim_cli.pull.plan.
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name.split(".")[0] == "aim_cli" and name != module:
                found.add(name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_layer_table_is_in_the_design_doc_and_names_every_module():
    ranks = layers()
    assert len(set(ranks.values())) >= 8, "docs/design.md §1 lost its layer lines"
    unranked = [m for m in MODULES if rank_of(m, ranks) is None]
    assert not unranked, f"modules without a layer in docs/design.md §1: {unranked}"
    stale = [name for name in ranks if not any(m == name or m.startswith(name + ".") for m in MODULES)]
    assert not stale, f"docs/design.md §1 names what does not exist: {stale}"


def test_imports_point_down_the_layers():
    ranks = layers()
    upward = [
        f"{m} (layer {rank_of(m, ranks)}) imports {t} (layer {rank_of(t, ranks)})"
        for m, targets in GRAPH.items()
        for t in sorted(targets)
        if (rank_of(t, ranks) or 0) > (rank_of(m, ranks) or 0)
    ]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above would pass vacuously if the finder were broken."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert imports_of("aim_cli.api"), "the import reader found nothing in aim_cli.api"


def _excused(lines: list[str], node: ast.AST) -> bool:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    return first >= 2 and SIZE_EXCEPTION in lines[first - 2]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_sizes_a_reader_can_hold(module):
    path = MODULES[module]
    text = path.read_text()
    lines = text.splitlines()
    too_big = []
    if len(lines) > MAX_MODULE_LINES and SIZE_EXCEPTION not in "\n".join(lines[:5]):
        too_big.append(f"module: {len(lines)} lines > {MAX_MODULE_LINES}")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        length = node.end_lineno - node.lineno + 1
        if length > limit and not _excused(lines, node):
            too_big.append(f"{node.name} (line {node.lineno}): {length} lines > {limit}")
    assert not too_big, f"{path.relative_to(ROOT)}: " + "; ".join(too_big)


def test_every_cited_design_section_exists():
    """Code comments cite the design doc as ``docs/design.md §N``: each N must be a section."""
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", DESIGN.read_text(), re.M))
    assert {"1", "3.4", "11"} <= sections, "docs/design.md lost its numbered sections"
    cited = {}
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        text = path.read_text()
        for ref in re.findall(r"docs/design\.md §(\d+(?:\.\d+)?)", text):
            cited.setdefault(ref, path.relative_to(ROOT))
        for ref in re.findall(r"(?<!design\.md )§(\d+(?:\.\d+)?)", text) if "docs/design.md" in text else []:
            cited.setdefault(ref, path.relative_to(ROOT))
    assert cited, "no citation of docs/design.md found: the reader is broken"
    missing = {ref: str(where) for ref, where in cited.items() if ref not in sections}
    assert not missing, f"cited sections that docs/design.md does not have: {missing}"
