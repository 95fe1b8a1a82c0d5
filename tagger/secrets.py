"""Secrets read from files, and bearer-token checks: shared by every process that guards an
endpoint (the predictor's reads and feedback, the lifecycle's retrains). No Flask here.

A secret is never taken from the environment itself: a setting names the file that holds it
(a compose/k8s secret), so it never shows in ``ps``, logs or ``docker inspect``.
"""

from __future__ import annotations

import hmac
from pathlib import Path

MIN_SECRET_CHARS = 16


class SecretError(ValueError):
    """A configured secret file that cannot be used."""


def read_secret(path: Path | None, what: str) -> str | None:
    """The secret in ``path`` (one line, surrounding whitespace dropped); None if not set."""
    if path is None:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path} ({exc.strerror or exc})") from exc
    if len(value) < MIN_SECRET_CHARS:
        raise SecretError(f"{what}: {path} holds fewer than {MIN_SECRET_CHARS} characters")
    return value


def check_bearer(token: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (constant-time)."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization.removeprefix("Bearer ").strip().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, token.encode())
