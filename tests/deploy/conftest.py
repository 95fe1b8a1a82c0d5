"""Helpers of the deployment tests: the stack's config tools (``stack/``) and promtool."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.processes import REPO_ROOT


def run_stack_module(
    module: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` (the stack's tooling, ``stack/``) in the repository; it
    must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def check_prometheus_config(config: Path) -> None:
    """``promtool check config`` (the rule files included) passes, where promtool is installed."""
    if shutil.which("promtool"):
        check = subprocess.run(
            ["promtool", "check", "config", str(config)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
