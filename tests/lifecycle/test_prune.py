"""Bounded artefacts (lifecycle/prune.py): after each retrain, only the champion, the previous
champion, what models/LATEST names and the newest N other versions keep their model files, in
``models/`` and in MLflow's artefact store; the others are archived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lifecycle.prune import PRUNED_TAG, dir_bytes, plan
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import RetrainEnv, fill_store
from tests.lifecycle.test_retrain import late_2011
from tests.processes import REPO_ROOT


def test_plan_keeps_champion_previous_latest_and_the_newest() -> None:
    p = plan(list(range(1, 11)), champion=7, previous=3, latest=1, keep_challengers=2)
    assert p.keep == {7: "champion", 3: "previous champion", 1: "named by models/LATEST",
                      10: "one of the 2 newest", 9: "one of the 2 newest"}  # fmt: skip
    assert p.prune == [2, 4, 5, 6, 8]
    # the same version in several roles is kept once; nothing registered: nothing to do
    p = plan([1, 2, 3], champion=3, previous=3, latest=3, keep_challengers=0)
    assert p.keep == {3: "champion"} and p.prune == [1, 2]
    assert plan([], None, None, None, 3) == plan([], 1, 2, 3, 3)
    assert plan([1, 2], champion=None, previous=None, latest=None, keep_challengers=5).prune == []


def footprint(rt: RetrainEnv) -> dict[str, int]:
    """Model folders and bytes in models/ and in MLflow's artefact store."""
    models, artifacts = rt.settings.models_dir, Path(rt.settings.mlflow_artifacts_dir)
    model_dirs = [d for d in models.iterdir() if d.is_dir() and not d.name.startswith(".")]
    logged = [d for d in artifacts.rglob("models/m-*") if any(d.rglob("*.pkl"))]
    return {
        "models_dirs": len(model_dirs),
        "models_bytes": dir_bytes(models),
        "mlflow_models": len(logged),
        "mlflow_bytes": dir_bytes(artifacts),
    }


def mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def test_ten_retrains_leave_bounded_artefacts(
    champion_2011: RetrainEnv, tagwatch_settings: TagwatchSettings
) -> None:
    from lifecycle.registry import Registry
    from lifecycle.retrain import retrain
    from tagger.artefact import load_artefact, read_pointer

    rt = champion_2011
    fill_store(rt.settings.store_url, rt.settings.models_dir / "test",
               late_2011(tagwatch_settings, 1200), time.time() - 86400)  # fmt: skip
    keep = 2
    settings = rt.settings.model_copy(
        update={"retrain_min_interval_minutes": 0.0, "keep_challengers": keep, "retrain_k": 20}
    )
    registry = Registry(settings)
    sizes = [footprint(rt)]
    outcomes = []
    t0 = time.monotonic()
    for i in range(10):
        # the gate never promotes here (promote=False): the promotions are the two below
        out = retrain(settings, promote=False, source=f"test {i + 1}")
        assert out.outcome != "failed" and out.challenger_version is not None, out.line()
        outcomes.append(out.outcome)
        if i in (2, 5):  # two promotions: a champion and a previous champion to keep
            registry.promote(out.challenger_version, "test: a promotion to keep", "pytest")
        sizes.append(footprint(rt))
    seconds = time.monotonic() - t0

    # the first retrain pruned nothing (2 versions): what each retrain adds
    per_retrain = {k: sizes[1][k] - sizes[0][k] for k in ("models_bytes", "mlflow_bytes")}
    print(f"10 retrains in {seconds:.0f} s ({', '.join(outcomes)})")
    print(f"one retrain adds {mb(per_retrain['models_bytes'])} to models/ and "
          f"{mb(per_retrain['mlflow_bytes'])} to MLflow's artefacts")  # fmt: skip
    for i, s in enumerate(sizes):
        print(f"  after {i:2d} retrains: models/ {s['models_dirs']} folders {mb(s['models_bytes'])}"
              f"; MLflow {s['mlflow_models']} models {mb(s['mlflow_bytes'])}")  # fmt: skip
    unbounded = {k: sizes[0][k] + 10 * per_retrain[k] for k in per_retrain}
    print(f"without pruning: models/ {mb(unbounded['models_bytes'])}, MLflow "
          f"{mb(unbounded['mlflow_bytes'])}; pruned: {mb(sizes[-1]['models_bytes'])}, "
          f"{mb(sizes[-1]['mlflow_bytes'])}")  # fmt: skip

    versions = registry.versions()
    assert len(versions) == 11  # every retrain registered its challenger
    champion = registry.champion()
    assert champion is not None and champion.version == 7  # promoted after retrain 6 (v7)
    kept = {1, 4, 7, 10, 11}  # LATEST (v1: "test"), previous champion, champion, 2 newest
    assert read_pointer(settings.models_dir) == "test"
    for ref in versions:
        folder = settings.models_dir / ref.artefact_version
        if ref.version in kept:
            assert PRUNED_TAG not in ref.tags, ref
            if ref.version != 1:  # v1's folder is the "test" model LATEST names
                load_artefact(folder.parent, folder.name)  # still loads
        else:
            assert not folder.exists(), folder
            assert PRUNED_TAG in ref.tags and "pruned_reason" in ref.tags
            mv = registry.client.get_model_version(registry.name, str(ref.version))
            assert mv.current_stage == "Archived"
    # bounded: at most champion, previous, LATEST and `keep` newest, whatever the count
    end = sizes[-1]
    assert end["mlflow_models"] <= 3 + keep and end["models_dirs"] <= 3 + keep
    assert (
        end["models_bytes"]
        <= sizes[0]["models_bytes"] + (2 + keep) * per_retrain["models_bytes"] * 1.5
    )
    assert (
        end["mlflow_bytes"]
        <= sizes[0]["mlflow_bytes"] + (2 + keep) * per_retrain["mlflow_bytes"] * 1.5
    )

    # `python -m lifecycle prune` by hand: no newest kept now
    result = subprocess.run(
        [sys.executable, "-m", "lifecycle", "prune", "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=180,
        env={**os.environ, **rt.env, "TAGWATCH_KEEP_CHALLENGERS": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[0])
    assert report["pruned"] == [10, 11] and set(report["kept"]) == {"1", "4", "7"}
    print(result.stdout.splitlines()[-1])
    assert footprint(rt)["mlflow_models"] <= 3
