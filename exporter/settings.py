"""Predictor settings (``TAGWATCH_`` prefix; ``PROMETHEUS_MULTIPROC_DIR`` keeps its own name)."""

from __future__ import annotations

from pathlib import Path

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
    store_enabled: bool = True
    log_level: str = "INFO"
    multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "TAGWATCH_MULTIPROC_DIR"),
    )
