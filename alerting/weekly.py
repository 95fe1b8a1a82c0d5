"""The weekly summary: what the model and the service did over the last 7 days.

``collect`` asks Prometheus (volume, latency, quality per day, alert episodes, drift status)
and the prediction store (the latest problematic questions); each section that cannot be filled
is named in ``missing`` instead of failing the report. ``render`` turns it into HTML + text,
``build_message`` into one email with the charts as inline (CID) images, and ``run_weekly``
writes ``reports/weekly/<date>.html`` before sending, so an SMTP outage loses nothing.
"""

from __future__ import annotations

import base64
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from alerting.charts import bar_chart, line_chart
from alerting.mailer import send_email
from alerting.metrics import WeeklyMetrics
from alerting.prom import PrometheusClient, PrometheusError, Series
from alerting.settings import AlertingSettings
from store import open_store

log = logging.getLogger("alerting.weekly")

DAY = 86400.0
ALERT_STEP = 60.0  # resolution of alert episodes: one point per minute (10,080 a week)
DRIFT_STATUS = {0: "green", 1: "yellow", 2: "red"}

PREDICT = 'job="predictor"'
DAILY_QUERIES = {
    "predictions": f"sum(increase(tagwatch_predictions_total{{{PREDICT}}}[1d]))",
    "feedback": f"sum(increase(tagwatch_feedback_total{{{PREDICT}}}[1d]))",
    "errors_5xx": (
        f'sum(increase(tagwatch_http_requests_total{{{PREDICT},status=~"5.."}}[1d])) '
        f"or sum(increase(tagwatch_predictions_total{{{PREDICT}}}[1d])) * 0"
    ),
    **{
        f"p{q}": (
            f"histogram_quantile(0.{q}, sum by (le) (increase("
            f'tagwatch_http_request_duration_seconds_bucket{{{PREDICT},endpoint="predict"}}[1d])))'
        )
        for q in ("50", "95", "99")
    },
    **{
        name: (
            f"sum(increase(tagwatch_feedback_{name}_ratio_sum{{{PREDICT}}}[1d])) / "
            f"sum(increase(tagwatch_feedback_{name}_ratio_count{{{PREDICT}}}[1d]))"
        )
        for name in ("coverage", "jaccard")
    },
}
VALIDATION_QUERIES = {
    "coverage": "max(tagwatch_model_validation_coverage_ratio)",
    "jaccard": "max(tagwatch_model_validation_jaccard_ratio)",
}
PROBLEM_TITLES = {
    "lowest_jaccard": "Lowest Jaccard with feedback",
    "empty_predictions": "Empty predictions",
    "highest_oov": "Highest oov_ratio (words unknown to the model)",
}


@dataclass
class AlertSummary:
    alertname: str
    severity: str
    episodes: int
    minutes: float
    labels: list[str]


@dataclass
class WeeklyReport:
    start: datetime
    end: datetime
    days: list[str] = field(default_factory=list)
    daily: dict[str, list[float | None]] | None = None
    validation: dict[str, float] = field(default_factory=dict)
    alerts: list[AlertSummary] | None = None
    drift: list[dict[str, Any]] | None = None
    problematic: dict[str, list[dict[str, Any]]] | None = None
    missing: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- pure computations


def day_points(end: datetime, days: int) -> list[datetime]:
    """Evaluation times of the daily queries: each covers the 24 h before it, the last is ``end``.

    Rows are labelled with their end's date (a Monday 08:00 run: Tue 08:00 ... Mon 08:00).
    """
    return [end - timedelta(days=days - 1 - i) for i in range(days)]


def align(series: list[Series], points: list[datetime]) -> list[float | None]:
    """Values of a one-series result at the day points (None where Prometheus had nothing)."""
    if not series:
        return [None] * len(points)
    by_time = {round(t): v for t, v in series[0].points}
    out: list[float | None] = []
    for p in points:
        v = by_time.get(round(p.timestamp()))
        out.append(None if v is None or v != v else v)  # NaN (0/0) -> None
    return out


