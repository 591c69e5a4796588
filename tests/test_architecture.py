"""Static architecture checks for the erasekit package: which module may import which.

Data flows one way: models → edits → sampling and training → methods and attacks → evaluation → bench, report,
CLI. A lower layer never imports a higher one, not even lazily inside a function, so each layer can be read,
tested and reused without the ones above it, and import order can never decide whether the package works.

Every module under src/erasekit is parsed with `ast` (nothing is imported) and each import of another erasekit
module is collected: top-level imports *and* imports nested in functions, methods and classes, absolute
(`import erasekit.x`, `from erasekit.x import y`) and relative (`from ..x import y`, `from . import y`).

Resolution rules:
- `from pkg import name` depends on the submodule `pkg.name` when `pkg/name.py` or `pkg/name/__init__.py` exists,
  otherwise on `pkg` itself (its `__init__`).
- Importing a submodule also runs its parent packages' `__init__`, so an import of `erasekit.a.b.c` also counts
  as an (implied) import of `erasekit.a.b` and `erasekit.a` -- but never of the root `erasekit`, and never of a
  package that already contains the importing module (that one is running already).

Checks:
1. no import cycle between modules;
2. no import cycle between top-level parts (`erasekit.edits.base` → `edits`, `erasekit.bench` → `bench`);
3. nothing inside the package imports the package root (`import erasekit`, `from .. import __version__`);
4. parts import only downwards, following PART_LAYER (equal layers only for pairs in ALLOWED_SIBLINGS);
5. every import names a module that exists (a stale name would hide an edge from the checks above);
plus self-tests of the walker on small fake packages, so the checks are known to be able to fail.
"""
from __future__ import annotations

import ast
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "erasekit"

# Lower number = lower layer. A part may import parts of a strictly lower layer; an equal layer only when the pair
# (importer, imported) is in ALLOWED_SIBLINGS.
PART_LAYER = {
    "errors": 0, "utils": 0, "version": 0,
    "models": 1, "concepts": 1, "shapeworld": 1, "testing": 1,
    "edits": 2,
    "sampling": 3, "training": 3, "closed_form": 3, "detectors": 3,
    "methods": 4, "attacks": 4, "shapeworld-trainers": 4,
    "evaluation": 5, "harden": 5,
    "bench": 6,
    "cli": 7,
}

# (a, b): part a may import part b although both are on the same layer. The reverse direction stays forbidden.
ALLOWED_SIBLINGS = {
    ("shapeworld", "models"),
    ("concepts", "shapeworld"),
    ("concepts", "models"),
    ("training", "sampling"),  # the training loop may use the sampler
    ("testing", "shapeworld"),  # tiny test models use ShapeWorld's tokenizer builder
    ("testing", "models"),
    ("harden", "evaluation"),  # red-team in the loop runs the attacks and scores them as the evaluation does
}

# Modules that form a part of their own inside another part's folder (names relative to the package). ShapeWorld's
# trainers live beside what they train, and keep their `python -m erasekit.shapeworld.…` commands, but run on
# training/ (layer 3), so they sit above it, beside methods; nothing imports them but each other.
MODULE_PARTS = {
    "shapeworld.train": "shapeworld-trainers",
    "shapeworld.classifier.train": "shapeworld-trainers",
    "shapeworld.classifier.__main__": "shapeworld-trainers",
}

# Modules whose own imports are not held to the layer table: the root re-exports the public API, __main__ runs it.
EXEMPT_IMPORTERS = {"", "__main__"}  # names relative to the package: "" is the root __init__


# ----------------------------------------------------------------------------------------------- the walker


@dataclass(frozen=True)
class Import:
    """One dependency of `importer` on `target` (both full dotted module names) made by one import statement."""
    importer: str
    target: str
    path: Path
    line: int
    statement: str
    implied: bool = False  # a parent package __init__ that Python runs, not the module named in the statement

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        note = "  [implied: runs this package's __init__]" if self.implied else ""
        return f"{self.importer} -> {self.target}    {self.where()}: {self.statement}{note}"


