"""Project-wide rules: core is UI-free, the README's test command is what CI runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_never_imports_streamlit():
    for path in sorted((ROOT / "core").glob("*.py")):
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path.name
    code = (
        "import importlib, pkgutil, sys, core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    if m.name != '__main__': importlib.import_module('core.' + m.name)\n"
        "assert not any(k.split('.')[0] == 'streamlit' for k in sys.modules), 'streamlit was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme.split("\n## ")[0], "the README opens with the test command"
    assert "bash scripts/app.sh" in readme.split("\n## ")[0], "the README opens with the app command"
    assert ci.strip().splitlines()[-1] == "bash scripts/test.sh"


def test_pytest_exit_code_5_is_a_failure():
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert '"$rc" -eq 5' in script and "exit 1" in script


def _core_import_graph() -> dict[str, set[str]]:
    """Which core modules each core module imports, at module level or inside functions (both count)."""
    import ast

    mods = {p.stem for p in (ROOT / "core").glob("*.py")}
    graph = {}
    for path in (ROOT / "core").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
                parts = node.module.split(".")
                deps |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("core.")}
        graph[path.stem] = (deps & mods) - {path.stem}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), i.e. every import cycle."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_core_has_no_import_cycle():
    """Issue 12: `run` imported a helper back from `cli`. Any cycle among core modules fails here, lazy imports too."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check finds one
    graph = _core_import_graph()
    assert {"cli", "run", "series", "io"} <= set(graph) and "io" in graph["run"]
    assert _cycles(graph) == []


def test_the_server_listens_on_this_machine_only_unless_the_administrator_says_otherwise():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] <= 500  # MB: big scans are opened by server path, not uploaded
    app = (ROOT / "scripts" / "app.sh").read_text()
    assert 'address=${REACTOMO_ADDRESS:-127.0.0.1}' in app and '--server.address "$address"' in app
