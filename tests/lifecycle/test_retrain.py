"""``python -m lifecycle retrain`` as a real process against a real store and MLflow registry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tagger.artefact import load_per_tag, read_card
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tagger.tagquality import PER_TAG_FILE
from tests.lifecycle.conftest import RetrainEnv, fill_store
from tests.processes import REPO_ROOT


def run_cli(rt: RetrainEnv, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifecycle", "retrain", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **rt.env, **env},
        timeout=180,
    )


def snapshot(rt: RetrainEnv) -> tuple[int | None, list[int], int, str | None]:
    """Champion, registered versions, MLflow runs, models/LATEST: what must not change."""
    from mlflow import MlflowClient

    from lifecycle.registry import Registry
    from tagger.artefact import read_pointer

    registry = Registry(rt.settings)
    champion = registry.champion()
    runs = MlflowClient().search_runs([registry.experiment_id])
    return (
        champion.version if champion else None,
        [r.version for r in registry.versions()],
        len(runs),
        read_pointer(rt.settings.models_dir),
    )


def late_2011(settings: TagwatchSettings, n: int) -> pd.DataFrame:
    """The champion's own period: a retrain on these cannot beat it (same data drift: none)."""
    df = load_questions(settings.titles_path)
    return df.loc[df["created_at"] < pd.Timestamp("2012-01-01", tz="UTC")].tail(n)


def test_retrain_rejected_by_the_gate_keeps_the_champion(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings, tmp_path: Path
) -> None:
    rt = champion_2011
    questions = late_2011(tagwatch_settings, 1200)
    fill_store(
        rt.settings.store_url, rt.settings.models_dir / "test", questions, time.time() - 86400
    )
    before = snapshot(rt)
    assert before[0] == 1

    result = run_cli(rt, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    print(line)
    assert line.startswith(
        "retrain rejected: v2 not promoted, champion v1 kept: Jaccard on the 240"
    )
    assert "why: Jaccard" in line and "margin 0.0100" in line

    from mlflow import MlflowClient

    from lifecycle.registry import Registry

    registry = Registry(rt.settings)
    assert registry.champion().version == 1  # type: ignore[union-attr]
    assert [r.version for r in registry.versions()] == [1, 2]  # the challenger is registered
    run = MlflowClient().get_run(registry.get(2).run_id)
    assert run.data.tags["decision"] == "rejected"
    assert run.data.tags["reason"].startswith("Jaccard")
    assert run.data.tags["failed_rules"].split(",") == ["jaccard_gain", "coverage"]
    metrics = run.data.metrics
    assert metrics["champion_jaccard"] > metrics["challenger_jaccard"]
    assert metrics["holdout_rows"] == 240
    assert {"champion_coverage", "challenger_coverage"} <= set(metrics)
    assert "drift_recovery" not in metrics  # same period: no gap, no verdict
    # the served pointer did not move; the challenger's baseline is its hold-out slice
    assert snapshot(rt)[3] == before[3]
    baseline = pd.read_csv(
        rt.settings.models_dir / registry.get(2).artefact_version / "baseline.csv"
    )
    assert len(baseline) == 240
    # and its per-tag baseline too (issue 17): the artefact's table is the one the run logged
    challenger = rt.settings.models_dir / registry.get(2).artefact_version
    per_tag = load_per_tag(challenger)
    assert per_tag is not None and per_tag["tag"].tolist() == read_card(challenger)["tags"]
    assert per_tag["support"].sum() > 240  # 1 to 5 tags a question, given or predicted
    import mlflow

    logged = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=PER_TAG_FILE, dst_path=str(tmp_path)
    )
    pd.testing.assert_frame_equal(pd.read_csv(logged, keep_default_na=False), per_tag)