def find_modules(package_dir: Path) -> dict[str, Path]:
    """Every module of the package rooted at package_dir: dotted name → file (a package is its __init__.py)."""
    package_dir = Path(package_dir)
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(not p.isidentifier() for p in parts):
            continue  # not importable (e.g. a scripts folder with dashes)
        modules[".".join((package_dir.name,) + parts)] = path
    return modules


def is_package(module: str, modules: dict[str, Path]) -> bool:
    return modules[module].name == "__init__.py"


def parents_of(module: str) -> list[str]:
    """Dotted parents, nearest first: "a.b.c" → ["a.b", "a"]."""
    pieces = module.split(".")
    return [".".join(pieces[:i]) for i in range(len(pieces) - 1, 0, -1)]


def containing_packages(module: str, modules: dict[str, Path]) -> set[str]:
    """Packages whose __init__ has already run when `module` runs: its ancestors, and itself if it is a package."""
    return set(parents_of(module)) | ({module} if is_package(module, modules) else set())


def resolve_relative(module: str, level: int, name: str | None, modules: dict[str, Path]) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    package = module if is_package(module, modules) else module.rpartition(".")[0]
    pieces = package.split(".")
    if level - 1 >= len(pieces):
        raise ValueError(f"{modules[module]}: relative import with {level} dots goes above the top package")
    base = ".".join(pieces[: len(pieces) - (level - 1)])
    return f"{base}.{name}" if name else base


