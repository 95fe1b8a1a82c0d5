"""Promotion policy: auto, approve (registered, waits for `lifecycle promote`), never."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lifecycle.gate import PROMOTED, REJECTED, GateDecision
from lifecycle.metrics import LifecycleMetrics
from lifecycle.retrain import _apply_policy, _policy, retrain
from lifecycle.settings import LifecycleSettings
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import RetrainEnv, fill_store
from tests.processes import metric_value, run_module

PASSED = GateDecision(PROMOTED, "Jaccard 0.2 vs champion 0.12 (gain +0.08, ...)")
FAILED = GateDecision(REJECTED, "Jaccard 0.1 vs champion 0.12", ["jaccard_gain"])


def test_policy_by_trigger_and_what_it_makes_of_a_gate_decision() -> None:
    settings = LifecycleSettings()
    assert _policy(settings, "webhook JaccardLow", True) == "approve"  # the default
    assert _policy(settings, "schedule", True) == "auto"
    assert _policy(settings, "cli", False) == "never"  # --no-promote
    custom = LifecycleSettings(retrain_policy="never", retrain_webhook_policy="auto")
    assert _policy(custom, "manual", True) == "never"
    assert _policy(custom, "webhook DataDriftDetected", True) == "auto"
    assert _apply_policy("auto", PASSED) == ("promoted", PASSED.reason)
    outcome, reason = _apply_policy("approve", PASSED)
    assert outcome == "awaiting_approval" and reason.startswith("passed every check")
    assert _apply_policy("never", PASSED)[0] == "rejected"
    for policy in ("auto", "approve", "never"):  # no policy promotes what the gate refused
        assert _apply_policy(policy, FAILED) == ("rejected", FAILED.reason)


def honest_recent(settings: TagwatchSettings) -> pd.DataFrame:
    """The acceptance test's labelled questions: every other one of 2019 – Feb 2020."""
    df = load_questions(settings.titles_path)
    recent = df.loc[df["created_at"] >= pd.Timestamp("2019-01-01", tz="UTC")]
    return recent.iloc[: round(len(recent) * 0.85) : 2]


@pytest.mark.slow
def test_a_webhook_retrain_waits_for_approval_then_lifecycle_promote(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    rt = champion_2011
    fill_store(
        rt.settings.store_url,
        rt.settings.models_dir / "test",
        honest_recent(tagwatch_settings),
        time.time() - 86400,
        seconds_apart=10.0,
    )
    registry = CollectorRegistry()
    out = retrain(rt.settings, metrics=LifecycleMetrics(registry), source="webhook JaccardLow")
    print(f"\nwebhook retrain, default policy: {out.line()}")
    assert out.outcome == "awaiting_approval", out.line()
    assert out.line().startswith("retrain awaiting approval: v2 passed every check")
    assert "python -m lifecycle promote --version 2" in out.reason
    text = generate_latest(registry).decode()
    assert metric_value(text, "tagwatch_challenger_awaiting_approval_version") == 2
    assert metric_value(text, "tagwatch_retrain_runs_total", 'outcome="awaiting_approval"') == 1

    from lifecycle.registry import Registry

    assert Registry(rt.settings).champion().version == 1  # type: ignore[union-attr]
    result = run_module(
        "lifecycle", "promote", "--version", "2", "--reason", "approved",
        env={**os.environ, **rt.env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert Registry(rt.settings).champion().version == 2  # type: ignore[union-attr]
