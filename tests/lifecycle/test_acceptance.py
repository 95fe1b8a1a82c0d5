"""Acceptance, on real data through the real processes: feedback closes the loop.

The 2008–2011 champion serves 2019 and 2020 questions (every other one, in time order) through
the real predictor with their real tags as feedback (``exporter.replay``); ``python -m lifecycle
retrain`` trains a challenger on that feedback, the gate promotes it, the predictor swaps to it
without a restart, and on the questions that follow (the latest 2020 questions, never trained
on) the Jaccard seen through the predictor rises against the 2011 champion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pandas as pd
import pytest
import requests

from exporter.replay import ReplayConfig, Replayer
from tagger.artefact import load_artefact
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tagger.train import evaluate
from tests.lifecycle.conftest import RetrainEnv, serving_env
from tests.processes import REPO_ROOT, start_predictor, wait_until

FOLLOWING_SHARE = 0.15  # the latest 15 % of the 2019–2020 questions: after the retrain
EVERY = 2  # every other question (~5,700 replayed, ~1,000 following): about 2 minutes


def recent_questions(settings: TagwatchSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = load_questions(settings.titles_path)
    recent = df.loc[df["created_at"] >= pd.Timestamp("2019-01-01", tz="UTC")]
    cut = round(len(recent) * (1 - FOLLOWING_SHARE))
    return recent.iloc[:cut:EVERY], recent.iloc[cut::EVERY]


def replay(url: str, questions: pd.DataFrame) -> float:
    config = ReplayConfig(url=url, speed=0.0, max_gap=0.0, feedback_delay=0.0, progress=False)
    summary = Replayer(config).run(questions)
    assert summary.errors == 0 and summary.feedback_sent == len(questions), summary.format()
    return summary.mean_jaccard


@pytest.mark.slow
def test_retraining_on_feedback_raises_jaccard_on_the_following_questions(
    champion_2011: RetrainEnv,
    tagwatch_settings: TagwatchSettings,
    free_port: Callable[[], int],
) -> None:
    rt = champion_2011
    t0 = time.monotonic()
    labelled, following = recent_questions(tagwatch_settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    predictor = start_predictor(
        rt.settings.models_dir,
        port,
        rt.root,
        store_path=rt.root / "store.sqlite3",
        **serving_env(rt.settings, poll_seconds=1.0),
    )
    try:
        served_before = replay(url, labelled)
        result = subprocess.run(
            [sys.executable, "-m", "lifecycle", "retrain", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, **rt.env},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outcome = json.loads(result.stdout.splitlines()[-2])
        line = result.stdout.splitlines()[-1]
        assert outcome["outcome"] == "promoted", line
        assert line.startswith("retrain promoted v2 over v1: Jaccard on the ")
        assert outcome["verdict"].startswith("data drift")
        # the line names what the challenger learnt: the 2019-2020 tags it adds
        added = outcome["vocabulary"].removeprefix("vocabulary: added ").split(";")[0]
        new_tags = {"python-3.x", "reactjs", "node.js", "angular", "pandas", "typescript"}
        assert len(new_tags & set(added.replace(",", " ").split())) >= 3, outcome["vocabulary"]
        assert outcome["vocabulary"] in line
        # honest feedback passes every trust check: sanity, the gain beyond noise, the anchor
        assert outcome["feedback"] and not any(c["failed"] for c in outcome["feedback"])
        assert outcome["gain"]["low"] > 0.01
        assert outcome["anchor"]["challenger"] >= outcome["anchor"]["floor"]

        from lifecycle.registry import Registry

        assert Registry(rt.settings).champion().version == 2  # type: ignore[union-attr]
        new_version = outcome["challenger_artefact"]

        def serves_challenger() -> bool:
            r = requests.post(f"{url}/predict", json={"title": "pandas dataframe"}, timeout=5)
            return bool(r.json()["model_version"] == new_version)

        swap_t0 = time.monotonic()
        wait_until(predictor, serves_challenger, "the predictor to serve the challenger", 90)
        swap_seconds = time.monotonic() - swap_t0
        served_after = replay(url, following)
    finally:
        predictor.stop()

    champion = load_artefact(rt.settings.models_dir, "test").model
    before = evaluate(champion, following, set(champion.classes))
    challenger_artefact = load_artefact(rt.settings.models_dir, new_version)
    challenger = challenger_artefact.model
    after = evaluate(challenger, following, set(challenger.classes))
    # trained_until is the newest question it learnt from, and it carries the pinned canary set
    card = challenger_artefact.card
    assert card["training_period"]["cutoff"][:4] == time.strftime("%Y", time.gmtime())
    assert card["canary"]["inherited"] and card["canary"]["rows"] == 500
    print(
        f"\nacceptance: replayed {len(labelled)} labelled questions (2019 - Feb 2020, served "
        f"Jaccard {served_before:.3f}); {line}\n"
        f"swap seen by clients after {swap_seconds:.1f} s; following {len(following)} questions "
        f"(latest 2020): Jaccard 2011 champion {before['jaccard']:.3f} -> served by the "
        f"challenger {served_after:.3f} (offline {after['jaccard']:.3f}); coverage "
        f"{before['coverage']:.3f} -> {after['coverage']:.3f}; {time.monotonic() - t0:.0f} s\n"
        f"gate: gain {outcome['gain']}; anchor {outcome['anchor']}; feedback checks "
        + ", ".join(f"{c['check']} {c['value']:.3f}/{c['threshold']}" for c in outcome["feedback"])
    )
    assert abs(served_after - after["jaccard"]) < 0.005  # the predictor served the challenger
    assert served_after > before["jaccard"] + 0.05
    assert after["coverage"] > before["coverage"]
