"""The test plumbing's own guarantees (tests/processes.py)."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import PG_BIN, PG_OWNER_FILE, _reap_orphan_clusters, start_postgres


@pytest.mark.skipif(not (PG_BIN / "initdb").is_file(), reason="needs Debian's postgresql-15")
def test_a_cluster_left_by_a_killed_session_is_stopped_and_removed() -> None:
    with tempfile.TemporaryDirectory() as parent:
        Path(parent).chmod(0o755)  # the postgres user reaches its cluster through it
        _, server = start_postgres(Path(parent))
        try:
            dead = subprocess.Popen(["true"])
            dead.wait()
            (server.base / PG_OWNER_FILE).write_text(str(dead.pid))  # its session was killed
            _reap_orphan_clusters(Path(parent))
            assert not server.base.exists()
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", server.port)) != 0  # the server is stopped
        finally:
            server.destroy()