def alert_episodes(series: Iterable[Series], step: float = ALERT_STEP) -> list[AlertSummary]:
    """Firing episodes and minutes per alert from per-minute ``max_over_time(ALERTS[1m])``.

    The max over each step catches episodes shorter than the step. An episode is a run of
    samples less than two steps apart; minutes count samples x step (rounded up per minute).
    """
    acc: dict[tuple[str, str], AlertSummary] = {}
    for s in series:
        name = s.labels.get("alertname", "?")
        severity = s.labels.get("severity", "")
        key = (name, severity)
        summary = acc.setdefault(key, AlertSummary(name, severity, 0, 0.0, []))
        times = sorted(t for t, _ in s.points)
        if not times:
            continue
        summary.episodes += 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 1.5 * step)
        summary.minutes += len(times) * step / 60.0
        detail = ", ".join(
            f"{k}={v}"
            for k, v in sorted(s.labels.items())
            if k not in {"__name__", "alertname", "alertstate", "severity", "job"}
        )
        if detail and detail not in summary.labels:
            summary.labels.append(detail)
    return sorted(acc.values(), key=lambda a: (a.severity != "critical", -a.minutes, a.alertname))


def question_link(row: dict[str, Any], predictor_url: str) -> str:
    """The question's own URL when it has one (replayed StackOverflow questions), else ours."""
    url = row.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return f"{predictor_url}/predictions/{row['id']}"


# ---------------------------------------------------------------- collecting


def collect(
    settings: AlertingSettings,
    end: datetime,
    prometheus: PrometheusClient,
    problematic: Callable[[float, int], dict[str, list[dict[str, Any]]]] | None,
) -> WeeklyReport:
    """Fill every section it can; name the others in ``report.missing`` with the reason."""
    start = end - timedelta(days=settings.weekly_days)
    points = day_points(end, settings.weekly_days)
    report = WeeklyReport(start=start, end=end, days=[p.strftime("%a %d %b") for p in points])
    try:
        report.daily = {
            name: align(prometheus.query_range(expr, points[0], points[-1], DAY), points)
            for name, expr in DAILY_QUERIES.items()
        }
        for name, expr in VALIDATION_QUERIES.items():
            result = prometheus.query(expr, end)
            if result:
                report.validation[name] = result[0].points[0][1]
    except PrometheusError as exc:
        report.missing["volume, latency and quality per day"] = str(exc)
    try:
        report.alerts = alert_episodes(
            prometheus.query_range(
                f'max_over_time(ALERTS{{alertstate="firing"}}[{ALERT_STEP:.0f}s])',
                start,
                end,
                ALERT_STEP,
            )
        )
    except PrometheusError as exc:
        report.missing["alert episodes"] = str(exc)
    try:
        latest = {
            s.labels.get("feature", "?"): s.points[0][1]
            for s in prometheus.query("max by (feature) (tagwatch_drift_feature_status)", end)
        }
        worst = {
            s.labels.get("feature", "?"): s.points[0][1]
            for s in prometheus.query(
                "max by (feature) (max_over_time(tagwatch_drift_feature_status"
                f"[{settings.weekly_days}d]))",
                end,
            )
        }
        report.drift = [
            {
                "feature": f,
                "latest": DRIFT_STATUS.get(int(latest[f]), "?") if f in latest else "absent",
                "worst": DRIFT_STATUS.get(int(worst[f]), "?"),
            }
            for f in sorted(worst)
        ]
    except PrometheusError as exc:
        report.missing["drift status per feature"] = str(exc)
    if problematic is None:
        report.missing["problematic questions"] = f"store not found ({settings.store_url})"
    else:
        try:
            rows = problematic(start.timestamp(), settings.weekly_problematic_limit)
            for items in rows.values():
                for row in items:
                    row["link"] = question_link(row, settings.predictor_url)
            report.problematic = rows
        except Exception as exc:  # any store failure must not cost the rest of the report
            report.missing["problematic questions"] = f"store {settings.store_url}: {exc}"
    return report


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html_email: str  # images as cid: references
    html_file: str  # images as data: URIs (a standalone file)
    charts: dict[str, bytes]  # name -> PNG


