"""The core (everything in app/ except app/tui/) never imports Textual."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "app"
TUI = APP / "tui"


def core_sources() -> list[Path]:
    return sorted(path for path in APP.rglob("*.py") if TUI not in path.parents)


def textual_imports(source: str) -> list[str]:
    """Every ``import textual...`` / ``from textual... import`` in ``source``, at any depth (functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "textual"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "textual":
            found.append(node.module)
    return found


def test_the_detector_finds_textual_imports_wherever_they_are() -> None:
    source = "import os\nimport textual.app as t\ndef f():\n    from textual.widgets import Log\nfrom textualize import x\n"
    assert textual_imports(source) == ["textual.app", "textual.widgets"]


def test_no_core_module_imports_textual() -> None:
    sources = core_sources()
    assert len(sources) > 15 and APP / "engine" / "monitor.py" in sources
    offenders = {
        str(path.relative_to(REPO_ROOT)): found
        for path in sources
        if (found := textual_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_importing_every_core_module_loads_no_textual() -> None:
    """Indirect imports count too: load the whole core in a fresh interpreter and look at sys.modules."""
    modules = [".".join(path.relative_to(REPO_ROOT).with_suffix("").parts) for path in core_sources()]
    modules = [name.removesuffix(".__init__") for name in modules if not name.endswith("__main__")]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_lint_imports_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout
