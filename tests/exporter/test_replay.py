"""The replay: pure scheduling on real timestamps, CLI errors, and real traffic to gunicorn."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from exporter.replay import ReplayConfig, Replayer, main, schedule, select_questions
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.processes import FEEDBACK_TOKEN, metric_value, start_predictor


@pytest.fixture(scope="module")
def questions(tagwatch_settings: TagwatchSettings) -> pd.DataFrame:
    return load_questions(tagwatch_settings.titles_path)


def test_schedule_compresses_time_caps_gaps_and_applies_rate() -> None:
    t = pd.Series(
        pd.to_datetime(
            ["2011-06-01 00:00", "2011-06-01 01:00", "2011-06-01 01:00", "2013-09-01 00:00"],
            utc=True,
        )
    )
    # one real hour per wall-clock second; the 2-year gap shrinks to max_gap
    assert schedule(t, speed=3600, max_gap=5).tolist() == [0.0, 1.0, 1.0, 6.0]
    # a rate of 4/s spaces equal timestamps by 0.25 s
    assert schedule(t, speed=3600, max_gap=5, rate=4).tolist() == [0.0, 1.0, 1.25, 6.25]
    # speed 0: as fast as the rate allows
    np.testing.assert_allclose(schedule(t, speed=0, max_gap=5, rate=10), [0, 0.1, 0.2, 0.3])
    assert schedule(t.iloc[:0], speed=1, max_gap=1).size == 0


def test_select_questions_on_real_data(questions: pd.DataFrame) -> None:
    since, until = pd.Timestamp("2019-01-01", tz="UTC"), pd.Timestamp("2020-01-01", tz="UTC")
    picked = select_questions(questions, since, until, every=10, limit=200)
    assert len(picked) == 200
    assert picked["created_at"].is_monotonic_increasing
    assert picked["created_at"].min() >= since
    assert picked["created_at"].max() < until
    all_2019 = select_questions(questions, since, until)
    assert picked["title"].tolist() == all_2019["title"].iloc[::10].iloc[:200].tolist()
    with pytest.raises(ValueError, match="every"):
        select_questions(questions, every=0)


def test_cli_names_the_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--since", "last tuesday-ish"])
    assert exc.value.code == 2
    assert "--since: not a date: 'last tuesday-ish'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--speed", "-3"])
    assert "--speed: must not be negative" in capsys.readouterr().err


def test_cli_fails_clearly_without_a_predictor(
    free_port: Callable[[], int], tagwatch_settings: TagwatchSettings
) -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.replay", "--url", f"http://127.0.0.1:{port}",
         "--limit", "3", "--wait-ready", "0.5", "--quiet"],
        capture_output=True, text=True, timeout=120,
        env={"TAGWATCH_DATA_DIR": str(tagwatch_settings.data_dir), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"predictor at http://127.0.0.1:{port} not ready after 0 s" in proc.stderr


@pytest.fixture(scope="module")
def replay_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay-predictor")


@pytest.fixture(scope="module")
def predictor_url(models_dir: Path, replay_work: Path) -> Iterator[str]:
    """Feedback needs the token, and a client address gets 5 requests a second: the replay
    (one address, 100/s) gets through only because it sends the token."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_predictor(
        models_dir, port, replay_work, TAGWATCH_FEEDBACK_AUTH="token",
        TAGWATCH_RATE_LIMIT_PER_SECOND="5", TAGWATCH_RATE_LIMIT_BURST="5",
    )  # fmt: skip
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def test_replay_sends_questions_in_order_and_feedback_after_the_delay(
    predictor_url: str, questions: pd.DataFrame
) -> None:
    early = select_questions(questions, pd.Timestamp("2011-10-01", tz="UTC"), limit=30)
    late = select_questions(questions, pd.Timestamp("2020-02-01", tz="UTC"), limit=30)
    picked = pd.concat([early, late], ignore_index=True)
    before = requests.get(f"{predictor_url}/metrics", timeout=5).text
    replayer = Replayer(
        ReplayConfig(url=predictor_url, speed=0, rate=100, feedback_delay=0.3, progress=False,
                     feedback_token=FEEDBACK_TOKEN)
    )  # fmt: skip
    replayer.wait_ready()
    summary = replayer.run(picked)

    assert summary.aborted is None
    assert (summary.questions, summary.predicted, summary.feedback_sent, summary.errors) == (
        60, 60, 60, 0,
    )  # fmt: skip
    assert summary.elapsed_seconds >= 59 / 100 + 0.3  # paced by the rate, then the last delay
    assert sorted(summary.jaccard_by_year) == [2011, 2020]
    assert all(len(v) == 30 for v in summary.jaccard_by_year.values())
    assert 0.0 <= summary.mean_jaccard <= 1.0
    assert 0.0 <= summary.mean_coverage <= 1.0
    assert "60 questions sent, 60 predicted, 60 feedback, 0 errors" in summary.format()

    def delta(text: str, name: str) -> float:
        return (metric_value(text, name) or 0) - (metric_value(before, name) or 0)

    names = ("tagwatch_predictions_total", "tagwatch_feedback_total")
    deadline = time.monotonic() + 5  # gunicorn workers apply their observations within ~1 s
    while True:
        after = requests.get(f"{predictor_url}/metrics", timeout=5).text
        if all(delta(after, n) == 60 for n in names) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for name in names:
        assert delta(after, name) == 60


def test_cli_replays_bodies_and_prints_the_summary(
    predictor_url: str, tagwatch_settings: TagwatchSettings, replay_work: Path
) -> None:
    argv = [sys.executable, "-m", "exporter.replay", "--url", predictor_url, "--source",
            "bodies", "--since", "2019-01-01", "--limit", "5", "--speed", "0",
            "--feedback-delay", "0", "--quiet"]  # fmt: skip
    env = {"TAGWATCH_DATA_DIR": str(tagwatch_settings.data_dir), "PATH": "/usr/bin:/bin"}
    # the token from TAGWATCH_FEEDBACK_TOKEN_FILE, as `make demo` runs it
    token_file = str(replay_work / "secrets" / "feedback_token")
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=120,
        env={**env, "TAGWATCH_FEEDBACK_TOKEN_FILE": token_file},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "5 questions sent, 5 predicted, 5 feedback, 0 errors" in proc.stdout
    assert "mean Jaccard seen" in proc.stdout
    # without it: every feedback refused (401), said in the summary
    proc = subprocess.run(
        [*argv, "--rate", "2"], capture_output=True, text=True, timeout=120, env=env
    )  # fmt: skip
    assert "5 predicted, 0 feedback, 5 errors" in proc.stdout, proc.stdout + proc.stderr
    assert "HTTP 401" in proc.stderr
    bad = subprocess.run(
        [*argv, "--feedback-token-file", "/nonexistent"], capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and "--feedback-token-file: cannot read /nonexistent" in bad.stderr
