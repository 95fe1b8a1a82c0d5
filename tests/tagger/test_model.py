"""The trained default model: fast path equals the pipeline, decision rule, card, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagger.artefact import ArtefactError, load_artefact, load_baseline, load_per_tag, read_card
from tagger.columns import FEATURE_COLUMNS, NO_TAG
from tagger.data import DataError, load_questions, questions_of
from tagger.metrics import normalize_tags
from tagger.model import DecisionRule
from tagger.settings import TagwatchSettings
from tagger.tagquality import PER_TAG_COLUMNS
from tagger.text import clean_question
from tagger.train import DEFAULT_CUTOFF, main, split_by_time, top_k_tags


@pytest.fixture(scope="module")
def validation(tagwatch_settings: TagwatchSettings) -> pd.DataFrame:
    df = load_questions(tagwatch_settings.titles_path)
    return split_by_time(df, DEFAULT_CUTOFF, 0.15, None).validation


def test_fast_path_equals_sklearn_pipeline(models_dir: Path, validation: pd.DataFrame) -> None:
    model = load_artefact(models_dir).model
    questions = questions_of(validation)
    reference = model.predict_proba_pipeline(questions)
    fast = np.array([model.fast.score(clean_question(t, b).tokens)[0] for t, b in questions])
    assert fast.shape == reference.shape == (len(validation), 100)
    assert np.max(np.abs(fast - reference)) <= 1e-9


def test_fast_path_equals_pipeline_with_bodies(
    models_dir: Path, tagwatch_settings: TagwatchSettings
) -> None:
    bodies = pd.read_csv(tagwatch_settings.bodies_path, nrows=300).fillna("")
    model = load_artefact(models_dir).model
    questions = list(zip(bodies["title"], bodies["body"], strict=True))
    reference = model.predict_proba_pipeline(questions)
    fast = np.array([model.fast.score(clean_question(t, b).tokens)[0] for t, b in questions])
    assert np.max(np.abs(fast - reference)) <= 1e-9


def test_decision_rule_bounds() -> None:
    rule = DecisionRule(threshold=0.5)
    scores = np.array([0.1, 0.9, 0.6, 0.55, 0.7, 0.8, 0.95])
    assert list(rule.select(scores, n_known=3)) == [6, 1, 5, 4, 2]  # at most 5
    assert list(rule.select(np.array([0.1, 0.3, 0.2]), n_known=1)) == [1]  # at least 1
    assert list(rule.select(scores, n_known=0)) == []  # nothing known: no tag


def test_analyse_features(models_dir: Path) -> None:
    model = load_artefact(models_dir).model
    a = model.analyse("Python: read CSV with pandas", "<p>x</p><pre>code</pre>")
    assert set(a.features) == set(FEATURE_COLUMNS)
    assert a.features["n_code_blocks"] == 1
    assert a.features["top_tag"] == a.tags[0]
    assert a.features["n_predicted_tags"] == len(a.tags)
    assert 0 <= a.features["oov_ratio"] < 1
    assert a.features["max_score"] == pytest.approx(max(a.scores.values()), abs=1e-6)
    empty = model.analyse("¿¿¿ ???")
    assert empty.tags == [] and empty.features["top_tag"] == NO_TAG
    assert empty.features["oov_ratio"] == 1.0


def test_model_card_documents_decay(models_dir: Path) -> None:
    card = read_card(models_dir / "test")
    assert card["k"] == 100 and len(card["tags"]) == 100
    assert card["rows"]["train"] + card["rows"]["validation"] == 26329  # 2008–2011 rows with tags
    assert card["training_period"]["end"] < "2012-01-01"
    assert 1 <= card["decision_rule"]["min_tags"] <= card["decision_rule"]["max_tags"] == 5
    periods = {p["period"]: p for p in card["periods"]}
    assert set(periods) >= {"validation 2011", "2013", "2016", "2019", "2020"}
    assert 0.17 < periods["validation 2011"]["jaccard"] < 0.22
    assert periods["2019"]["jaccard"] < periods["validation 2011"]["jaccard"] - 0.05
    assert periods["2020"]["unknown_tag_ratio"] > periods["validation 2011"]["unknown_tag_ratio"]
    assert len(card["data"]["sha256"]) == 64
    assert card["training_seconds"] < 120


def test_baseline_is_held_out(models_dir: Path, validation: pd.DataFrame) -> None:
    baseline = load_baseline(models_dir / "test")
    card = read_card(models_dir / "test")
    assert len(baseline) == card["rows"]["baseline"] == len(validation.iloc[0::2])
    assert baseline["created_at"].min() >= validation["created_at"].min()
    assert list(baseline.columns) == ["created_at", *FEATURE_COLUMNS, "title", "url"]
    # the text judgement's baseline: the same questions' titles, with their links
    assert baseline["title"].tolist() == validation.iloc[0::2]["title"].tolist()
    assert baseline["url"].str.startswith("https://stackoverflow.com/").all()


def test_artefact_carries_per_tag_baseline(models_dir: Path, validation: pd.DataFrame) -> None:
    """The per-tag table of the validation slice: every model tag, counts that add up to the
    slice's tags, and ratios that follow from the counts."""
    table = load_per_tag(models_dir / "test")
    card = read_card(models_dir / "test")
    assert table is not None and tuple(table.columns) == PER_TAG_COLUMNS
    assert table["tag"].tolist() == card["tags"]
    vocab = set(card["tags"])
    given = sum(len(normalize_tags(t) & vocab) for t in validation["tags"])
    assert int((table["tp"] + table["fn"]).sum()) == given  # every given vocabulary tag once
    assert (table["support"] == table["tp"] + table["fp"] + table["fn"]).all()
    f1 = 2 * table["tp"] / (2 * table["tp"] + table["fp"] + table["fn"])
    assert np.allclose(table["f1"], f1.fillna(0.0), atol=1e-4)
    python = table.set_index("tag").loc["python"]
    assert python["support"] > 100 and 0.3 < python["f1"] < 1.0


