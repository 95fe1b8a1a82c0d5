"""The local SMTP sink of ``make up``: a real process, a real SMTP client, files on disk."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from alerting.mailsink import read_messages


@pytest.fixture
def sink(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[tuple[int, Path]]:
    port = free_port()
    mail_dir = tmp_path / "mail"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alerting.mailsink", "--dir", str(mail_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
                smtp.noop()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"mail sink did not start: {out}")
            time.sleep(0.1)
    yield port, mail_dir
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_every_message_is_kept_as_an_eml_file(sink: tuple[int, Path]) -> None:
    port, mail_dir = sink
    for i in range(2):
        msg = EmailMessage()
        msg["From"] = "tagwatch@example.org"
        msg["To"] = "oncall@example.org"
        msg["Subject"] = f"[FIRING:1] PredictorDown #{i} — ünïcode"
        msg.set_content(f"plain part {i}")
        msg.add_alternative(f"<p>html part {i}</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            smtp.login("alertmanager", "any-password")  # auth is accepted, never checked
            smtp.send_message(msg, to_addrs=["oncall@example.org", "team@example.org"])

    files = sorted(mail_dir.glob("*.eml"))
    assert len(files) == 2
    assert not list(mail_dir.glob("*.tmp"))
    messages = read_messages(mail_dir)
    assert [m["Subject"] for m in messages] == [
        "[FIRING:1] PredictorDown #0 — ünïcode",
        "[FIRING:1] PredictorDown #1 — ünïcode",
    ]
    first = messages[0]
    assert first["X-Mailsink-From"] == "tagwatch@example.org"
    assert first["X-Mailsink-To"] == "oncall@example.org, team@example.org"
    assert first.get_body(("plain",)).get_content().strip() == "plain part 0"
    assert first.get_body(("html",)).get_content().strip() == "<p>html part 0</p>"


def test_bad_port_is_a_clear_cli_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alerting.mailsink", "--dir", str(tmp_path), "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--port: not a TCP port: 70000" in proc.stderr
