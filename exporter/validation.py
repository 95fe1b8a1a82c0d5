"""Request validation: every bad input becomes an :class:`ApiError` (4xx + a message naming it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_FEEDBACK_TAGS = 50
MAX_TAG_CHARS = 64
MAX_URL_CHARS = 2048


class ApiError(Exception):
    """A client error: its status and message are returned as JSON."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "status": self.status}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class PredictRequest:
    title: str
    body: str
    url: str | None


@dataclass(frozen=True)
class FeedbackRequest:
    prediction_id: str
    tags: list[str]


def _check_text(value: str, field: str) -> None:
    """Text the store can keep: no lone surrogate (not encodable as UTF-8: SQLite refuses the
    row) and no NUL (truncates text in many tools). One C-speed pass each."""
    if "\x00" in value:
        raise ApiError(400, f"{field} contains a NUL character", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{field} contains invalid Unicode (a lone surrogate)", field) from None


def _object(payload: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ApiError(400, "the JSON body must be an object")
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}", unknown[0])
    return payload


def parse_predict(payload: Any, max_title_chars: int, max_body_bytes: int) -> PredictRequest:
    data = _object(payload, {"title", "body", "url"})
    title = data.get("title")
    if title is None:
        raise ApiError(400, "missing field: title", "title")
    if not isinstance(title, str):
        raise ApiError(400, "title must be a string", "title")
    if not title.strip():
        raise ApiError(400, "title must not be empty", "title")
    if len(title) > max_title_chars:
        raise ApiError(413, f"title is longer than {max_title_chars} characters", "title")
    _check_text(title, "title")
    body = data.get("body", "")
    if body is None:
        body = ""
    if not isinstance(body, str):
        raise ApiError(400, "body must be a string", "body")
    if len(body.encode("utf-8", "surrogatepass")) > max_body_bytes:
        raise ApiError(413, f"body is larger than {max_body_bytes} bytes", "body")
    _check_text(body, "body")
    url = data.get("url")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(400, "url must be an http(s) URL string", "url")
        if len(url) > MAX_URL_CHARS:
            raise ApiError(400, f"url is longer than {MAX_URL_CHARS} characters", "url")
        _check_text(url, "url")
    return PredictRequest(title=title, body=body, url=url)


def parse_feedback(payload: Any) -> FeedbackRequest:
    data = _object(payload, {"prediction_id", "tags"})
    pid = data.get("prediction_id")
    if pid is None:
        raise ApiError(400, "missing field: prediction_id", "prediction_id")
    if not isinstance(pid, str) or not pid.strip():
        raise ApiError(400, "prediction_id must be a non-empty string", "prediction_id")
    _check_text(pid, "prediction_id")
    tags = data.get("tags")
    if tags is None:
        raise ApiError(400, "missing field: tags", "tags")
    if not isinstance(tags, list) or not tags:
        raise ApiError(400, "tags must be a non-empty list of strings", "tags")
    if len(tags) > MAX_FEEDBACK_TAGS:
        raise ApiError(400, f"tags has more than {MAX_FEEDBACK_TAGS} items", "tags")
    clean: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ApiError(400, "tags must be a non-empty list of non-empty strings", "tags")
        if len(tag) > MAX_TAG_CHARS:
            raise ApiError(400, f"a tag is longer than {MAX_TAG_CHARS} characters", "tags")
        _check_text(tag, "tags")
        norm = tag.strip().lower()
        if norm not in clean:
            clean.append(norm)
    return FeedbackRequest(prediction_id=pid.strip(), tags=clean)
