"""Project-wide rules: core is UI-free, the README's test command is what CI runs."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_never_imports_streamlit():
    for path in sorted((ROOT / "core").rglob("*.py")):
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path.name
    code = (
        "import importlib, pkgutil, sys, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
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


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _core_import_graph() -> dict[str, set[str]]:
    """Which core modules each core module imports (dotted names, packages included), at module level or inside
    functions (both count). ``from core.x import y`` counts ``core.x.y`` when that is a module, else ``core.x``."""
    import ast

    paths = sorted((ROOT / "core").rglob("*.py"))
    mods = {_module_name(p) for p in paths}
    graph = {}
    for path in paths:
        me = _module_name(path)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "core":
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.split(".")[0] == "core"}
        graph[me] = (deps & mods) - {me, "core"}  # `from core import __version__` is the package, not a cycle
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
    assert {"core.cli", "core.workflow.run", "core.segmentation.series", "core.imaging.io"} <= set(graph)
    assert "core.imaging.io" in graph["core.workflow.run"]
    assert _cycles(graph) == []


SCIENCE = ("core.imaging", "core.labelling", "core.network", "core.segmentation", "core.analysis", "core.render")


def test_core_is_grouped_by_concern_and_the_science_never_reaches_up_into_the_workflow():
    """Issue 12: core/ grouped by concern. The science packages work on arrays and files; only the workflow layer
    knows projects, jobs and the worker, and only the CLI and the pages sit above it."""
    flat = sorted(p.name for p in (ROOT / "core").glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "atomic.py", "charts.py", "cli.py", "errors.py", "phases.py"]
    graph = _core_import_graph()
    for pkg in (*SCIENCE, "core.workflow"):
        assert any(m.startswith(pkg + ".") for m in graph), f"{pkg} has no modules"
    upward = {(m, d) for m, deps in graph.items() for d in deps
              if m.startswith(SCIENCE) and (d.startswith("core.workflow") or d == "core.cli")}
    assert upward == set(), f"science modules import the workflow layer or the CLI: {sorted(upward)}"
    assert not any(d == "core.cli" for m, deps in graph.items() for d in deps if m != "core.__main__"), \
        "only `python -m core` imports the CLI"
    steps = {"data", "labels", "ground_truth", "train", "segment", "evaluate", "render", "analysis", "run"}
    assert steps <= {m.rsplit(".", 1)[1] for m in graph if m.startswith("core.workflow.")}


def test_the_server_listens_on_this_machine_only_unless_the_administrator_says_otherwise():
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["maxUploadSize"] <= 500  # MB: big scans are opened by server path, not uploaded
    app = (ROOT / "scripts" / "app.sh").read_text()
    assert 'address=${REACTOMO_ADDRESS:-127.0.0.1}' in app and '--server.address "$address"' in app
