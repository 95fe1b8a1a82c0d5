"""Settings of the drift job (``TAGWATCH_`` environment prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from tagger.settings import TagwatchSettings
from tagger.tagquality import TagQualityRules

_RULES = TagQualityRules()


class TagQualitySettings(TagwatchSettings):
    """When a tag's F1 from feedback is judged against its baseline (tagger/tagquality.py):
    the drift report's "Tags" section and the weekly summary's "Tags getting worse". The
    TagQualityLow alert's rule (prometheus/rules) has the same defaults."""

    # support = questions with feedback where the tag was predicted or given (tp + fp + fn)
    tag_min_support: int = Field(default=_RULES.min_support, ge=1)
    tag_yellow_share: float = Field(default=_RULES.yellow_share, gt=0, le=1)
    tag_red_share: float = Field(default=_RULES.red_share, gt=0, le=1)

    @model_validator(mode="after")
    def _yellow_above_red(self) -> TagQualitySettings:
        if self.tag_yellow_share < self.tag_red_share:
            raise ValueError(
                f"tag_yellow_share {self.tag_yellow_share:g} is below tag_red_share "
                f"{self.tag_red_share:g}: yellow warns before red"
            )
        return self

    @property
    def tag_rules(self) -> TagQualityRules:
        return TagQualityRules(
            min_support=self.tag_min_support,
            yellow_share=self.tag_yellow_share,
            red_share=self.tag_red_share,
            min_baseline_f1=_RULES.min_baseline_f1,
        )


class DriftSettings(TagQualitySettings):
    """Where to read, what to judge and when; built once by ``python -m drift``."""

    store_url: str = "sqlite:///var/tagwatch.sqlite3"
    model_version: str = "latest"
    reports_dir: Path = Path("reports/drift")
    state_dir: Path = Path("var/drift")
    window_days: int = 30
    bin_size: str = "1D"
    min_rows_per_bin: int = 100
    min_feedback_per_bin: int = 30
    max_bins: int = 60
    top_tags: int = 15
    cron: str = "0 2 * * *"
    host: str = "127.0.0.1"
    port: int = 8001
    misfire_grace_seconds: int = 3600
    run_on_start: bool = False
    # effect-size rules: largest change of one histogram bin's share (popmon max_prob_diff)
    yellow_max_prob_diff: float = 0.05
    red_max_prob_diff: float = 0.07
    # share of user tags unknown to the model, absolute rise over the validation share
    yellow_unknown_tags_rise: float = 0.05
    red_unknown_tags_rise: float = 0.10
    # per-bin counts: "sql" = GROUP BY in the database (drift/sqlcounts.py), "pandas" = rows
    # read into pandas (the reference path); "auto" = SQL when the store and the bin width
    # allow it (faster on both backends: benchmarks/drift_scale.py)
    drift_counts: Literal["auto", "sql", "pandas"] = "auto"
    # the text judgement (drift/text.py): a domain classifier between the served model's
    # baseline titles and a sample of the latest bin's; its ROC AUC is the feature "text"
    text_enabled: bool = True
    text_max_titles: int = 5000
    text_min_titles: int = 100
    text_yellow_auc: float = 0.56
    text_red_auc: float = 0.60
    # what the report and latest.json name: words, typical questions, unknown tags, OOV words
    text_top_words: int = 20
    text_top_questions: int = 10
    # DriftExplained (drift/notify.py): the words and tags of latest.json posted to
    # Alertmanager's API beside the active drift alerts, so their emails name them; "" = off.
    # The run's report is linked beside drift_report_url (the public URL of latest.html)
    alertmanager_api_url: str = ""
    drift_report_url: str = ""
    explain_interval_seconds: float = 15.0
    explain_hold_seconds: float = 120.0
    # True: the report links its JavaScript/CSS (small file); False: embeds them (~+4 MB)
    report_online: bool = True
    # linked assets from public CDNs instead of the local copy in <reports_dir>/assets
    report_cdn: bool = False

    @field_validator("bin_size")
    @classmethod
    def _valid_bin_size(cls, v: str) -> str:
        try:
            width = pd.Timedelta(v)
        except ValueError as exc:
            raise ValueError(f"bin_size {v!r} is not a duration like '1D' or '15min'") from exc
        if width < pd.Timedelta("1min"):
            raise ValueError(f"bin_size {v!r} is shorter than one minute")
        return v

    @field_validator("text_yellow_auc", "text_red_auc")
    @classmethod
    def _auc(cls, v: float) -> float:
        if not 0.5 < v < 1.0:
            raise ValueError("must be between 0.5 and 1 (an AUC above chance)")
        return v

    @field_validator(
        "window_days", "min_rows_per_bin", "top_tags", "max_bins", "text_max_titles",
        "text_min_titles", "text_top_words", "text_top_questions",
    )  # fmt: skip
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @property
    def bin_ns(self) -> int:
        return int(pd.Timedelta(self.bin_size).value)
