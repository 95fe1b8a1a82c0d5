"""Replay real StackOverflow questions against a running predictor, in time order.

``python -m exporter.replay`` reads the questions of ``../shared/data``, posts each one to
``/predict`` at a pace that follows the questions' real timestamps compressed by ``--speed``
(gaps longer than ``--max-gap`` seconds are shortened, ``--rate`` caps the pace), and posts the
question's real tags to ``/feedback`` ``--feedback-delay`` seconds later. Metrics, the drift job
and the alerts then see the real drift of 2011 → 2020. It talks to the predictor over HTTP only.

Every request carries the feedback token (``--feedback-token-file``, default
``TAGWATCH_FEEDBACK_TOKEN_FILE``): ``/feedback`` needs it, and it exempts the replay, one client
address sending faster than a person, from the predictor's per-client rate limit.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
from tqdm import tqdm

from exporter.signing import SecretError, read_secret
from tagger.data import DataError, load_questions
from tagger.settings import TagwatchSettings

log = logging.getLogger("exporter.replay")


class ReplaySettings(TagwatchSettings):
    """Where the predictor listens (``TAGWATCH_PREDICTOR_URL``) and the feedback token's file
    (``TAGWATCH_FEEDBACK_TOKEN_FILE``)."""

    predictor_url: str = "http://127.0.0.1:8000"
    feedback_token_file: Path | None = None


@dataclass(frozen=True)
class ReplayConfig:
    url: str = "http://127.0.0.1:8000"
    speed: float = 86400.0
    max_gap: float = 1.0
    rate: float | None = None
    feedback_delay: float = 2.0
    feedback_share: float = 1.0
    timeout: float = 10.0
    max_consecutive_errors: int = 50
    wait_ready: float = 30.0
    seed: int = 0
    progress: bool = True
    feedback_token: str | None = None  # sent as "Authorization: Bearer" with every request


@dataclass
class ReplaySummary:
    """What happened; ``jaccard_by_year`` shows the drift the replay made visible."""

    questions: int = 0
    predicted: int = 0
    feedback_sent: int = 0
    errors: int = 0
    elapsed_seconds: float = 0.0
    aborted: str | None = None
    jaccards: list[float] = field(default_factory=list)
    coverages: list[float] = field(default_factory=list)
    jaccard_by_year: dict[int, list[float]] = field(default_factory=dict)

    @property
    def mean_jaccard(self) -> float:
        return float(np.mean(self.jaccards)) if self.jaccards else math.nan

    @property
    def mean_coverage(self) -> float:
        return float(np.mean(self.coverages)) if self.coverages else math.nan

    def format(self) -> str:
        rate = self.predicted / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0
        lines = [
            f"replay: {self.questions} questions sent, {self.predicted} predicted, "
            f"{self.feedback_sent} feedback, {self.errors} errors, "
            f"{self.elapsed_seconds:.1f} s ({rate:.1f} predictions/s)",
            f"mean Jaccard seen {self.mean_jaccard:.3f}, mean coverage {self.mean_coverage:.3f}",
        ]
        for year in sorted(self.jaccard_by_year):
            values = self.jaccard_by_year[year]
            lines.append(f"  {year}: {len(values):6d} feedback, mean Jaccard {np.mean(values):.3f}")
        if self.aborted:
            lines.append(f"aborted: {self.aborted}")
        return "\n".join(lines)


def select_questions(
    df: pd.DataFrame,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    every: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """Questions with ``since`` ≤ created_at < ``until``, every n-th, at most ``limit``."""
    if every < 1:
        raise ValueError("every must be at least 1")
    keep = pd.Series(True, index=df.index)
    if since is not None:
        keep &= df["created_at"] >= since
    if until is not None:
        keep &= df["created_at"] < until
    out = df.loc[keep].sort_values("created_at", kind="stable").iloc[::every]
    if limit is not None:
        out = out.iloc[:limit]
    return out.reset_index(drop=True)


def schedule(
    created_at: pd.Series, speed: float, max_gap: float, rate: float | None = None
) -> np.ndarray:
    """Wall-clock offsets (s) at which to send each question.

    Real gaps are divided by ``speed`` (0 or inf: no waiting) and capped at ``max_gap`` so the
    months without data do not stall a demo; ``rate`` sets a floor of 1/rate between questions.
    """
    n = len(created_at)
    if n == 0:
        return np.zeros(0)
    epoch = pd.Timestamp(0, tz="UTC")
    seconds = (pd.to_datetime(created_at, utc=True) - epoch).dt.total_seconds().to_numpy()
    gaps = np.diff(seconds, prepend=seconds[0]).clip(min=0.0)
    gaps = np.zeros(n) if speed <= 0 or math.isinf(speed) else gaps / speed
    gaps = np.minimum(gaps, max_gap)
    if rate:
        gaps = np.maximum(gaps, 1.0 / rate)
        gaps[0] = 0.0
    return np.cumsum(gaps)


class Replayer:
    """Sends the questions; one thread, a heap of pending feedback, a monotonic clock."""

    def __init__(
        self,
        config: ReplayConfig,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.session = session or requests.Session()
        self.clock = clock
        self.sleep = sleep
        self.url = config.url.rstrip("/")
        if config.feedback_token is not None:
            self.session.headers["Authorization"] = f"Bearer {config.feedback_token}"
        self._consecutive_errors = 0
        self._error_logs = 0

    def wait_ready(self) -> None:
        """Poll ``/readyz`` so a replay started with the stack does not count startup errors."""
        deadline = self.clock() + self.config.wait_ready
        last = "no answer"
        while True:
            try:
                r = self.session.get(f"{self.url}/readyz", timeout=self.config.timeout)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as exc:
                last = str(exc)
            if self.clock() >= deadline:
                raise ConnectionError(
                    f"predictor at {self.url} not ready after {self.config.wait_ready:.0f} s "
                    f"({last})"
                )
            self.sleep(0.5)

    def _post(self, path: str, payload: dict[str, Any], summary: ReplaySummary) -> Any | None:
        try:
            r = self.session.post(f"{self.url}{path}", json=payload, timeout=self.config.timeout)
            if r.status_code >= 400:
                raise requests.HTTPError(f"HTTP {r.status_code}: {r.text[:200]}")
            body = r.json()
        except (requests.RequestException, ValueError) as exc:
            summary.errors += 1
            self._consecutive_errors += 1
            if self._error_logs < 5:
                self._error_logs += 1
                log.warning("POST %s failed: %s", path, exc)
            return None
        self._consecutive_errors = 0
        return body

    def run(self, questions: pd.DataFrame) -> ReplaySummary:
        cfg = self.config
        summary = ReplaySummary()
        offsets = schedule(questions["created_at"], cfg.speed, cfg.max_gap, cfg.rate)
        rng = random.Random(cfg.seed)
        pending: list[tuple[float, int, str, list[str], int]] = []
        has_body = "body" in questions.columns
        has_url = "url" in questions.columns
        start = self.clock()
        bar = tqdm(total=len(questions), unit="q", disable=not cfg.progress, desc="replay")
        i = 0
        try:
            while i < len(questions) or pending:
                if self._consecutive_errors >= cfg.max_consecutive_errors:
                    summary.aborted = (
                        f"{self._consecutive_errors} consecutive errors from {self.url}"
                    )
                    break
                next_q = start + offsets[i] if i < len(questions) else math.inf
                next_f = pending[0][0] if pending else math.inf
                wait = min(next_q, next_f) - self.clock()
                if wait > 0:
                    self.sleep(wait)
                if next_f <= next_q:
                    _, _, pid, tags, year = heapq.heappop(pending)
                    body = self._post("/feedback", {"prediction_id": pid, "tags": tags}, summary)
                    if body is not None:
                        summary.feedback_sent += 1
                        j = float(body.get("jaccard", math.nan))
                        if not math.isnan(j):
                            summary.jaccards.append(j)
                            summary.jaccard_by_year.setdefault(year, []).append(j)
                        c = body.get("coverage")
                        if c is not None:
                            summary.coverages.append(float(c))
                    continue
                row = questions.iloc[i]
                i += 1
                payload: dict[str, Any] = {"title": str(row["title"])}
                if has_body and isinstance(row["body"], str) and row["body"]:
                    payload["body"] = row["body"]
                if has_url and isinstance(row["url"], str) and row["url"]:
                    payload["url"] = row["url"]
                summary.questions += 1
                answer = self._post("/predict", payload, summary)
                bar.update(1)
                if not isinstance(answer, dict) or "prediction_id" not in answer:
                    if answer is not None:
                        summary.errors += 1
                        log.warning("/predict answered without a prediction_id: %.200s", answer)
                    continue
                summary.predicted += 1
                tags = list(row["tags"])
                if tags and rng.random() < cfg.feedback_share:
                    due = self.clock() + cfg.feedback_delay
                    year = int(row["created_at"].year)
                    heapq.heappush(pending, (due, i, str(answer["prediction_id"]), tags, year))
                if summary.jaccards and i % 20 == 0:
                    bar.set_postfix(jaccard=f"{summary.mean_jaccard:.3f}", errors=summary.errors)
        finally:
            bar.close()
            summary.elapsed_seconds = self.clock() - start
        return summary


def load_source(settings: TagwatchSettings, source: str) -> pd.DataFrame:
    """The titles file (48k dated questions) or the bodies sample (its dated rows)."""
    path = settings.titles_path if source == "titles" else settings.bodies_path
    return load_questions(path)


def _timestamp(value: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date: {value!r}") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
        if number < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {value!r}")
        return number

    return parse


def build_parser(settings: ReplaySettings) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m exporter.replay", description=__doc__.split("\n")[0]
    )
    p.add_argument("--url", default=settings.predictor_url, help="predictor base URL")
    p.add_argument(
        "--source",
        choices=("titles", "bodies"),
        default="titles",
        help="titles file (default) or the bodies sample (dated rows only)",
    )
    p.add_argument("--since", type=_timestamp, default=None, help="first date (UTC), inclusive")
    p.add_argument("--until", type=_timestamp, default=None, help="last date (UTC), exclusive")
    p.add_argument("--every", type=int, default=1, help="send every n-th question only")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions")
    p.add_argument(
        "--speed",
        type=_positive(float),
        default=86400.0,
        help="time compression: real seconds per wall-clock second (0: no waiting)",
    )
    p.add_argument(
        "--max-gap",
        type=_positive(float),
        default=1.0,
        help="longest wall-clock pause between two questions, seconds",
    )
    p.add_argument("--rate", type=_positive(float), default=None, help="max questions per second")
    p.add_argument(
        "--feedback-delay",
        type=_positive(float),
        default=2.0,
        help="seconds between a prediction and its feedback",
    )
    p.add_argument(
        "--feedback-share",
        type=_positive(float),
        default=1.0,
        help="share of questions that get feedback (0..1)",
    )
    p.add_argument(
        "--wait-ready",
        type=_positive(float),
        default=30.0,
        help="seconds to wait for /readyz before starting",
    )
    p.add_argument(
        "--max-errors", type=int, default=50, help="abort after this many consecutive errors"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the feedback sampling")
    p.add_argument(
        "--feedback-token-file",
        type=Path,
        default=settings.feedback_token_file,
        help="file holding the feedback token (default: TAGWATCH_FEEDBACK_TOKEN_FILE; none: "
        "feedback works only with a predictor in TAGWATCH_FEEDBACK_AUTH=open mode)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, settings: ReplaySettings | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings or ReplaySettings()
    parser = build_parser(settings)
    a = parser.parse_args(argv)
    if a.every < 1:
        parser.error("--every: must be at least 1")
    if a.limit is not None and a.limit < 1:
        parser.error("--limit: must be at least 1")
    if a.max_errors < 1:
        parser.error("--max-errors: must be at least 1")
    if a.feedback_share > 1:
        parser.error("--feedback-share: must be between 0 and 1")
    if a.rate == 0:
        parser.error("--rate: must be greater than 0")
    try:
        questions = select_questions(
            load_source(settings, a.source), a.since, a.until, a.every, a.limit
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if questions.empty:
        print("error: no question matches --since/--until", file=sys.stderr)
        return 2
    try:
        token = read_secret(a.feedback_token_file, "--feedback-token-file")
    except SecretError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ReplayConfig(
        url=a.url,
        speed=a.speed,
        max_gap=a.max_gap,
        rate=a.rate,
        feedback_delay=a.feedback_delay,
        feedback_share=a.feedback_share,
        max_consecutive_errors=a.max_errors,
        wait_ready=a.wait_ready,
        seed=a.seed,
        progress=not a.quiet,
        feedback_token=token,
    )
    replayer = Replayer(config)
    first, last = questions["created_at"].iloc[0], questions["created_at"].iloc[-1]
    log.info("replaying %d questions from %s to %s to %s", len(questions), first, last, a.url)
    try:
        replayer.wait_ready()
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = replayer.run(questions)
    print(summary.format())
    if summary.aborted or summary.predicted == 0:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
