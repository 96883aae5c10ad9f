"""The package's import graph, read from the source with ast: no cycle among xtc modules, no private name
imported from another module, and the settings home (xtc.config, xtc.settings, xtc.files) free of torch so
that `xtc --help`, xtc.study and the Snakefile load it cheaply. (Cross-cutting: it tests no single module.)"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "xtc")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _modules() -> dict[str, str]:
    mods = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                mods[rel.removesuffix(".__init__")] = os.path.join(dirpath, f)
    return mods


MODULES = _modules()


def _imports(name: str, path: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, function-level included."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [a.name for a in node.names]
            # `from xtc.study import paths` imports a module, not a name
            subs = [n for n in names if f"{base}.{n}" in MODULES]
            out += [(f"{base}.{n}", [], node.lineno) for n in subs]
            out.append((base, [n for n in names if n not in subs], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for mod, _, _ in _imports(name, path):
            while mod and mod not in MODULES:  # `import xtc.study.paths` also imports the packages above it
                mod = mod.rpartition(".")[0]
            if mod and mod != name:
                deps.add(mod)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(n):
        colour[n] = "grey"
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if colour.get(d) == "grey":
                return stack[stack.index(d):] + [d]
            if d not in colour and (c := visit(d)):
                return c
        stack.pop()
        colour[n] = "black"
        return None

    for n in sorted(graph):
        if n not in colour and (c := visit(n)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def _in_scope(name: str, scope: str) -> bool:
    return (name == scope or name.startswith(scope + ".")) if scope == "xtc.study" else \
        not (name == "xtc.study" or name.startswith("xtc.study."))


@pytest.mark.parametrize("scope", ["xtc", "xtc.study"])
def test_no_import_cycle_among_xtc_modules(scope):
    graph = _graph()
    assert "xtc.train" in graph["xtc.compress"]  # the graph is really read
    # a package importing its own submodules (xtc.study re-exports them) is not a cycle
    graph = {n: {d for d in deps if not d.startswith(n + ".") and _in_scope(d, scope)}
             for n, deps in graph.items() if _in_scope(n, scope)}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


@pytest.mark.parametrize("scope", ["xtc", "xtc.study"])
def test_no_private_name_imported_across_modules(scope):
    bad = [f"{name}:{line} imports {n} from {mod}" for name, path in MODULES.items() if _in_scope(name, scope)
           for mod, names, line in _imports(name, path) for n in names
           if mod.startswith("xtc") and n.startswith("_") and not n.startswith("__")]
    assert not bad, bad


@pytest.mark.parametrize("light", ["xtc.config", "xtc.settings", "xtc.files"])
def test_settings_home_imports_no_heavy_library(light):
    seen, todo = set(), [light]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for mod, _, _ in _imports(name, MODULES[name]):
            assert mod.split(".")[0] not in {"torch", "transformers", "numpy", "pandas"}, f"{name} imports {mod}"
            if mod in MODULES:
                todo.append(mod)


# ---------------------------------------------------------------- the study's layering


def _xtc_modules() -> dict:
    import glob

    pkg = os.path.join(REPO_ROOT, "xtc")
    out = {}
    for p in glob.glob(os.path.join(pkg, "**", "*.py"), recursive=True):
        name = os.path.relpath(p[:-3], REPO_ROOT).replace(os.sep, ".").removesuffix(".__init__")
        out[name] = p
    return out


def test_no_import_cycle_and_no_private_names_across_modules():
    """Every `xtc` import, also those inside functions: the module graph has no cycle (xtc.study.config and
    xtc.study.grid imported each other), and no module imports another's _private name."""
    import ast

    mods = _xtc_modules()
    graph, private = {}, []
    for name, path in mods.items():
        deps = set()
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "xtc":
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
                private += [f"{name} imports {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in mods and d != name}
    assert not private
    state, cycle = {}, []

    def visit(u, stack):
        state[u] = "open"
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                cycle.append(" -> ".join(stack[stack.index(v):] + [u, v]))
            elif v not in state:
                visit(v, stack + [u])
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u, [])
    assert graph["xtc.study.grid"] and not cycle
