"""A local SMTP sink that keeps every message as an ``.eml`` file (``make up`` without Docker).

``python -m alerting.mailsink --dir var/mail --port 1025`` accepts any sender, recipient and
(optional) login, never relays, and writes each message to ``<dir>/<UTC time>-<n>.eml`` with
``X-Mailsink-*`` headers naming the envelope, so the alert and weekly emails of a demo can be
read with any mail client or ``less``. It is for loopback use only.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

log = logging.getLogger("alerting.mailsink")


class MaildirHandler:
    """aiosmtpd handler: one file per message, written atomically (tmp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._count = 0

    def _next_name(self) -> str:
        with self._lock:
            self._count += 1
            n = self._count
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}-{os.getpid()}-{n:05d}.eml"

    def save(self, mail_from: str, rcpt_tos: Sequence[str], content: bytes) -> Path:
        envelope = (
            f"X-Mailsink-From: {mail_from}\r\n"
            f"X-Mailsink-To: {', '.join(rcpt_tos)}\r\n"
            f"X-Mailsink-Received: {datetime.now(UTC).isoformat()}\r\n"
        ).encode()
        path = self.directory / self._next_name()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope + content)
        os.replace(tmp, path)
        return path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8")
        path = self.save(envelope.mail_from, envelope.rcpt_tos, content)
        subject = message_from_bytes(content, policy=policy.default).get("Subject", "")
        log.info(
            "mail from %s to %s: %s -> %s", envelope.mail_from, envelope.rcpt_tos, subject, path
        )
        return "250 Message accepted for delivery"


def _accept_any_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    """A sink, not a server: any login succeeds, so clients configured with auth work too."""
    if isinstance(data, LoginPassword):
        return AuthResult(success=True, handled=False, auth_data=data)
    return AuthResult(success=True, handled=False)


def start_sink(directory: Path, host: str = "127.0.0.1", port: int = 1025) -> Controller:
    """Start the sink in a background thread; the caller stops it with ``controller.stop()``."""
    controller = Controller(
        MaildirHandler(directory),
        hostname=host,
        port=port,
        auth_require_tls=False,
        authenticator=_accept_any_login,
        decode_data=False,
        enable_SMTPUTF8=True,
    )
    controller.start()
    return controller


def read_messages(directory: Path) -> list[Any]:
    """The stored messages in arrival order, parsed (``email.message.EmailMessage``)."""
    files = sorted(Path(directory).glob("*.eml"))
    return [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m alerting.mailsink", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dir", type=Path, default=Path("var/mail"), help="folder for the .eml files")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=1025, help="SMTP port")
    a = p.parse_args(argv)
    if not 0 < a.port < 65536:
        p.error(f"--port: not a TCP port: {a.port}")
    try:
        controller = start_sink(a.dir, a.host, a.port)
    except OSError as exc:
        print(f"error: cannot listen on {a.host}:{a.port} or write {a.dir}: {exc}")
        return 2
    log.info("SMTP sink on %s:%d, mail kept in %s", a.host, a.port, a.dir.resolve())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
