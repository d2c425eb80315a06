"""Every project module imports on its own, as the first project module loaded.

A cycle between two modules only fails when one particular module of the cycle is
imported first, which the test suite's own import order can hide (bot.overview and the
inventory's status snapshot had such a cycle).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "runbooks")


def _project_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if "migrations" in parts:
                # Alembic runs these itself, with its context set up; they cannot be imported alone.
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join(parts))
    return names


def test_each_module_imports_first() -> None:
    # One fresh interpreter for all modules: before each import, every project module is
    # dropped from sys.modules, so each one is the first of the project to load.
    script = (
        "import importlib, sys\n"
        f"packages = {PACKAGES!r}\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in packages]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    modules = _project_modules()
    assert len(modules) > 50
    result = subprocess.run([sys.executable, "-c", script, *modules], cwd=REPO, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


def test_module_list_names_real_modules() -> None:
    modules = _project_modules()
    assert "bot.overview" in modules
    assert "handlers.detach" in modules
    assert not [name for name in modules if "migrations" in name]
    importlib.import_module("bot.overview")
