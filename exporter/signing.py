"""Credentials for reading stored questions: a bearer token, or an expiring signed link.

Stored questions are user content: ``GET /predictions/<id>`` answers only a request with
``Authorization: Bearer <TAGWATCH_API_TOKEN>`` or a link signed with the secret the predictor
shares with the weekly job (``?expires=<unix seconds>&signature=<hex HMAC-SHA256>``), as put in
the weekly email. No Flask here: the weekly job signs with the same functions.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import urlencode

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


def _message(prediction_id: str, expires: int) -> bytes:
    return f"/predictions/{prediction_id}\n{expires}".encode()


def sign(secret: str, prediction_id: str, expires: int) -> str:
    return hmac.new(secret.encode(), _message(prediction_id, expires), hashlib.sha256).hexdigest()


def signed_query(
    secret: str, prediction_id: str, ttl_seconds: float, now: float | None = None
) -> str:
    """``expires=...&signature=...`` for a link valid ``ttl_seconds`` from now."""
    expires = int((time.time() if now is None else now) + ttl_seconds)
    return urlencode({"expires": expires, "signature": sign(secret, prediction_id, expires)})


def check_signature(
    secret: str, prediction_id: str, expires: str, signature: str, now: float | None = None
) -> str | None:
    """None when the link is valid, else why not (said to the client: no secret in it)."""
    try:
        expires_at = int(expires)
    except ValueError:
        return "expires must be an integer (unix seconds)"
    if expires_at < (time.time() if now is None else now):
        return "the link has expired"
    given = signature.lower().encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(sign(secret, prediction_id, expires_at).encode(), given):
        return "invalid signature"
    return None


def check_bearer(token: str, authorization: str | None) -> bool:
    if not authorization or not authorization.startswith("Bearer "):
        return False
    given = authorization.removeprefix("Bearer ").strip().encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, token.encode())
