"""Acceptance, on real data through the real processes: poisoned feedback promotes nothing.

The issue's probe: 1,500 real 2019 questions served by the real predictor; 80 % (then 20 %) of
their feedback says ``["javascript"]``, sent with the feedback token; then ``python -m lifecycle
retrain``. Before, the gate promoted a model that tagged "sort list of dicts in Python"
``javascript``. Now the retrain stops before fitting as suspicious feedback, names the tag and
the check, nothing is registered, FeedbackAnomaly's metric is set, and the predictor answers as
before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest

from exporter.replay import ReplayConfig, Replayer
from lifecycle.metrics import LifecycleMetrics
from lifecycle.retrain import retrain
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import RetrainEnv, serving_env
from tests.lifecycle.test_retrain import models_on_disk, run_cli, snapshot
from tests.lifecycle.test_sanity import poisoned
from tests.processes import FEEDBACK_TOKEN, metric_value, start_predictor

PROBES = (
    "sort list of dicts in Python",
    "How do I sort a list of dictionaries by a value in python?",
    "SQL join two tables with a where clause",
    "java NullPointerException when calling a method of a list",
    "css center a div horizontally and vertically",
)


def answers(url: str) -> list[tuple[str, list[str]]]:
    out = []
    for title in PROBES:
        r = requests.post(f"{url}/predict", json={"title": title}, timeout=10)
        r.raise_for_status()
        out.append((r.json()["model_version"], r.json()["tags"]))
    return out


def questions_2019(settings: TagwatchSettings, n: int = 1500) -> pd.DataFrame:
    df = load_questions(settings.titles_path)
    return df.loc[df["created_at"].dt.year == 2019].iloc[::3].head(n)


def send_with_token(url: str, questions: pd.DataFrame) -> None:
    config = ReplayConfig(
        url=url,
        speed=0.0,
        max_gap=0.0,
        feedback_delay=0.0,
        progress=False,
        feedback_token=FEEDBACK_TOKEN,
    )
    summary = Replayer(config).run(questions)
    assert summary.errors == 0 and summary.feedback_sent == len(questions), summary.format()


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.8, 0.2])
def test_poisoned_feedback_is_stopped_before_fitting_and_serving_is_unchanged(
    champion_2011: RetrainEnv,
    tagwatch_settings: TagwatchSettings,
    free_port: Callable[[], int],
    share: float,
) -> None:
    rt = champion_2011
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    predictor = start_predictor(
        rt.settings.models_dir,
        port,
        rt.root,
        store_path=rt.root / "store.sqlite3",
        TAGWATCH_FEEDBACK_AUTH="token",  # as deployed: feedback needs the token
        **serving_env(rt.settings, poll_seconds=1.0),
    )
    try:
        unauthorized = requests.post(
            f"{url}/feedback", json={"prediction_id": "x", "tags": ["javascript"]}, timeout=10
        )
        assert unauthorized.status_code == 401  # the attacker needs the credential
        before_answers = answers(url)
        send_with_token(url, poisoned(questions_2019(tagwatch_settings), share))
        before = snapshot(rt)
        on_disk = models_on_disk(rt)
        result = run_cli(rt, "--json")
        time.sleep(3)  # three registry polls: a promotion would have been picked up
        after_answers = answers(url)
    finally:
        predictor.stop()

    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-3000:]
    outcome: dict[str, Any] = json.loads(result.stdout.splitlines()[-2])
    line = result.stdout.splitlines()[-1]
    checks = {c["check"]: c for c in outcome["feedback"]}
    print(
        f"\n{share:.0%} poison: {line}\nchecks: "
        + ", ".join(f"{k} {c['value']:.3f} (threshold {c['threshold']})" for k, c in checks.items())
    )
    assert outcome["outcome"] == "suspicious"
    assert line.startswith("retrain suspicious: suspicious feedback: tag 'javascript' is on ")
    assert "source" in line  # which credential sent it (the store records it)
    assert checks["tag_share"]["failed"]
    if share == 0.8:
        assert all(c["failed"] for c in checks.values()) and len(checks) == 3
    # nothing registered, nothing fitted, the champion and what clients get unchanged
    assert snapshot(rt)[:2] == before[:2] == (1, [1])
    assert models_on_disk(rt) == on_disk
    assert after_answers == before_answers
    assert (
        after_answers[0] == ("test", after_answers[0][1])
        and "javascript" not in after_answers[0][1]
    )


@pytest.mark.slow
def test_feedback_anomaly_metric_is_set_at_80_percent(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    """The lifecycle service's metrics (the service calls this same ``retrain``): what
    FeedbackAnomaly reads (prometheus/tests/alerts_trust_test.yml fires it from these values)."""
    from tests.lifecycle.conftest import fill_store

    rt = champion_2011
    fill_store(
        rt.settings.store_url,
        rt.settings.models_dir / "test",
        poisoned(questions_2019(tagwatch_settings), 0.8),
        time.time() - 86400,
    )
    registry = CollectorRegistry()
    out = retrain(rt.settings, metrics=LifecycleMetrics(registry), source="webhook JaccardLow")
    text = generate_latest(registry).decode()
    values = {
        check: (
            metric_value(text, "tagwatch_retrain_feedback_anomaly", f'check="{check}"'),
            metric_value(text, "tagwatch_retrain_feedback_check_value", f'check="{check}"'),
            metric_value(text, "tagwatch_retrain_feedback_check_threshold", f'check="{check}"'),
        )
        for check in ("tag_share", "entropy", "agreement")
    }
    print(f"\n80 % poison, service metrics: {values}")
    assert out.outcome == "suspicious"
    assert metric_value(text, "tagwatch_retrain_runs_total", 'outcome="suspicious"') == 1
    assert all(anomaly == 1.0 for anomaly, _, _ in values.values())
    share, threshold = values["tag_share"][1:]
    assert share is not None and share > 0.7 and threshold == 0.15
    assert metric_value(text, "tagwatch_challenger_awaiting_approval_version") == 0


@pytest.mark.slow
def test_with_the_feedback_checks_off_the_canary_still_refuses_the_poisoned_model(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    """Defence in depth: 80 % poison past disabled sanity checks. The challenger wins on the
    poisoned slice beyond any noise, and collapses on the trusted canary set: not promoted,
    and no "recovered 100 %" drift verdict."""
    from tests.lifecycle.conftest import fill_store

    rt = champion_2011
    fill_store(
        rt.settings.store_url,
        rt.settings.models_dir / "test",
        poisoned(questions_2019(tagwatch_settings), 0.8),
        time.time() - 86400,
    )
    checks_off = {
        "TAGWATCH_FEEDBACK_MAX_TAG_SHARE_RISE": "1",
        "TAGWATCH_FEEDBACK_MIN_ENTROPY_RATIO": "0.0001",
        "TAGWATCH_FEEDBACK_MAX_AGREEMENT_DROP": "1",
    }
    result = run_cli(rt, "--json", **checks_off)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.splitlines()[-2])
    line = result.stdout.splitlines()[-1]
    print(
        f"\n80% poison, feedback checks off: {line}\n"
        f"gain {outcome['gain']}\nanchor {outcome['anchor']}"
    )
    assert outcome["outcome"] == "rejected"
    assert outcome["gain"]["low"] > 0.5  # the slice is fooled, beyond noise
    assert not outcome["anchor"]["challenger"] >= outcome["anchor"]["floor"]
    assert "collapses on the trusted set: canary Jaccard" in line
    assert "no drift verdict" in outcome["verdict"] and "100%" not in outcome["verdict"]
    assert snapshot(rt)[0] == 1
