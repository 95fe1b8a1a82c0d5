"""Every Prometheus metric of the predictor process, built against an injected registry.

The names are a contract with the alert rules (``prometheus/rules``) and the dashboards
(``grafana/``): add metrics freely, rename none. Labels are bounded: ``endpoint`` is one of
:data:`ENDPOINTS`, ``status`` an HTTP code, ``tag`` a tag of the model vocabulary.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from tagger.tagquality import OUTCOMES, outcomes

if TYPE_CHECKING:
    import pandas as pd

ENDPOINTS = ("predict", "feedback", "prediction", "metrics", "healthz", "readyz", "other")
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
INFERENCE_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TITLE_BUCKETS = (10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300)
BODY_BUCKETS = (0, 100, 300, 1000, 3000, 10000, 30000, 65536)
# per-tag quality (tagger/tagquality.py): only the served vocabulary's tags are exposed
TAG_FEEDBACK = "tagwatch_tag_feedback"
TAG_FEEDBACK_HELP = (
    "Feedback outcomes per tag of the served vocabulary: tp (predicted and given), "
    "fp (predicted, not given), fn (given, not predicted)."
)
OUTCOME_LABELS = ["tag", "outcome"]
TAG_BASELINE = {
    "f1": "tagwatch_model_validation_tag_f1_ratio",
    "precision": "tagwatch_model_validation_tag_precision_ratio",
    "recall": "tagwatch_model_validation_tag_recall_ratio",
    "support": "tagwatch_model_validation_tag_support",
}


def _observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every value, one write per touched bucket.

    prometheus_client keeps one non-cumulative count per bucket (``_buckets``, the first upper
    bound ≥ the value) and a ``_sum``; tests check this equals calling ``observe``.
    """
    if not values:
        return
    bounds = histogram._upper_bounds
    counts: dict[int, int] = {}
    for v in values:
        i = bisect.bisect_left(bounds, v)
        counts[i] = counts.get(i, 0) + 1
    for i, n in counts.items():
        histogram._buckets[i].inc(n)
    histogram._sum.inc(float(sum(values)))