def test_too_few_labelled_questions_skip_and_say_so(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    rt = champion_2011
    fill_store(
        rt.settings.store_url,
        rt.settings.models_dir / "test",
        late_2011(tagwatch_settings, 40),
        time.time() - 3600,
    )
    result = run_cli(rt)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "retrain skipped: not enough data: 40 labelled questions between" in result.stdout
    assert "fewer than 500" in result.stdout
    champion, versions, _, _ = snapshot(rt)
    assert (champion, versions) == (1, [1])
    # the decision is recorded all the same
    from mlflow import MlflowClient

    from lifecycle.registry import Registry

    found = MlflowClient().search_runs(
        [Registry(rt.settings).experiment_id], "tags.decision = 'skipped'"
    )
    assert len(found) == 1 and "fewer than 500" in found[0].data.tags["reason"]


def test_bad_input_is_a_clear_error_and_changes_nothing(champion_2011: RetrainEnv) -> None:
    rt = champion_2011
    before = snapshot(rt)
    cases = [
        (["--since", "yesterday-ish"], {}, "--since: not a date: 'yesterday-ish'"),
        (["--until", "2026-13-45"], {}, "--until: not a date"),
        (["--since", "2026-02-01", "--until", "2026-01-01"], {}, "is not before --until"),
        (["--bogus"], {}, "unrecognized arguments: --bogus"),
        ([], {"TAGWATCH_STORE_URL": "postgres://db/tagwatch"}, "TAGWATCH_STORE_URL"),
        (
            ["--with-original"],
            {"TAGWATCH_DATA_DIR": str(rt.root / "nowhere")},
            "--with-original:",
        ),
    ]
    for args, env, message in cases:
        result = run_cli(rt, *args, **env)
        assert result.returncode == 2, (args, result.stdout, result.stderr[-2000:])
        assert message in result.stderr, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    assert snapshot(rt) == before
    assert not Path(rt.root / "nowhere").exists()


def models_on_disk(rt: RetrainEnv) -> list[str]:
    return sorted(p.name for p in rt.settings.models_dir.iterdir() if p.is_dir())


def failed_runs(rt: RetrainEnv) -> int:
    from mlflow import MlflowClient

    from lifecycle.registry import Registry

    experiment = Registry(rt.settings).experiment_id
    return len(MlflowClient().search_runs([experiment], "tags.decision = 'failed'"))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "n", "message"),
    [
        ("a single tag everywhere", 1200, "0 tag(s) with both positive and negative"),
        ("600 labelled questions", 600, "the hold-out slice has 120, fewer than the gate's"),
    ],
)
def test_degenerate_data_is_skipped_as_not_enough_data_without_a_fit(
    champion_2011: RetrainEnv,
    tagwatch_settings: TagwatchSettings,
    case: str,
    n: int,
    message: str,
) -> None:
    rt = champion_2011
    questions = late_2011(tagwatch_settings, n)
    if case == "a single tag everywhere":
        questions = questions.assign(tags=[["python"]] * n)
    fill_store(
        rt.settings.store_url, rt.settings.models_dir / "test", questions, time.time() - 86400
    )
    before = snapshot(rt)
    on_disk = models_on_disk(rt)
    t0 = time.monotonic()
    result = run_cli(rt)
    seconds = time.monotonic() - t0
    line = result.stdout.strip().splitlines()[-1]
    print(f"\n{case}: exit {result.returncode} in {seconds:.1f} s: {line}")
    assert result.returncode == 3, result.stderr[-3000:]
    assert line.startswith("retrain skipped: not enough data: ") and message in line
    assert "Traceback" not in result.stderr and "ValueError" not in result.stderr
    champion, versions, runs, pointer = snapshot(rt)
    assert (champion, versions, pointer) == before[:2] + before[3:]  # nothing registered
    assert runs == before[2] + 1  # the skip itself is recorded
    assert failed_runs(rt) == 0  # not a failure (RetrainFailing stays quiet)
    assert models_on_disk(rt) == on_disk  # no fit: no new artefact
