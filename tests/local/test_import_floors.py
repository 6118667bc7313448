"""local_backend's training side has floors, not circles: no module imports (at the top or inside a function)
a module that imports it back, directly or through others. Launching (launch.py) sits above
the job runner (runner.py), which sits above the trainer, which uses the parallel strategies
(parallel.py, fsdp.py) without knowing how processes were started."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "local_backend"


def _graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "local_backend":
                    names = [alias.name for alias in node.names]
                elif node.module.startswith("local_backend."):
                    names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("local_backend.")]
            graph[path.stem] |= {n for n in names if n in modules and n != path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


SERVING = {"server", "vllm_server", "deployments", "inference", "openai_api"}  # the serving side has its own floors


def test_training_modules_have_no_import_circle() -> None:
    graph = {m: deps - SERVING for m, deps in _graph().items() if m not in SERVING}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_strategies_know_nothing_of_launching() -> None:
    graph = _graph()
    for low in ("parallel", "fsdp", "trainer", "runner"):
        assert not graph[low] & {"launch", "worker"}, (low, graph[low])
    assert "distributed" not in graph  # split into parallel.py (strategies) and launch.py (launching)
