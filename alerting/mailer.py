"""Sending email over SMTP: STARTTLS and auth when configured, retries with backoff."""

from __future__ import annotations

import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage

from alerting.settings import AlertingSettings

log = logging.getLogger("alerting.mailer")


class MailError(RuntimeError):
    """The message could not be delivered after every attempt."""


def _send_once(settings: AlertingSettings, message: EmailMessage) -> None:
    context = ssl.create_default_context(
        cafile=str(settings.smtp_tls_ca_file) if settings.smtp_tls_ca_file else None
    )
    if settings.smtp_port == 465:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds,
            context=context,
        )  # fmt: skip
    else:
        smtp = smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
        )
    with smtp:
        smtp.ehlo()
        if settings.smtp_require_tls and settings.smtp_port != 465:
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password() or "")
        smtp.send_message(message)


def send_email(
    settings: AlertingSettings,
    message: EmailMessage,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Deliver ``message``; returns the number of attempts it took.

    Waits ``backoff * 2**i`` seconds between attempts; an authentication refusal is not retried.
    """
    last: Exception | None = None
    for attempt in range(1, settings.smtp_attempts + 1):
        try:
            _send_once(settings, message)
            return attempt
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"SMTP authentication refused by {settings.smtp_host}: {exc}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            last = exc
            log.warning(
                "SMTP %s:%s attempt %d/%d failed: %s",
                settings.smtp_host, settings.smtp_port, attempt, settings.smtp_attempts, exc,
            )  # fmt: skip
            if attempt < settings.smtp_attempts:
                sleep(settings.smtp_backoff_seconds * 2 ** (attempt - 1))
    raise MailError(
        f"SMTP {settings.smtp_host}:{settings.smtp_port}: not delivered after "
        f"{settings.smtp_attempts} attempts ({last})"
    )
