"""The import floors, read from the source: every ``import`` statement, at module level, inside a
function or under ``if TYPE_CHECKING:`` (as import-linter counts them: a module typed against
another's class depends on it as much as one that calls it).

* no import circle among the modules of ``cloudtune``, ``providers`` and ``local_backend``
  outside ``cloudtune/emulators/`` (a circle means neither module can be read, tested or
  replaced without the other). The circles that exist today are listed in ``KNOWN_CIRCLES``
  while they are being taken apart: a circle found must fit inside one listed entry (a
  shrunk or split circle passes), a new or grown one fails. Remove an entry when its circle
  is gone; the test names the stale entries.
* ``cloudtune/`` never imports ``providers`` or ``local_backend``: it reaches providers through
  ``cloudtune.registry`` (by name). ``FLOOR_EXCEPTIONS`` lists the documented exceptions.
"""

from __future__ import annotations

import ast
import warnings
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cloudtune", "providers", "local_backend")
EMULATORS = "cloudtune.emulators"

# Circles being taken apart, each by its own change: a found circle must fit inside one entry.
# Empty since the cleanup/pipeline/uploads/rebuild, local_backend distributed/fsdp/trainer/worker,
# server/vllm_server and catalog/registry/provider_facts circles were removed. Keep it empty.
KNOWN_CIRCLES: list[frozenset[str]] = []
# cloudtune modules allowed to import providers/local_backend, and why
FLOOR_EXCEPTIONS = {
    "cloudtune.quickstart": "the quickstart is the local backend's demo (DEVELOPERS.md): it reaches it by name",
}


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports (the most specific module each statement names)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


@cache
def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def outside_emulators(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    def kept(module: str) -> bool:
        return module != EMULATORS and not module.startswith(EMULATORS + ".")

    return {module: {t for t in targets if kept(t)} for module, targets in graph.items() if kept(module)}


def describe(circle: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in circle for b in graph[a] if b in circle)
    return f"{{{', '.join(sorted(circle))}}} through {'; '.join(edges)}"


def test_no_new_import_circle_outside_the_emulators() -> None:
    graph = outside_emulators(import_graph())
    found = circles(graph)
    unexpected = [c for c in found if not any(c <= known for known in KNOWN_CIRCLES)]
    assert not unexpected, "import circle(s) not in KNOWN_CIRCLES:\n" + "\n".join(describe(c, graph) for c in unexpected)
    stale = [known for known in KNOWN_CIRCLES if not any(c & known for c in found)]
    if stale:  # not a failure: whoever removed it lands green, and the next reader deletes the entry
        warnings.warn(f"KNOWN_CIRCLES entries that no longer exist (delete them): {[sorted(s) for s in stale]}",
                      stacklevel=1)


def test_the_circle_finder_sees_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [frozenset({"a", "b", "c"})]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_core_reaches_providers_only_through_the_registry() -> None:
    graph = import_graph()
    crossing = sorted(f"{module} -> {target}" for module, targets in graph.items()
                      if module.split(".")[0] == "cloudtune" and module not in FLOOR_EXCEPTIONS
                      for target in targets if target.split(".")[0] in ("providers", "local_backend"))
    assert not crossing, f"cloudtune/ imports providers or local_backend directly (use cloudtune.registry): {crossing}"


def test_the_import_reader_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "cloudtune.errors" in graph["cloudtune.pipeline"]
    assert "cloudtune.run_context" in graph["cloudtune.uploads"]  # under TYPE_CHECKING
    assert "local_backend.quickstart" in graph["cloudtune.quickstart"]  # inside a function
    assert any(target.startswith("providers.openai") for target in graph["providers.azure._openai_route"])


def test_emulator_route_modules_reach_their_state_through_a_store() -> None:
    """Inside ``cloudtune/emulators/`` too: no import circle, and no route module imports its app (route
    modules are ``register(router, store)`` functions; only the package and its command build the app)."""
    graph = import_graph()
    emulators = {module: {t for t in targets if t.startswith(EMULATORS + ".")}
                 for module, targets in graph.items() if module.startswith(EMULATORS + ".")}
    assert not circles(emulators), "import circle(s) among the emulators:\n" + "\n".join(
        describe(c, emulators) for c in circles(emulators))
    apps = {f"{EMULATORS}.openai.app", f"{EMULATORS}.azure._app"}
    builders = {f"{EMULATORS}.{kind}{part}" for kind in ("openai", "azure") for part in ("", ".command")}
    reaching = sorted(f"{module} -> {target}" for module, targets in emulators.items() if module not in builders
                      for target in targets & apps)
    assert not reaching, f"emulator modules that import an app (take the store instead): {reaching}"
