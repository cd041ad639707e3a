"""The layers in pyproject.toml ([tool.importlinter]) hold: a module imports only from the layers below its own,
the file format no model code, the prior no edits, the core no studio. A change that breaks one fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not os.path.exists(lint):
        pytest.fail("lint-imports is missing: pip install -e '.[dev]' (import-linter)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    report = run.stdout[run.stdout.find("Contracts"):] + run.stderr
    assert run.returncode == 0, report
    assert "0 broken" in report, report