def charts_of(report: WeeklyReport) -> dict[str, bytes]:
    if report.daily is None:
        return {}
    d = report.daily
    refs = {f"validation {k}": v for k, v in report.validation.items()}
    return {
        "volume": bar_chart(
            "Requests per day",
            report.days,
            {"predictions": d["predictions"], "feedback": d["feedback"], "5xx": d["errors_5xx"]},
        ),
        "latency": line_chart(
            "Predict latency per day (s)",
            report.days,
            {"p50": d["p50"], "p95": d["p95"], "p99": d["p99"]},
            {"SLO 0.25 s": 0.25},
        ),
        "quality": line_chart(
            "Mean coverage and Jaccard of feedback per day",
            report.days,
            {"coverage": d["coverage"], "jaccard": d["jaccard"]},
            refs,
        ),
    }


def _environment() -> Environment:
    env = Environment(
        # beside this module: pyproject's package-data ships "*.j2" of the package folder
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, fmt="{:.3f}": "–" if v is None else fmt.format(v)
    return env


def render(settings: AlertingSettings, report: WeeklyReport) -> Rendered:
    charts = charts_of(report)
    cids = {name: make_msgid(domain="tagwatch")[1:-1] for name in charts}
    env = _environment()
    firing = sum(a.episodes for a in report.alerts or [])
    subject = (
        f"[tagwatch] Weekly summary {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}: "
        f"{firing} alert episode(s)"
        + (f", {len(report.missing)} section(s) missing" if report.missing else "")
    )
    context = {
        "r": report,
        "s": settings,
        "subject": subject,
        "titles": PROBLEM_TITLES,
        "chart_names": list(charts),
    }
    html = env.get_template("weekly.html.j2")
    return Rendered(
        subject=subject,
        text=env.get_template("weekly.txt.j2").render(**context),
        html_email=html.render(**context, src={n: f"cid:{c}" for n, c in cids.items()}),
        html_file=html.render(
            **context,
            src={
                n: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                for n, png in charts.items()
            },
        ),
        charts={cids[n]: png for n, png in charts.items()},
    )


def build_message(settings: AlertingSettings, rendered: Rendered) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = rendered.subject
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(settings.weekly_recipients)
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html_email, subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    for cid, png in rendered.charts.items():
        html_part.add_related(png, "image", "png", cid=f"<{cid}>", filename=f"{cid}.png")
    return msg


def write_report(settings: AlertingSettings, report: WeeklyReport, rendered: Rendered) -> Path:
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / f"{report.end:%Y-%m-%d}.html"
    path.write_text(rendered.html_file, encoding="utf-8")
    path.with_suffix(".txt").write_text(rendered.text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the job


def open_problematic(
    settings: AlertingSettings,
) -> Callable[[float, int], dict[str, list[dict[str, Any]]]] | None:
    """The store's ``problematic`` method, or None when the SQLite file does not exist."""
    url = settings.store_url
    if url.startswith("sqlite:///") or "://" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return None
    return open_store(url).problematic


def run_weekly(
    settings: AlertingSettings,
    metrics: WeeklyMetrics,
    end: datetime | None = None,
    send: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """One weekly summary: collect, render, write the file, email it. Raises on failure."""
    t0 = time.monotonic()
    metrics.runs.inc()
    try:
        end = end or datetime.now(UTC)
        report = collect(
            settings,
            end,
            PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds),
            open_problematic(settings),
        )
        metrics.missing_sections.set(len(report.missing))
        for section, reason in report.missing.items():
            log.warning("weekly summary: %s missing: %s", section, reason)
        rendered = render(settings, report)
        path = write_report(settings, report, rendered)
        log.info("weekly summary written to %s", path)
        if send:
            attempts = send_email(settings, build_message(settings, rendered), sleep=sleep)
            metrics.emails_sent.inc()
            log.info(
                "weekly summary sent to %s (%d attempt(s))",
                ", ".join(settings.weekly_recipients), attempts,
            )  # fmt: skip
        metrics.last_success.set(time.time())
        return path
    except Exception:
        metrics.failures.inc()
        raise
    finally:
        metrics.last_run_duration.set(time.monotonic() - t0)
