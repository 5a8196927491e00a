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
