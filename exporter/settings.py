"""Predictor settings (``TAGWATCH_`` prefix; ``PROMETHEUS_MULTIPROC_DIR`` keeps its own name)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field

from tagger.settings import TagwatchSettings


class PredictorSettings(TagwatchSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=2, ge=1)
    model_version: str = "latest"
    store_url: str = "sqlite:///var/tagwatch.sqlite3"
    max_body_bytes: int = Field(default=64 * 1024, ge=1)
    max_title_chars: int = Field(default=1000, ge=1)
    metrics_enabled: bool = True
    metrics_flush_seconds: float = Field(default=1.0, gt=0)
    # per-tag quality: tagwatch_tag_feedback_total{tag,outcome} and the per-tag validation
    # baseline gauges (K x 7 series); false drops them (and TagQualityLow has no data)
    tag_metrics: bool = True
    store_enabled: bool = True
    # rows acknowledged but not yet in the store; default: <store file>-spool/ beside it, or
    # var/spool for a PostgreSQL store (store.spool_dir_for): a disk of the predictor's host
    store_spool_dir: Path | None = None
    # feedback for an id minted this recently that no one has stored yet is kept pending (202)
    # until its prediction arrives (another replica's queue or spool); older unknown ids: 404
    feedback_pending_seconds: float = Field(default=3600.0, gt=0)
    # the writer's housekeeping runs retention (store/retention.py) at most this often
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    # gunicorn restarts a worker after this many requests (0: never)
    max_requests: int = Field(default=0, ge=0)
    log_level: str = "INFO"
    # serving the registry's champion (exporter/supervisor.py): false = models/LATEST only
    follow_registry: bool = True
    # a promotion is served within 60 s: one poll interval plus the swap (~2–15 s)
    model_poll_seconds: float = Field(default=30.0, gt=0)
    model_sync_timeout_seconds: float = Field(default=20.0, ge=0)
    model_swap_timeout_seconds: float = Field(default=120.0, gt=0)
    # nginx in front of gunicorn absorbs slow clients (exporter/proxy.py): auto = when installed
    proxy: Literal["auto", "nginx", "none"] = "auto"
    nginx_bin: str = "nginx"
    proxy_client_timeout_seconds: float = Field(default=10.0, gt=0)
    proxy_dir: Path | None = None
    # GET /predictions/<id> needs this bearer token or a link signed with the link secret
    # (exporter/signing.py); both are read from files (secrets), never from the environment
    api_token_file: Path | None = None
    link_secret_file: Path | None = None
    # POST /feedback needs "Authorization: Bearer <feedback token>" (token, the default);
    # "open" accepts feedback without it: anyone who can reach the port then writes the
    # retraining data (README "Security"). The source of each feedback is stored either way.
    feedback_auth: Literal["token", "open"] = "token"
    feedback_token_file: Path | None = None
    # prediction ids carry an HMAC under this secret, shared by every replica: feedback for
    # an id this stack never minted is refused (404) without a store lookup. Unset: ids
    # without a tag, as before (a made-up recent id is kept pending for an hour)
    id_secret_file: Path | None = None
    # /predict and /feedback per client address, enforced by nginx (limit_req: 429 with
    # Retry-After); requests with the feedback token are exempt; 0 = no limit. The default
    # and why: README "Rate limits"
    rate_limit_per_second: float = Field(default=20.0, ge=0)
    # requests a client may send at once beyond its rate before it is refused
    rate_limit_burst: int = Field(default=40, ge=0)
    multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "TAGWATCH_MULTIPROC_DIR"),
    )
