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
from urllib.parse import urlencode

# defined in tagger/secrets.py (the lifecycle guards its endpoints too, and sits below exporter/);
# re-exported here for this package's callers
from tagger.secrets import MIN_SECRET_CHARS as MIN_SECRET_CHARS
from tagger.secrets import SecretError as SecretError
from tagger.secrets import check_bearer as check_bearer
from tagger.secrets import read_secret as read_secret


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
