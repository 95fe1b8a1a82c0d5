"""Retrain benchmark: ``lifecycle.retrain`` on ~15,000 labelled questions from a real store.

    python -m benchmarks.lifecycle_retrain [--rows 15000]

A temporary SQLite store receives the latest real questions (2011 → 2020) served by a champion
(the 2008–2011 model on 4,000 training questions: quick to build) with their real tags as
feedback; a SQLite-backed MLflow holds the champion. Measured: the whole retrain (store read,
fit, tune, score champion and challenger, MLflow run + registration, gate, promotion).
``bench_retrain`` is also what ``benchmarks/lifecycle.py`` reports.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def bench_retrain(rows: int = 15000) -> dict[str, Any]:
    from lifecycle.registry import Registry
    from lifecycle.retrain import retrain
    from lifecycle.settings import LifecycleSettings
    from tagger.data import load_questions
    from tagger.tracking import log_training
    from tagger.train import TrainConfig, fit_artefact, split_by_time, write_result
    from tests.lifecycle.conftest import fill_store

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = (REPO / LifecycleSettings().data_dir).resolve()
        settings = LifecycleSettings(
            data_dir=data_dir,
            models_dir=root / "models",
            store_url=f"sqlite:///{root / 'store.sqlite3'}",
            mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            mlflow_artifacts_dir=root / "artifacts",
        )
        df = load_questions(settings.titles_path)
        config = TrainConfig(
            data_path=settings.titles_path,
            output_dir=settings.models_dir,
            max_train_rows=4000,
            version="bench-champion",
            progress=False,
        )
        split = split_by_time(df, config.cutoff, config.validation_share, 4000)
        champion = write_result(
            fit_artefact(split.train, split.validation, config), config.output_dir
        )
        registered = log_training(settings, champion, run_name="bench champion")
        Registry(settings).promote(registered.version, "benchmark", "bench")
        questions = df.tail(rows)
        fill_store(settings.store_url, champion, questions, time.time() - 80 * 86400, 400.0)
        t0 = time.perf_counter()
        out = retrain(settings)
        seconds = time.perf_counter() - t0
        return {
            "rows": len(questions),
            "seconds": seconds,
            "outcome": out.outcome,
            "line": out.line(),
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=15000)
    a = p.parse_args()
    r = bench_retrain(a.rows)
    print(
        f"| retrain on {r['rows']:,} labelled questions | {r['seconds']:.1f} s | {r['outcome']} |"
    )
    print(r["line"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
