"""The predictor's secrets, read once from their files: who may read stored questions, who may
send feedback, and the key that signs prediction ids.

Feedback is the retraining data (lifecycle/): by default ``POST /feedback`` needs the feedback
token (``TAGWATCH_FEEDBACK_TOKEN_FILE``); ``TAGWATCH_FEEDBACK_AUTH=open`` accepts it without
one, on purpose only. ``python -m exporter serve`` refuses to start when feedback would be
closed by a missing or unreadable token, or when the id secret cannot be read (replicas would
mint ids the others refuse); an app built by ``create_app`` answers 503 on ``/feedback``
instead and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from exporter.settings import PredictorSettings
from exporter.signing import SecretError, read_secret

log = logging.getLogger("exporter")


@dataclass(frozen=True)
class Credentials:
    api_token: str | None = None
    link_secret: str | None = None
    feedback_token: str | None = None
    id_secret: bytes | None = None
    # why POST /feedback is refused whatever the request (token mode without a token)
    feedback_closed: str | None = None
    # secrets that are configured but unusable, each naming its setting: serve stops on them
    fatal: list[str] = field(default_factory=list)


def _read(path: Path | None, setting: str, problems: list[str]) -> str | None:
    try:
        return read_secret(path, setting)
    except SecretError as exc:
        problems.append(str(exc))
        return None


def load_credentials(settings: PredictorSettings) -> Credentials:
    """Every secret of the predictor; one that cannot be read closes what it guards."""
    soft: list[str] = []
    api_token = _read(settings.api_token_file, "TAGWATCH_API_TOKEN_FILE", soft)
    link_secret = _read(settings.link_secret_file, "TAGWATCH_LINK_SECRET_FILE", soft)
    for problem in soft:  # as before: reading stored questions that way is disabled
        log.error("%s: reading stored questions that way is disabled", problem)
    fatal: list[str] = []
    feedback_token = _read(settings.feedback_token_file, "TAGWATCH_FEEDBACK_TOKEN_FILE", fatal)
    id_secret = _read(settings.id_secret_file, "TAGWATCH_ID_SECRET_FILE", fatal)
    closed = None
    if settings.feedback_auth == "token" and feedback_token is None:
        closed = (
            "feedback is closed: TAGWATCH_FEEDBACK_TOKEN_FILE is "
            + ("unreadable" if settings.feedback_token_file else "not set")
            + " (TAGWATCH_FEEDBACK_AUTH=token); give it the feedback token's file, or set "
            "TAGWATCH_FEEDBACK_AUTH=open to accept feedback without a credential"
        )
        if settings.feedback_token_file is None:
            fatal.append(closed)
    for problem in fatal:
        log.error("%s", problem)
    return Credentials(
        api_token=api_token,
        link_secret=link_secret,
        feedback_token=feedback_token,
        id_secret=id_secret.encode() if id_secret is not None else None,
        feedback_closed=closed,
        fatal=fatal,
    )
