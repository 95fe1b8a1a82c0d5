"""Start and stop the real tagwatch processes and binaries on loopback for tests.

Each process logs to a file; a process that dies or never gets healthy fails the test with the
tail of its log, so a broken start is diagnosable from the pytest output alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def run_module(
    module: str, *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` run to its end in the repository, its output kept as text."""
    return subprocess.run(
        python_module(module, *args),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sqlite_rows(db: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` on the SQLite store ``db``, opened read-only: a test that checks
    what a process stored must never change (or create) the file under it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def stored_ids(db: Path) -> set[str]:
    """The ids of the predictions in the SQLite store ``db``."""
    return {r[0] for r in sqlite_rows(db, "SELECT id FROM predictions")}


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


# what drift must name on real 2019-2020 questions (issue 16): the words most typical of them
# against the 2011 baseline, and the user tags the 2011 model does not know
NEW_WORDS = frozenset({
    "react", "angular", "laravel", "pandas", "dataframe", "flutter", "docker", "aws", "azure",
    "firebase", "typescript",
})  # fmt: skip
NEW_TAGS = frozenset({
    "python-3.x", "reactjs", "node.js", "r", "angular", "pandas", "laravel", "swift",
    "typescript", "ios",
})  # fmt: skip


# the test stack's secrets (issue 15): every predictor a test starts shares them, as the
# replicas of one stack do; FEEDBACK_AUTH is the header that carries the feedback token
FEEDBACK_TOKEN = "test-feedback-token-0123456789"
ID_SECRET = "test-id-secret-0123456789abcdef"
FEEDBACK_AUTH = {"Authorization": f"Bearer {FEEDBACK_TOKEN}"}


def write_secrets(directory: Path) -> dict[str, str]:
    """The feedback token and id secret files in ``directory`` (private); their settings."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"feedback_token": FEEDBACK_TOKEN, "id_secret": ID_SECRET}
    for name, value in files.items():
        path = directory / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    return {
        "TAGWATCH_FEEDBACK_TOKEN_FILE": str(directory / "feedback_token"),
        "TAGWATCH_ID_SECRET_FILE": str(directory / "id_secret"),
    }


LIFECYCLE_TOKEN = "test-lifecycle-token-0123456789"


def write_lifecycle_token(directory: Path) -> dict[str, str]:
    """The lifecycle service's bearer token file in ``directory`` (private); its setting."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lifecycle_token"
    path.write_text(LIFECYCLE_TOKEN + "\n")
    path.chmod(0o600)
    return {"TAGWATCH_LIFECYCLE_TOKEN_FILE": str(path)}


def predictor_env(
    models_dir: Path, port: int, store_path: Path, multiproc_dir: Path
) -> dict[str, str]:
    """A predictor's settings for a test. Feedback is open (the source is stored as "open",
    or "token" with FEEDBACK_AUTH) and there is no rate limit: tests about those set
    TAGWATCH_FEEDBACK_AUTH=token and TAGWATCH_RATE_LIMIT_PER_SECOND themselves."""
    return {
        **write_secrets(multiproc_dir.parent / "secrets"),
        "TAGWATCH_FEEDBACK_AUTH": "open",
        "TAGWATCH_RATE_LIMIT_PER_SECOND": "0",
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


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication, user ``postgres``)."""

    base: Path  # owned by the server's user: data/, the socket and postgres.log
    port: int
    fast: bool

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args], check)

    def start(self) -> None:
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.base}",
            "-c max_connections=200",
        ]
        if self.fast:  # throwaway data: no fsync (a crash of the machine loses the cluster)
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self.pg_ctl("-l", str(self.log_path), "-o", " ".join(options), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: active connections are cut, as when a server goes down."""
        self.pg_ctl("-m", mode, "-w", "stop", check=False)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _as_postgres(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary; as the ``postgres`` system user when we are root (initdb and
    the server refuse to run as root, and CI runs as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done


def start_postgres(tmp_dir: Path | None = None, fast: bool = True) -> tuple[str, PostgresServer]:
    """initdb + pg_ctl start a new cluster on a free port; (URL of database ``postgres``, handle).

    The cluster lives in a new directory under ``tmp_dir`` (default: the system temp dir),
    which must be reachable by the ``postgres`` user when we run as root (pytest's own
    ``tmp_path`` is not: its parent is private to root). ``fast`` turns fsync off (tests);
    benchmarks pass False. Fails with a clear message when Debian's postgresql-15 is missing.
    """
    if not (PG_BIN / "initdb").is_file():
        raise RuntimeError(
            f"{PG_BIN / 'initdb'} not found: install Debian's postgresql-15 "
            "(apt-get install postgresql-15; .ci/run does it)"
        )
    _reap_orphan_clusters(Path(tmp_dir or tempfile.gettempdir()))
    base = Path(tempfile.mkdtemp(prefix=PG_PREFIX, dir=tmp_dir))
    base.chmod(0o700)
    (base / PG_OWNER_FILE).write_text(str(os.getpid()))
    if os.geteuid() == 0:
        try:
            shutil.chown(base, "postgres", "postgres")
        except (LookupError, OSError) as exc:
            raise RuntimeError(f"running as root needs the 'postgres' system user: {exc}") from exc
    server = PostgresServer(base=base, port=_free_port(), fast=fast)
    try:
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(server.data_dir), "-U", "postgres",
                      "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])  # fmt: skip
        server.start()
    except Exception as exc:
        tail = server.log_tail()
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc}\n{tail}") from exc
    return server.url(), server


PG_PREFIX = "tagwatch-pg-"
PG_OWNER_FILE = "owner.pid"  # the test process that started the cluster


def _reap_orphan_clusters(parent: Path) -> None:
    """Stop and remove the clusters of test sessions that died without their teardown
    (SIGKILL, a CI timeout): each would keep a server and its memory until the next boot."""
    for base in parent.glob(PG_PREFIX + "*"):
        try:
            owner = int((base / PG_OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being created right now, or not one of ours
        try:
            os.kill(owner, 0)
            continue  # its session still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        PostgresServer(base=base, port=0, fast=True).destroy()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
