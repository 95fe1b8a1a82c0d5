"""The local stack of ``make up`` (scripts/up.sh, honcho + Procfile) started by tests.

Every port comes from ``scripts/services.conf`` through ``STACK_PORT_<NAME>``: the tests move
all of them to free ports, so a test stack never collides with a developer's ``make up``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack.config import SERVICES_FILE, Service
from stack.config import load_services as load_stack_services

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LocalStack:
    var: Path
    env: dict[str, str]
    ports: dict[str, int]

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def script(self, name: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / name)],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def exec(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``argv`` in the stack's environment (scripts/stack-exec.sh)."""
        return subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "stack-exec.sh"), *argv],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def python(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = (self.var / "log" / "stack.log").read_text(errors="replace")
        except OSError:
            return "(no stack log)"
        return "\n".join(text.splitlines()[-lines:])


def load_services() -> list[Service]:
    """The services of scripts/services.conf (or of STACK_SERVICES_FILE), default ports."""
    return load_stack_services(Path(os.environ.get("STACK_SERVICES_FILE") or SERVICES_FILE), env={})


def free_ports(names: list[str]) -> dict[str, int]:
    """A distinct free port on 127.0.0.1 for each name (all bound at once, then released)."""
    sockets = []
    try:
        for _ in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return {n: int(s.getsockname()[1]) for n, s in zip(names, sockets, strict=True)}
    finally:
        for s in sockets:
            s.close()


def make_stack(
    tmp: Path, models_dir: Path, ports: Mapping[str, int], extra: Mapping[str, str] | None = None
) -> LocalStack:
    """The environment of a stack under ``tmp`` (state, reports) on the given ports."""
    services = load_services()
    assert set(ports) == {s.name for s in services}, "a port for every service of services.conf"
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("TAGWATCH_", "STACK_"))]:
        del env[key]  # only what this test sets
    env.update(
        {
            "STACK_VAR": str(tmp / "var"),
            "STACK_REPORTS": str(tmp / "reports"),
            "TAGWATCH_MODELS_DIR": str(models_dir),
            "TAGWATCH_DATA_DIR": os.environ.get("TAGWATCH_DATA_DIR", ""),
            "TAGWATCH_FOLLOW_REGISTRY": "false",
            "TAGWATCH_UP_TIMEOUT": "150",
            "VENV": str(Path(sys.executable).parent.parent),
        }
    )
    if not env["TAGWATCH_DATA_DIR"]:
        del env["TAGWATCH_DATA_DIR"]
    for s in services:
        env[s.port_variable] = str(ports[s.name])
    if "STACK_SERVICES_FILE" in os.environ:  # a subset of the services (a developer's choice)
        env["STACK_SERVICES_FILE"] = os.environ["STACK_SERVICES_FILE"]
    env.update(extra or {})
    return LocalStack(var=tmp / "var", env=env, ports=dict(ports))