def test_top_k_is_deterministic() -> None:
    tags = [["b", "a"], ["a"], ["c", "b"], ["d"]]
    assert top_k_tags(tags, 2) == ["a", "b"]
    assert top_k_tags(tags, 10) == ["a", "b", "c", "d"]


def test_artefact_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="no model trained yet"):
        load_artefact(tmp_path)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "model.joblib").write_bytes(b"not a pickle")
    (tmp_path / "LATEST").write_text("v1\n")
    with pytest.raises(ArtefactError, match=r"v1/model.joblib: cannot load model"):
        load_artefact(tmp_path)
    (tmp_path / "v1" / "baseline.csv").write_text("created_at,title_chars\n2011-01-01,3\n")
    with pytest.raises(ArtefactError, match=r"baseline.csv: baseline lacks column"):
        load_baseline(tmp_path / "v1")


def test_train_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = TagwatchSettings(data_dir=tmp_path)
    assert main(["--data", str(tmp_path / "missing.csv"), "--quiet"], settings) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("title,created_at\nx,2010-01-01\n")
    assert main(["--data", str(bad), "--quiet"], settings) == 2
    assert "missing column(s) tags" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--cutoff", "not-a-date"], settings)
    assert "--cutoff" in capsys.readouterr().err


def test_train_cli_small_model(tmp_path: Path, tagwatch_settings: TagwatchSettings) -> None:
    """The CLI end to end on a subset: an MLflow run, version 1 registered and made champion
    (there was none), its artefact fetched into the models folder and LATEST pointing at it."""
    settings = tagwatch_settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "mlflow_artifacts_dir": tmp_path / "artifacts",
        }
    )
    args = ["--output", str(tmp_path / "models"), "--k", "20", "--max-train-rows", "3000"]
    assert main([*args, "--version", "small", "--quiet"], settings) == 0
    art = load_artefact(tmp_path / "models")
    assert art.version == "small" and len(art.model.classes) == 20
    card = json.loads((tmp_path / "models" / "small" / "model_card.json").read_text())
    assert card["rows"]["train"] == 3000

    import mlflow
    from mlflow import MlflowClient

    from lifecycle.registry import Registry

    registry = Registry(settings)
    champion = registry.champion()
    assert champion is not None and champion.version == 1
    assert champion.artefact_version == "small"
    run = MlflowClient().get_run(champion.run_id)
    assert run.data.params["k"] == "20" and run.data.params["C"] == "4.0"
    assert "decision_threshold" in run.data.params and "cutoff" in run.data.params
    assert abs(run.data.metrics["validation_jaccard"] - card["validation"]["jaccard"]) < 1e-9
    assert "2019/jaccard" in run.data.metrics
    assert len(run.data.tags["data_sha256"]) == 64 and run.data.tags["git_commit"]
    names = {a.path for a in MlflowClient().list_artifacts(champion.run_id)}
    assert {"model_card.json", "baseline.csv", "per_tag_metrics.csv"} <= names
    per_tag = load_per_tag(tmp_path / "models" / "small")  # the artefact's own (validation)
    assert per_tag is not None and per_tag["tag"].tolist() == card["tags"]
    model = mlflow.pyfunc.load_model(f"models:/{settings.registered_model}/1")
    assert model.metadata.signature is not None
    out = model.predict(pd.DataFrame({"title": ["How to sort a list in python"], "body": [""]}))
    assert "python" in out["tags"].iloc[0].split()

    # a second training registers version 2 without taking the champion's place
    assert main([*args, "--version", "second", "--quiet"], settings) == 0
    assert registry.champion().version == 1  # type: ignore[union-attr]
    assert load_artefact(tmp_path / "models").version == "small"
    assert [v.version for v in registry.versions()] == [1, 2]


def test_load_questions_drops_unusable_rows(tmp_path: Path) -> None:
    f = tmp_path / "q.csv"
    f.write_text(
        "title,tags,created_at\nok,python,2010-01-01T00:00:00Z\n,java,2010-01-02T00:00:00Z\n"
        "no tags,,2010-01-03T00:00:00Z\nbad date,c#,yesterday\n"
    )
    df = load_questions(f)
    assert df["title"].tolist() == ["ok"] and df.attrs["dropped"] == 3
    with pytest.raises(DataError):
        load_questions(tmp_path / "nope.csv")