def _in_package(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def _statement_targets(node: ast.Import | ast.ImportFrom, module: str, root: str,
                       modules: dict[str, Path]) -> list[str]:
    """The modules one import statement names (before adding implied parent packages)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if _in_package(alias.name, root)]
    base = resolve_relative(module, node.level, node.module, modules) if node.level else node.module
    if not base or not _in_package(base, root):
        return []
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if alias.name != "*" and submodule in modules else base)
    return list(dict.fromkeys(targets))


def imports_of(module: str, modules: dict[str, Path], root: str, shown_from: Path) -> list[Import]:
    """All imports of package modules made anywhere in `module`'s source, nested ones included."""
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    already_running = containing_packages(module, modules)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        statement = ast.unparse(node)
        statement = statement if len(statement) <= 100 else statement[:97] + "..."
        shown = path.relative_to(shown_from)
        explicit = _statement_targets(node, module, root, modules)
        for target in explicit:
            found.append(Import(module, target, shown, node.lineno, statement))
        implied = {parent for target in explicit for parent in parents_of(target)
                   if parent in modules  # a namespace package (no __init__.py) runs no code
                   and parent != root and parent not in already_running and parent not in explicit}
        for parent in sorted(implied):
            found.append(Import(module, parent, shown, node.lineno, statement, implied=True))
    return found


def collect_imports(package_dir: Path) -> tuple[dict[str, Path], list[Import]]:
    """Walk the package rooted at package_dir: its modules and every import between them, sorted by place."""
    package_dir = Path(package_dir)
    modules = find_modules(package_dir)
    assert modules, f"no Python modules found under {package_dir}"
    edges = [edge for module in modules for edge in imports_of(module, modules, package_dir.name, package_dir.parent)]
    return modules, sorted(edges, key=lambda e: (str(e.path), e.line, e.target))


# ----------------------------------------------------------------------------------------------- graphs


def build_graph(nodes, edges: list[tuple[str, str]]) -> dict[str, set[str]]:
    graph = {node: set() for node in nodes}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)
        graph.setdefault(target, set())
    return graph


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; each component's members sorted, components in a stable order."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def cyclic_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Components that contain a cycle: more than one member, or one member importing itself."""
    return [c for c in strongly_connected_components(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def shortest_path(graph: dict[str, set[str]], inside: set[str], start: str, goal: str) -> list[str] | None:
    """Breadth-first: a shortest path start → ... → goal using only nodes in `inside`."""
    previous, queue = {start: None}, deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return path[::-1]
        for succ in sorted(graph[node] & inside):
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    return None


def cycles_in(graph: dict[str, set[str]], members: list[str]) -> list[list[str]]:
    """For each edge inside a component, a shortest cycle through it, as a closed path [a, b, ..., a] rotated to start
    at its smallest node; distinct cycles, shortest first. Every edge of the component lies on one of them."""
    inside = set(members)
    found = set()
    for source in members:
        for target in sorted(graph[source] & inside):
            loop = [source] + shortest_path(graph, inside, target, source)[:-1] if target != source else [source]
            first = loop.index(min(loop))
            found.add(tuple(loop[first:] + loop[:first]))
    return [list(loop) + [loop[0]] for loop in sorted(found, key=lambda loop: (len(loop), loop))]


def shortest_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    return cycles_in(graph, members)[0]


def describe_cycles(graph: dict[str, set[str]], edges: list[Import], key=lambda name: name,
                    most: int = 30) -> list[str]:
    """One report block per cyclic component: its members, the cycles to break (a shortest one through each edge),
    and every import statement inside it. `key` maps a module name to its graph node (a module, or its part)."""
    blocks = []
    for members in cyclic_components(graph):
        inside = set(members)
        cycles = cycles_in(graph, members)
        shown = [f"    {' -> '.join(cycle)}" for cycle in cycles[:most]]
        if len(cycles) > most:
            shown.append(f"    ... and {len(cycles) - most} more")
        blocks.append("\n".join([
            f"strongly connected component of {len(members)}: {', '.join(members)}",
            "  cycles (a shortest one through each import edge):", *shown,
            "  import statements inside this component:",
            *(f"    {e}" for e in edges if key(e.importer) in inside and key(e.target) in inside),
        ]))
    return blocks


def module_cycles(edges: list[Import], modules) -> list[str]:
    graph = build_graph(modules, [(e.importer, e.target) for e in edges])
    return describe_cycles(graph, edges)


# ----------------------------------------------------------------------------------------------- parts and layers


def part_of(module: str) -> str:
    """The first component under the package: "erasekit.edits.base" → "edits"; "" for the root itself; the part
    MODULE_PARTS names for a module listed there."""
    pieces = module.split(".")
    return MODULE_PARTS.get(".".join(pieces[1:]), pieces[1] if len(pieces) > 1 else "")


def cross_part_edges(edges: list[Import]) -> list[Import]:
    """Imports between two different parts; the root package belongs to no part (see the root-import test).
    Implied parent-package edges are left out: a parent is in the same part as the module named, never the root."""
    return [e for e in edges if not e.implied
            and part_of(e.importer) and part_of(e.target) and part_of(e.importer) != part_of(e.target)]


def part_cycles(edges: list[Import]) -> list[str]:
    crossing = cross_part_edges(edges)
    graph = build_graph({part_of(e.importer) for e in crossing}, [(part_of(e.importer), part_of(e.target))
                                                                  for e in crossing])
    return describe_cycles(graph, crossing, key=part_of)


def missing_targets(edges: list[Import], modules, package_dir: Path) -> list[Import]:
    """Imports naming a package module that does not exist (a stale name after a move hides a real edge)."""
    def exists(name):
        return name in modules or package_dir.parent.joinpath(*name.split(".")).is_dir()  # namespace package
    return [e for e in edges if not exists(e.target)]


def root_imports(edges: list[Import], root: str) -> list[Import]:
    return [e for e in edges if e.target == root and e.importer != root]


def layer_problems(edges: list[Import], modules, part_layer: dict[str, int],
                   allowed_siblings: set[tuple[str, str]]) -> tuple[dict[str, list[str]], list[tuple[str, Import]]]:
    """Parts missing from the table (part → its modules), and (reason, import) for each upward or sideways import."""
    unknown = defaultdict(list)
    for module in modules:
        if part_of(module) not in EXEMPT_IMPORTERS and part_of(module) not in part_layer:
            unknown[part_of(module)].append(module)
    violations = []
    for e in cross_part_edges(edges):
        source, target = part_of(e.importer), part_of(e.target)
        if source in EXEMPT_IMPORTERS or source not in part_layer or target not in part_layer:
            continue
        if part_layer[target] > part_layer[source]:
            violations.append((f"{source} (layer {part_layer[source]}) imports higher {target} "
                               f"(layer {part_layer[target]})", e))
        elif part_layer[target] == part_layer[source] and (source, target) not in allowed_siblings:
            violations.append((f"{source} imports its sibling {target} (both layer {part_layer[source]}; "
                               f"not in ALLOWED_SIBLINGS)", e))
    return dict(unknown), violations


def describe_layer_problems(unknown: dict[str, list[str]], violations: list[tuple[str, Import]]) -> str:
    lines = []
    for part, members in sorted(unknown.items()):
        lines.append(f"part {part!r} is not in PART_LAYER: add it to PART_LAYER (modules: {', '.join(members)})")
    grouped = defaultdict(list)
    for reason, edge in violations:
        grouped[reason].append(edge)
    for reason, group in sorted(grouped.items()):
        lines.append(reason + ":")
        lines.extend(f"    {e}" for e in group)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- the checks


def _walk_erasekit():
    return collect_imports(PACKAGE_DIR)


def test_no_module_import_cycles():
    modules, edges = _walk_erasekit()
    blocks = module_cycles(edges, modules)
    assert not blocks, f"{len(blocks)} import cycle(s) between erasekit modules:\n\n" + "\n\n".join(blocks)


def test_no_cycles_between_top_level_parts():
    _, edges = _walk_erasekit()
    blocks = part_cycles(edges)
    assert not blocks, (f"{len(blocks)} import cycle(s) between top-level parts of erasekit:\n\n"
                        + "\n\n".join(blocks))


def test_package_root_not_imported_from_inside():
    _, edges = _walk_erasekit()
    offending = root_imports(edges, PACKAGE_DIR.name)
    assert not offending, (
        "modules inside erasekit import the package root (import what you need from the module that defines it;"
        " the version belongs in a low-level module):\n" + "\n".join(f"    {e}" for e in offending))


def test_layers_import_downwards():
    modules, edges = _walk_erasekit()
    unknown, violations = layer_problems(edges, modules, PART_LAYER, ALLOWED_SIBLINGS)
    assert not unknown and not violations, (
        f"{len(unknown)} part(s) missing from PART_LAYER, {len(violations)} import(s) against the layering:\n"
        + describe_layer_problems(unknown, violations))


def test_imports_name_existing_modules():
    modules, edges = _walk_erasekit()
    missing = missing_targets(edges, modules, PACKAGE_DIR)
    assert not missing, ("imports of erasekit modules that do not exist (the checks above cannot see these edges):\n"
                         + "\n".join(f"    {e}" for e in missing))

# ----------------------------------------------------------------------------------------------- self-tests


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_walker_finds_cycle_through_nested_and_relative_imports(tmp_path):
    package = _write_package(tmp_path / "fakepkg", {
        "__init__.py": "",
        "a.py": "import fakepkg.b\n",
        "b.py": "def f():\n    from .c import thing\n    return thing\n",
        "c.py": "thing = 1\n\nfrom . import a\n",
    })
    modules, edges = collect_imports(package)
    assert {(e.importer, e.target, e.line) for e in edges} == {
        ("fakepkg.a", "fakepkg.b", 1), ("fakepkg.b", "fakepkg.c", 2), ("fakepkg.c", "fakepkg.a", 3)}
    graph = build_graph(modules, [(e.importer, e.target) for e in edges])
    assert cyclic_components(graph) == [["fakepkg.a", "fakepkg.b", "fakepkg.c"]]
    assert shortest_cycle(graph, ["fakepkg.a", "fakepkg.b", "fakepkg.c"]) == [
        "fakepkg.a", "fakepkg.b", "fakepkg.c", "fakepkg.a"]
    [block] = module_cycles(edges, modules)
    assert "    fakepkg.a -> fakepkg.b -> fakepkg.c -> fakepkg.a\n" in block
    assert "fakepkg/b.py:2: from .c import thing" in block

    (package / "c.py").write_text("thing = 1\n")  # break the cycle: the checks must then pass
    modules, edges = collect_imports(package)
    assert module_cycles(edges, modules) == [] and part_cycles(edges) == []


def test_walker_resolves_relative_and_implied_imports(tmp_path):
    package = _write_package(tmp_path / "fakepkg", {
        "__init__.py": "VERSION = '1'\n",
        "a.py": "from fakepkg.sub.deep import mod\nfrom .sub import helper\n",
        "b.py": "from . import VERSION\n",
        "sub/__init__.py": "helper = 1\n",
        "sub/x.py": "y = 1\n",
        "sub/deep/__init__.py": "from .. import x\n",
        "sub/deep/mod.py": "from ..x import y\nfrom ... import a\n",
        "broken.py": "def f():\n    from .gone import thing\n",
    })
    modules, edges = collect_imports(package)
    found = {(e.importer, e.target, e.implied) for e in edges}
    assert found == {
        ("fakepkg.a", "fakepkg.sub.deep.mod", False),
        ("fakepkg.a", "fakepkg.sub.deep", True),  # parent packages run first; the root does not count
        ("fakepkg.a", "fakepkg.sub", True),
        ("fakepkg.a", "fakepkg.sub", False),  # `helper` is not a submodule: the package itself
        ("fakepkg.b", "fakepkg", False),  # the root, for a plain name
        ("fakepkg.sub.deep", "fakepkg.sub.x", False),  # a package's __init__ resolves `..` from itself
        ("fakepkg.sub.deep.mod", "fakepkg.sub.x", False),  # two levels deep; own ancestors are not edges
        ("fakepkg.sub.deep.mod", "fakepkg.a", False),
        ("fakepkg.broken", "fakepkg.gone", False),
    }
    assert [(e.importer, e.target, e.line) for e in missing_targets(edges, modules, package)] == [
        ("fakepkg.broken", "fakepkg.gone", 2)]
    assert [str(e.path) for e in root_imports(edges, "fakepkg")] == [str(Path("fakepkg/b.py"))]
    blocks = module_cycles(edges, modules)  # a -> sub.deep.mod -> a
    assert len(blocks) == 1 and "fakepkg.a, fakepkg.sub.deep.mod" in blocks[0]
    unknown, violations = layer_problems(edges, modules, {"a": 1, "sub": 0}, set())
    assert unknown == {"b": ["fakepkg.b"], "broken": ["fakepkg.broken"]}
    assert [(part_of(e.importer), part_of(e.target)) for _, e in violations] == [("sub", "a")]


def test_a_module_listed_in_module_parts_is_its_own_part(tmp_path):
    package = _write_package(tmp_path / "fakepkg", {
        "__init__.py": "",
        "training/__init__.py": "",
        "shapeworld/__init__.py": "",
        "shapeworld/render.py": "",
        "shapeworld/train.py": "from ..training import x\nfrom .render import y\n",
        "shapeworld/domain.py": "from ..training import x\n",
    })
    modules, edges = collect_imports(package)
    assert part_of("fakepkg.shapeworld.train") == "shapeworld-trainers"
    assert part_of("fakepkg.shapeworld.render") == "shapeworld"
    _, violations = layer_problems(edges, modules, PART_LAYER, ALLOWED_SIBLINGS)
    assert [(e.importer, e.target) for _, e in violations] == [("fakepkg.shapeworld.domain", "fakepkg.training")]