class PredictorMetrics:
    """The predictor's metrics; the app only calls the ``observe_*`` methods."""

    def __init__(
        self,
        registry: CollectorRegistry,
        tags: Sequence[str] = (),
        batch_size: int = 1,
        tag_metrics: bool = True,
    ) -> None:
        self.batch_size = batch_size
        self.tag_metrics = tag_metrics  # TAGWATCH_TAG_METRICS: per-tag quality on/off
        # the served vocabulary (set_model), and the tag_feedback children made so far: a
        # child is made at its first observation, so a worker boots and /metrics reads files
        # without K x 3 zero entries (VocabularyFilter shows the zeros)
        self._tag_vocab: frozenset[str] = frozenset()
        self._outcome_children: dict[tuple[str, str], Any] = {}
        self.tag_baseline = TagBaseline()
        self._flush_lock = threading.Lock()
        self._requests_pending: list[tuple[str, int, float]] = []
        self._predictions_pending: list[tuple[float, tuple[str, ...], int, int, float, float]] = []
        self._tag_feedback_pending: list[tuple[Sequence[str], Sequence[str]]] = []
        self._declare_requests(registry)
        self._declare_predictions(registry)
        self._declare_feedback(registry)
        self._declare_model(registry)
        self._declare_store(registry)
        if tag_metrics:
            self._declare_tag_quality(registry)
        # every vocabulary tag exists from the start (rates are never absent), and labelled
        # children are looked up once: ``labels()`` costs more than the increment itself
        self._tag_children = {tag: self.predicted_tags.labels(tag=tag) for tag in tags}
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        for endpoint in ("predict", "feedback"):
            self.request_duration.labels(endpoint=endpoint)

    def _declare_requests(self, r: CollectorRegistry) -> None:
        """HTTP traffic and model time."""
        self.inference = Histogram(
            "tagwatch_inference_seconds",
            "Model time per question (cleaning, scoring, decision, features).",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "tagwatch_http_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "tagwatch_http_request_duration_seconds",
            "Time spent in the application per HTTP request.",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )

    def _declare_predictions(self, r: CollectorRegistry) -> None:
        """What questions look like and what was predicted (data drift, live)."""
        self.predictions = Counter(
            "tagwatch_predictions", "Questions answered by /predict.", registry=r
        )
        self.empty_predictions = Counter(
            "tagwatch_empty_predictions",
            "Predictions with no tag (no known word in the question).",
            registry=r,
        )
        self.predicted_tags = Counter(
            "tagwatch_predicted_tags", "Tags suggested, by tag.", ["tag"], registry=r
        )
        self.title_chars = Histogram(
            "tagwatch_question_title_chars",
            "Length of question titles in characters.",
            buckets=TITLE_BUCKETS,
            registry=r,
        )
        self.body_chars = Histogram(
            "tagwatch_question_body_chars",
            "Length of question bodies in characters (0 when absent).",
            buckets=BODY_BUCKETS,
            registry=r,
        )
        self.oov_ratio = Histogram(
            "tagwatch_question_oov_ratio",
            "Share of a question's tokens outside the model vocabulary.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.max_score = Histogram(
            "tagwatch_prediction_max_score",
            "Highest tag score of a prediction.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.predicted_per_question = Histogram(
            "tagwatch_prediction_tags",
            "Number of tags suggested per question.",
            buckets=(0, 1, 2, 3, 4, 5),
            registry=r,
        )

    def _declare_feedback(self, r: CollectorRegistry) -> None:
        """Quality from users' tags (coverage, Jaccard) and concept-drift signals."""
        self.feedback = Counter(
            "tagwatch_feedback", "Feedback received (each prediction counts once).", registry=r
        )
        self.feedback_duplicates = Counter(
            "tagwatch_feedback_duplicates",
            "Repeated feedback for a prediction, acknowledged but not counted.",
            registry=r,
        )
        self.coverage = Histogram(
            "tagwatch_feedback_coverage_ratio",
            "Share of the user's tags that had been predicted.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.jaccard = Histogram(
            "tagwatch_feedback_jaccard_ratio",
            "Jaccard score between predicted and user tags.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.feedback_pending = Counter(
            "tagwatch_feedback_pending",
            "Feedback accepted (202) for a prediction not visible yet (another replica's queue).",
            registry=r,
        )
        self.feedback_expired = Counter(
            "tagwatch_feedback_expired",
            "Pending feedback dropped: its prediction never arrived within the pending window.",
            registry=r,
        )
        self.feedback_tags = Counter(
            "tagwatch_feedback_tags", "Tags chosen by users in feedback.", registry=r
        )
        self.feedback_unknown_tags = Counter(
            "tagwatch_feedback_unknown_tags",
            "User tags outside the model vocabulary (a concept-drift signal).",
            registry=r,
        )

    def _declare_model(self, r: CollectorRegistry) -> None:
        """The model served: version, registry version and its validation scores."""
        self.model_info = Gauge(
            "tagwatch_model_info",
            "The model being served (always 1).",
            ["version", "trained_until"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.validation_jaccard = Gauge(
            "tagwatch_model_validation_jaccard_ratio",
            "Mean Jaccard of the served model on its validation set (model card).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.validation_coverage = Gauge(
            "tagwatch_model_validation_coverage_ratio",
            "Mean tag coverage of the served model on its validation set (model card).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.validation_unknown_tags = Gauge(
            "tagwatch_model_validation_unknown_tags_ratio",
            "Share of validation tags outside the model vocabulary (concept-drift baseline).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.registry_version = Gauge(
            "tagwatch_model_registry_version",
            "Registry version (models:/tagwatch/N) of the model served; 0 when not from it.",
            multiprocess_mode="livemax",
            registry=r,
        )

    def _declare_tag_quality(self, r: CollectorRegistry) -> None:
        """Per-tag outcomes of feedback and the served model's per-tag validation baseline
        (its artefact's per_tag_metrics.csv): what TagQualityLow compares."""
        # not registered itself: /metrics shows it through exposed() (filtered, zero-filled)
        self.tag_feedback = Counter(TAG_FEEDBACK, TAG_FEEDBACK_HELP, OUTCOME_LABELS, registry=None)
        for collector in self.exposed(self.tag_feedback):
            r.register(collector)

    def _declare_store(self, r: CollectorRegistry) -> None:
        """The store behind the spool: backlog, refusals, recovery, retention."""
        self.store_errors = Counter(
            "tagwatch_store_errors", "Failed writes or reads of the prediction store.", registry=r
        )
        self.store_queue_rows = Gauge(
            "tagwatch_store_queue_rows",
            "Served predictions not yet written to the store (kept in memory and the spool).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.store_oldest_unwritten_age = Gauge(
            "tagwatch_store_oldest_unwritten_age_seconds",
            "Age of the oldest prediction not yet written to the store (0 when none).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.store_dead_letters = Counter(
            "tagwatch_store_dead_letter_rows",
            "Predictions the database refused, set aside in the dead-letter file.",
            registry=r,
        )
        self.store_recovered = Counter(
            "tagwatch_store_recovered_rows",
            "Predictions replayed from the spool of a worker that died before writing them.",
            registry=r,
        )
        self.store_rows_blanked = Counter(
            "tagwatch_store_rows_blanked",
            "Stored questions whose text was blanked by retention (TAGWATCH_RETENTION_DAYS).",
            registry=r,
        )
        self.store_rows_deleted = Counter(
            "tagwatch_store_rows_deleted",
            "Stored predictions deleted by retention (TAGWATCH_FEATURE_RETENTION_DAYS).",
            registry=r,
        )

    def set_model(
        self,
        card: dict[str, Any],
        vocabulary: Sequence[str] = (),
        per_tag: pd.DataFrame | None = None,
    ) -> None:
        """The served model: its card's numbers, and per tag of ``vocabulary`` the feedback
        outcome counters (created at 0) and the baseline gauges from ``per_tag`` (None: an
        artefact without a per-tag table, no baseline)."""
        trained_until = str(card.get("training_period", {}).get("cutoff", ""))[:10]
        self.model_info.labels(
            version=str(card.get("version", "")), trained_until=trained_until
        ).set(1)
        validation = card.get("validation", {})
        self.validation_jaccard.set(float(validation.get("jaccard", 0.0)))
        self.validation_coverage.set(float(validation.get("coverage", 0.0)))
        self.validation_unknown_tags.set(float(validation.get("unknown_tag_ratio", 0.0)))
        if self.tag_metrics:
            self.flush()  # feedback queued for the previous vocabulary
            self._set_tag_vocabulary(vocabulary)
            self._set_tag_baseline(per_tag)

    @property
    def tag_vocabulary(self) -> frozenset[str]:
        """The tags whose quality is counted (empty: per-tag metrics off or no model)."""
        return self._tag_vocab

    def exposed(self, inner: Collector) -> list[Collector]:
        """What /metrics registers for ``inner`` (this process's counter, or every worker's
        files): the per-tag series filtered to the served vocabulary and zero-filled, and the
        baseline gauges (from memory: no worker writes K x 4 gauge entries into its files)."""
        if not self.tag_metrics:
            return [inner]
        return [VocabularyFilter(inner, lambda: self._tag_vocab), self.tag_baseline]

    def _set_tag_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """The served vocabulary; the children of a tag that left it are removed (bounded:
        K x 3 series at most)."""
        self._tag_vocab = frozenset(str(t) for t in vocabulary)
        for key in [k for k in self._outcome_children if k[0] not in self._tag_vocab]:
            self.tag_feedback.remove(*key)
            del self._outcome_children[key]

    def _set_tag_baseline(self, per_tag: pd.DataFrame | None) -> None:
        """The previous model's baseline goes; the new one's vocabulary tags are shown."""
        rows = [] if per_tag is None else per_tag.to_dict("records")
        self.tag_baseline.rows = [r for r in rows if str(r["tag"]) in self._tag_vocab]

    def set_registry_version(self, version: int) -> None:
        self.registry_version.set(version)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests_pending.append((endpoint, status, seconds))
        if len(self._requests_pending) >= self.batch_size:
            self.flush()

    def observe_prediction(
        self, tags: Sequence[str], features: dict[str, Any], seconds: float
    ) -> None:
        self._predictions_pending.append(
            (
                seconds,
                tuple(tags),
                features["title_chars"],
                features["body_chars"],
                features["oov_ratio"],
                features["max_score"],
            )
        )
        if len(self._predictions_pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Apply the queued request, prediction and per-tag feedback observations.

        In multiprocess mode each increment is a locked write to a memory-mapped file
        (~1.5 µs, 17 of them a request); adding a batch's counts bucket by bucket makes the
        instrumentation a small share of a request. Values lag by at most ``batch_size``
        requests or the flush interval; /metrics flushes its own worker first.
        """
        with self._flush_lock:
            requests, self._requests_pending = self._requests_pending, []
            predictions, self._predictions_pending = self._predictions_pending, []
            tag_feedback, self._tag_feedback_pending = self._tag_feedback_pending, []
            self._apply_tag_feedback(tag_feedback)
            per_endpoint: dict[tuple[str, int], list[float]] = {}
            for endpoint, status, seconds in requests:
                per_endpoint.setdefault((endpoint, status), []).append(seconds)
            for (endpoint, status), durations in per_endpoint.items():
                counter, histogram = self._request_children_of(endpoint, status)
                counter.inc(len(durations))
                _observe_many(histogram, durations)
            if not predictions:
                return
            self.predictions.inc(len(predictions))
            tag_counts: dict[str, int] = {}
            n_empty = 0
            for p in predictions:
                if not p[1]:
                    n_empty += 1
                for tag in p[1]:
                    tag_counts[tag] = tag_counts.get(tag, 0) + 1
            if n_empty:
                self.empty_predictions.inc(n_empty)
            for tag, n in tag_counts.items():
                child = self._tag_children.get(tag)
                if child is None:
                    child = self._tag_children[tag] = self.predicted_tags.labels(tag=tag)
                child.inc(n)
            _observe_many(self.inference, [p[0] for p in predictions])
            _observe_many(self.predicted_per_question, [len(p[1]) for p in predictions])
            _observe_many(self.title_chars, [p[2] for p in predictions])
            _observe_many(self.body_chars, [p[3] for p in predictions])
            _observe_many(self.oov_ratio, [p[4] for p in predictions])
            _observe_many(self.max_score, [p[5] for p in predictions])

    def _apply_tag_feedback(self, pairs: list[tuple[Sequence[str], Sequence[str]]]) -> None:
        """One increment per (tag, outcome) a batch touched (a frequent tag's fp repeats)."""
        counts: dict[tuple[str, str], int] = {}
        for predicted, given in pairs:
            for key in outcomes(predicted, given, self._tag_vocab):
                counts[key] = counts.get(key, 0) + 1
        for key, n in counts.items():
            child = self._outcome_children.get(key)
            if child is None:
                child = self._outcome_children[key] = self.tag_feedback.labels(*key)
            child.inc(n)

    def _request_children_of(self, endpoint: str, status: int) -> tuple[Any, Any]:
        children = self._request_children.get((endpoint, status))
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.request_duration.labels(endpoint=endpoint),
            )
            self._request_children[(endpoint, status)] = children
        return children

    def start_flusher(self, interval_seconds: float = 1.0) -> threading.Thread:
        """A daemon thread flushing every ``interval_seconds``, so an idle worker's last
        observations still reach /metrics."""

        def run() -> None:
            while True:
                time.sleep(interval_seconds)
                if (
                    self._requests_pending
                    or self._predictions_pending
                    or self._tag_feedback_pending
                ):
                    self.flush()

        thread = threading.Thread(target=run, name="metrics-flusher", daemon=True)
        thread.start()
        return thread

    def observe_feedback(
        self, coverage: float, jaccard: float, n_tags: int, n_unknown: int
    ) -> None:
        self.feedback.inc()
        self.coverage.observe(coverage)
        self.jaccard.observe(jaccard)
        self.feedback_tags.inc(n_tags)
        self.feedback_unknown_tags.inc(n_unknown)

    def observe_tag_feedback(self, predicted: Sequence[str], given: Sequence[str]) -> None:
        """One feedback's tp/fp/fn per vocabulary tag (a user's other tags are no label),
        applied in batches like predictions (:meth:`flush`)."""
        if not self._tag_vocab:
            return  # TAGWATCH_TAG_METRICS=false, or no model
        self._tag_feedback_pending.append((predicted, given))
        if len(self._tag_feedback_pending) >= self.batch_size:
            self.flush()

    def observe_duplicate_feedback(self) -> None:
        self.feedback_duplicates.inc()

    def observe_pending_feedback(self) -> None:
        self.feedback_pending.inc()

    def observe_resolved_feedback(self, records: Sequence[Any], expired: int) -> None:
        """Pending feedback stored by the writer's housekeeping counts like direct feedback."""
        for f in records:
            self.observe_feedback(f.coverage, f.jaccard, len(f.tags), f.n_unknown_tags)
            self.observe_tag_feedback(f.predicted, f.tags)
        if expired:
            self.feedback_expired.inc(expired)

    def observe_pruned(self, blanked: int, deleted: int) -> None:
        self.store_rows_blanked.inc(blanked)
        self.store_rows_deleted.inc(deleted)

    def observe_store_error(self) -> None:
        self.store_errors.inc()

    def set_store_backlog(self, rows: int, oldest_age_seconds: float) -> None:
        self.store_queue_rows.set(rows)
        self.store_oldest_unwritten_age.set(oldest_age_seconds)

    def observe_dead_letters(self, n: int) -> None:
        self.store_dead_letters.inc(n)

    def observe_recovered_rows(self, n: int) -> None:
        self.store_recovered.inc(n)


class NoMetrics(PredictorMetrics):
    """Instrumentation off (``TAGWATCH_METRICS_ENABLED=false``): for overhead benchmarks."""

    def __init__(self) -> None:
        self.tag_metrics = False
        self._tag_vocab = frozenset()

    def set_model(
        self,
        card: dict[str, Any],
        vocabulary: Sequence[str] = (),
        per_tag: pd.DataFrame | None = None,
    ) -> None:
        pass

    def set_registry_version(self, version: int) -> None:
        pass

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        pass

    def observe_prediction(
        self, tags: Sequence[str], features: dict[str, Any], seconds: float
    ) -> None:
        pass

    def observe_feedback(
        self, coverage: float, jaccard: float, n_tags: int, n_unknown: int
    ) -> None:
        pass

    def observe_tag_feedback(self, predicted: Sequence[str], given: Sequence[str]) -> None:
        pass

    def observe_duplicate_feedback(self) -> None:
        pass

    def observe_pending_feedback(self) -> None:
        pass

    def observe_resolved_feedback(self, records: Sequence[Any], expired: int) -> None:
        pass

    def observe_pruned(self, blanked: int, deleted: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def start_flusher(self, interval_seconds: float = 1.0) -> threading.Thread:
        raise RuntimeError("metrics are disabled")

    def observe_store_error(self) -> None:
        pass

    def set_store_backlog(self, rows: int, oldest_age_seconds: float) -> None:
        pass

    def observe_dead_letters(self, n: int) -> None:
        pass

    def observe_recovered_rows(self, n: int) -> None:
        pass


class VocabularyFilter(Collector):
    """A collector's per-tag feedback series, as many as the served vocabulary: tags that left
    it are dropped, and every tag x outcome not observed yet shows 0 (an increase() over the
    window sees the first feedback; no worker writes the zeros into its files).

    Under gunicorn a dead worker's counters are kept in the archive (exporter/multiproc.py):
    without the filter, a tag that left the vocabulary with a swap would be exposed forever.
    """

    def __init__(
        self, inner: Collector, vocabulary: Collection[str] | Callable[[], Collection[str]]
    ) -> None:
        self._inner = inner
        self._vocabulary = vocabulary

    def collect(self) -> Iterator[Metric]:
        vocab = self._vocabulary() if callable(self._vocabulary) else self._vocabulary
        seen = False
        for metric in self._inner.collect():
            if metric.name == TAG_FEEDBACK:
                seen = True
                metric.samples = _zero_filled(metric.samples, vocab)
            yield metric
        if not seen and vocab:  # no worker has observed a feedback yet
            family = CounterMetricFamily(TAG_FEEDBACK, TAG_FEEDBACK_HELP, labels=OUTCOME_LABELS)
            family.samples = _zero_filled([], vocab)
            yield family


def _zero_filled(samples: Sequence[Sample], vocab: Collection[str]) -> list[Sample]:
    """The samples of vocabulary tags, and a 0 for every tag x outcome without one."""
    kept = [s for s in samples if s.labels.get("tag") in vocab]
    present = {(s.labels["tag"], s.labels.get("outcome")) for s in kept}
    total = f"{TAG_FEEDBACK}_total"
    kept += [
        Sample(total, {"tag": t, "outcome": o}, 0.0)
        for t in sorted(vocab)
        for o in OUTCOMES
        if (t, o) not in present
    ]
    return kept


class TagBaseline(Collector):
    """The served model's per-tag validation table (its artefact's per_tag_metrics.csv) as
    gauges: what TagQualityLow compares the live F1 with."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def collect(self) -> Iterator[Metric]:
        rows = self.rows
        if not rows:
            return
        for key, name in TAG_BASELINE.items():
            family = GaugeMetricFamily(
                name,
                f"Per-tag {key} of the served model on its validation slice (model artefact).",
                labels=["tag"],
            )
            for row in rows:
                family.add_metric([str(row["tag"])], float(row[key]))
            yield family


class SupervisorCollector(Collector):
    """The supervisor's counters (exporter/supervisor.py), read from its status file at scrape.

    The supervisor is not a gunicorn worker and keeps prometheus_client out of its process: it
    writes ``supervisor.json`` in the multiprocess folder, and whichever worker answers
    /metrics reports it.
    """

    def __init__(self, read_status: Any) -> None:
        self._read_status = read_status

    def collect(self) -> Iterator[Metric]:
        status = self._read_status()
        if status is None:
            return
        errors = CounterMetricFamily(
            "tagwatch_model_registry_errors",
            "Failed syncs with the model registry (MLflow unreachable): the cached model served.",
        )
        errors.add_metric([], float(status.registry_errors))
        yield errors
        last = GaugeMetricFamily(
            "tagwatch_model_registry_last_sync_timestamp_seconds",
            "Time of the last successful sync with the model registry (0: never).",
        )
        last.add_metric([], float(status.last_sync_timestamp))
        yield last
        swaps = CounterMetricFamily(
            "tagwatch_model_swaps",
            "Model changes rolled onto the workers (done) or refused (the model did not load).",
            labels=["outcome"],
        )
        for outcome in ("done", "refused"):
            swaps.add_metric([outcome], float(status.swaps.get(outcome, 0)))
        yield swaps
        yield from _refusal_metrics(status)


def _refusal_metrics(status: Any) -> Iterator[Metric]:
    """What ModelLoadFailed compares (prometheus/rules/alerts.yml): the registry's champion
    against the served version, and the version refused while another serves."""
    champion = GaugeMetricFamily(
        "tagwatch_model_registry_champion_version",
        "Registry version the champion alias named at the supervisor's last sync (0: unknown).",
    )
    champion.add_metric([], float(status.champion_version))
    yield champion
    refused = GaugeMetricFamily(
        "tagwatch_model_refused_info",
        "1 while the wanted model (champion / models/LATEST) is refused: version, the version "
        "served instead (none: 503) and why (missing, unloadable, cannot_score, timeout, "
        "workers); the full reason is in /readyz.",
        labels=["version", "served", "reason"],
    )
    if status.refused:
        labels = [str(status.refused.get("version")), str(status.served or "none")]
        refused.add_metric([*labels, str(status.refused.get("kind", "unloadable"))], 1.0)
    yield refused
