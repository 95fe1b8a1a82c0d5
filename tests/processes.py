"""Start and stop the real tagwatch processes and binaries on loopback for tests.

Each process logs to a file; a process that dies or never gets healthy fails the test with the
tail of its log, so a broken start is diagnosable from the pytest output alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Signal the whole process group (gunicorn master and workers): pause, resume, stop."""
        os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group (gunicorn has workers), then SIGKILL if it lingers.

        SIGCONT first, so that a process a test paused with SIGSTOP can act on the SIGTERM.
        """
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGCONT)
                self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        return self.popen.returncode


def start_process(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Popen in its own process group, stdout+stderr to ``<log_dir>/<name>.log``.

    The working directory is the repository root, as for ``make up``: ``python -m`` then imports
    the packages from the work tree. Tests pass every path (store, models, reports) explicitly.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd or REPO_ROOT),
            start_new_session=True,
        )
    return Process(name, popen, log_path)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_until(
    process: Process | None,
    check: Callable[[], bool],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until true; fail with the process log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        if process is not None and process.popen.poll() is not None:
            pytest.fail(
                f"{process.name} exited with {process.popen.returncode} while waiting for {what}:\n"
                f"{process.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = process.log_tail() if process is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(interval)


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: requests.get(url, timeout=2).status_code == 200


def predictor_env(
    models_dir: Path, port: int, store_path: Path, multiproc_dir: Path
) -> dict[str, str]:
    return {
        "TAGWATCH_MODELS_DIR": str(models_dir),
        "TAGWATCH_HOST": "127.0.0.1",
        "TAGWATCH_PORT": str(port),
        "TAGWATCH_STORE_URL": f"sqlite:///{store_path}",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "TAGWATCH_LOG_LEVEL": "WARNING",
        # models/LATEST only: the registry-following tests (tests/lifecycle) turn it on
        "TAGWATCH_FOLLOW_REGISTRY": "false",
    }


def start_predictor(
    models_dir: Path,
    port: int,
    work_dir: Path,
    store_path: Path | None = None,
    **extra_env: str,
) -> Process:
    """``python -m exporter serve`` (gunicorn, multiprocess metrics), ready when /readyz is 200.

    Metric files go to ``<work_dir>/prometheus-multiproc``; ``extra_env`` adds settings
    (e.g. ``TAGWATCH_WORKERS="3"``).
    """
    store_path = store_path or work_dir / "tagwatch.sqlite3"
    env = predictor_env(models_dir, port, store_path, work_dir / "prometheus-multiproc")
    env.update(extra_env)
    proc = start_process("predictor", python_module("exporter", "serve"), work_dir, env)
    wait_until(proc, http_ok(f"http://127.0.0.1:{port}/readyz"), "predictor /readyz", 60)
    return proc


def metric_value(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text format (``labels`` as printed, sorted)."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == wanted:
            return float(value)
    return None
