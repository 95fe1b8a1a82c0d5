"""Benchmark of the drift job: ``python -m benchmarks.drift [--rows 1000000] [--days 30]``.

Run it as a module from the repository root (``python benchmarks/drift.py`` would make this
file shadow the ``drift`` package).

Fills a SQLite store with synthetic predictions (features drawn to resemble the real ones:
short titles, HTML bodies, a Zipf-like top tag; the titles are real ones, 2019-2020 questions,
so the text judgement of drift/text.py has real words to read against a real model's 2011
baseline titles), then measures (time of the phase only, after
imports; peak RSS of the interpreter during the phase; median of ``--repeat`` runs):

- cold: the job's full run (no saved histograms): read the window, count, judge, report;
- incremental: the next day (one new day of rows) with the saved histograms, in the same
  interpreter right after the cold run, as the long-running scheduler does;
- bare popmon: ``df.pm_stability_report`` on the same feature table already in memory;
- Evidently ``DataDriftPreset`` on the same table (if ``evidently`` is importable: the
  optional ``bench`` extra).

Targets: cold <= 1.5 x bare popmon; incremental day <= 0.2 x cold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import queue
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tagger.columns import FEATURE_COLUMNS

FEATURES = list(FEATURE_COLUMNS)
TAGS = [
    "c#", ".net", "java", "javascript", "asp.net", "jquery", "c++", "ruby-on-rails", "python",
    "asp.net-mvc", "html", "iphone", "sql", "sql-server", "windows", "php", "wcf", "git",
    "ruby", "css", "wpf", "macos", "android", "oracle", "linux", "mysql", "django", "xml",
    "objective-c", "regex", "silverlight", "c", "visual-studio", "ajax", "json", "linq",
]  # fmt: skip
DAY0 = pd.Timestamp("2026-01-01", tz="UTC")


def synthetic(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Features with the shapes measured on real questions (values are illustrative)."""
    title = np.clip(rng.lognormal(np.log(55), 0.35, n), 10, 150).astype(int)
    has_body = rng.random(n) < 0.8
    body = np.where(has_body, np.clip(rng.lognormal(np.log(640), 0.9, n), 20, 30000), 0)
    code = np.where(has_body, rng.poisson(0.9, n), 0)
    links = np.where(has_body, rng.poisson(0.3, n), 0)
    tokens = np.maximum(1, (title / 6 + body / 9 * rng.uniform(0.6, 1.0, n)).astype(int))
    oov = np.round(rng.beta(1.2, 12, n), 6)
    n_tags = rng.choice([0, 1, 2, 3, 4, 5], n, p=[0.002, 0.55, 0.25, 0.12, 0.05, 0.028])
    score = np.round(rng.beta(4, 3, n), 6)
    weights = 1 / np.arange(1, len(TAGS) + 1) ** 1.1
    top = rng.choice(TAGS, n, p=weights / weights.sum())
    top = np.where(n_tags == 0, "(none)", top)
    return pd.DataFrame(
        {
            "title_chars": title,
            "body_chars": body.astype(int),
            "n_code_blocks": code,
            "n_links": links,
            "n_tokens": tokens,
            "oov_ratio": oov,
            "n_predicted_tags": n_tags,
            "max_score": score,
            "top_tag": top,
        }
    )


def real_titles() -> tuple[list[str], list[str]]:
    """(titles, urls) of the real 2019-2020 questions: the text of the synthetic rows."""
    from tagger.data import load_questions
    from tagger.settings import TagwatchSettings

    df = load_questions(TagwatchSettings().titles_path)
    late = df.loc[df["created_at"] >= pd.Timestamp("2019-01-01", tz="UTC")]
    return late["title"].tolist(), late["url"].fillna("").tolist()


def fill_store(store: Any, df: pd.DataFrame, start: pd.Timestamp, days: int, seq0: int) -> None:
    from store import PredictionRecord

    titles, urls = real_titles()
    n = len(df)
    created = start.timestamp() + np.sort(np.random.default_rng(seq0).uniform(0, days * 86400, n))
    records = []
    cols = {c: df[c].tolist() for c in FEATURES}
    for i in range(n):
        feats = {c: cols[c][i] for c in FEATURES}
        records.append(
            PredictionRecord(
                id=f"b{seq0 + i}",
                created_at=float(created[i]),
                title=titles[(seq0 + i) % len(titles)],
                body="",
                url=urls[(seq0 + i) % len(urls)] or None,
                tags=[feats["top_tag"]],
                scores={feats["top_tag"]: feats["max_score"]},
                inference_seconds=0.0004,
                model_version="bench",
                features=feats,
            )
        )
        if len(records) == 100_000:
            store.save_predictions(records)
            records = []
    store.save_predictions(records)


def make_artefact(models_dir: Path, rng: np.random.Generator) -> None:
    """A real model (trained on 6,000 of the 2008-2011 questions: its vocabulary names the
    out-of-vocabulary words) with a synthetic feature baseline and its real baseline titles."""
    from tagger.settings import TagwatchSettings
    from tagger.train import TrainConfig, train

    settings = TagwatchSettings()
    config = TrainConfig(data_path=settings.titles_path, output_dir=models_dir, k=36,
                         max_train_rows=6000, version="bench", progress=False)  # fmt: skip
    out = train(config)
    real = pd.read_csv(out / "baseline.csv")
    base = synthetic(len(real), rng)
    base.insert(0, "created_at", pd.Timestamp("2011-10-01", tz="UTC"))
    base["title"], base["url"] = real["title"], real["url"]
    base.to_csv(out / "baseline.csv", index=False)
    card = json.loads((out / "model_card.json").read_text())
    card["tags"] = TAGS  # the synthetic rows' top tags
    (out / "model_card.json").write_text(json.dumps(card))


def _status_mb(field: str) -> float:
    """VmRSS / VmHWM of this process (VmHWM restarts at exec, unlike ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Restart VmHWM (Linux >= 4.0) so the next phase's peak is its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _phase(work: str, args: dict[str, Any], out: Any) -> None:
    """Runs in a fresh interpreter: imports first, then the timed phase(s).

    ``job``: a cold run, then the incremental run of the next day in the same process, as the
    long-running scheduler does (its first tick is cold, the next ones incremental).
    """
    import logging
    import os
    import warnings

    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=logging.WARNING, force=True)
    import popmon  # noqa: F401  (import cost is not part of any phase)

    warnings.filterwarnings("ignore", message="time-axis")
    from prometheus_client import CollectorRegistry

    from drift.job import run_once
    from drift.metrics import DriftMetrics
    from drift.settings import DriftSettings
    from store import SQLiteStore

    settings = DriftSettings(**args["settings"])
    store = SQLiteStore(Path(args["store"]))
    results: list[dict[str, Any]] = []

    def measure(name: str, fn: Any) -> None:
        _reset_peak()
        rss0 = _status_mb("VmRSS")
        t0 = time.perf_counter()
        extra = fn()
        seconds = time.perf_counter() - t0
        peak = _status_mb("VmHWM")
        results.append(
            {"name": name, "seconds": seconds, "peak_mb": peak, "phase_mb": peak - rss0, **extra}
        )

    if work == "job":
        shutil.rmtree(settings.state_dir, ignore_errors=True)
        metrics = DriftMetrics(CollectorRegistry())

        def job(now: str) -> dict[str, Any]:
            result = run_once(settings, metrics, store, pd.Timestamp(now))
            assert result.ok and result.report_path is not None, result.error
            size = result.report_path.stat().st_size
            return {"rows": result.new_rows, "report_kb": round(size / 1024)}

        measure("drift job, cold (30 days)", lambda: job(args["now"]))
        measure("drift job, incremental day", lambda: job(args["later"]))
    else:
        # the cold run's table: the first ``days`` days (not the incremental day)
        table = store.features(0, args["cold_end"])[["created_at", *FEATURES]]
        table["created_at"] = table["created_at"].dt.tz_localize(None)
        ref = pd.read_csv(Path(args["models"]) / "bench" / "baseline.csv")
        ref["created_at"] = pd.Timestamp("2026-01-01")

    def bare_popmon() -> dict[str, Any]:
        report = table.pm_stability_report(
            time_axis="created_at", time_width="1D", features=FEATURES, reference=ref
        )
        return {"rows": len(table), "report_kb": round(len(report.to_html()) / 1024)}

    def evidently_preset() -> dict[str, Any]:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        dd = DataDefinition(
            numerical_columns=[f for f in FEATURES if f != "top_tag"],
            categorical_columns=["top_tag"],
        )
        cur = Dataset.from_pandas(table[FEATURES], data_definition=dd)
        reference = Dataset.from_pandas(ref[FEATURES], data_definition=dd)
        snapshot = Report([DataDriftPreset()]).run(cur, reference)
        path = Path(args["settings"]["reports_dir"]) / "evidently.html"
        snapshot.save_html(str(path))
        return {"rows": len(table), "report_kb": round(path.stat().st_size / 1024)}

    if work == "popmon":
        measure("bare popmon (in memory)", bare_popmon)
    elif work == "evidently":
        import evidently  # noqa: F401

        measure("Evidently DataDriftPreset", evidently_preset)
    out.put(results)


def run_phase(work: str, args: dict[str, Any], repeat: int = 1) -> list[dict[str, Any]]:
    """Per measured phase, the median of ``repeat`` runs (by time), each in a fresh interpreter."""
    runs = [_run_phase(work, args) for _ in range(repeat)]
    out = []
    for i in range(len(runs[0])):
        ordered = sorted((r[i] for r in runs), key=lambda r: r["seconds"])
        out.append(ordered[len(ordered) // 2])
    return out


def _run_phase(work: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_phase, args=(work, args, q))
    p.start()
    while True:
        try:
            res: list[dict[str, Any]] = q.get(timeout=1)
            break
        except queue.Empty:
            if not p.is_alive():
                msg = f"benchmark phase {work!r} failed (exit code {p.exitcode})"
                raise SystemExit(msg) from None
    p.join()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="runs per phase (median is shown)")
    ap.add_argument("--skip-evidently", action="store_true")
    a = ap.parse_args()
    if not hasattr(__import__("drift"), "__path__"):
        raise SystemExit("run as a module from the repository root: python -m benchmarks.drift")
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="drift-bench-") as tmp:
        root = Path(tmp)
        make_artefact(root / "models", rng)
        from store import SQLiteStore

        store = SQLiteStore(root / "store.sqlite3")
        t0 = time.perf_counter()
        fill_store(store, synthetic(a.rows, rng), DAY0, a.days, 0)
        print(
            f"filled {a.rows:,} predictions over {a.days} days in {time.perf_counter() - t0:.1f} s"
        )
        settings = {
            "models_dir": str(root / "models"),
            "store_url": f"sqlite:///{root / 'store.sqlite3'}",
            "reports_dir": str(root / "reports"),
            "state_dir": str(root / "state"),
            "window_days": a.days + 1,
        }
        common = {
            "settings": settings,
            "store": str(root / "store.sqlite3"),
            "models": str(root / "models"),
            "cold_end": (DAY0 + pd.Timedelta(days=a.days)).timestamp(),
        }
        now = DAY0 + pd.Timedelta(days=a.days, hours=1)
        later = now + pd.Timedelta(days=1)
        # the next day is already stored: the cold run does not read it (its current, partial
        # bin); the incremental run a day later reads only it (seq > the last seen)
        per_day = a.rows // a.days
        fill_store(store, synthetic(per_day, rng), DAY0 + pd.Timedelta(days=a.days), 1, a.rows)
        n = a.repeat
        times = {"now": str(now), "later": str(later)}
        # the job without the text judgement (as before issue 16), then with it (the default)
        plain = {**common, **times, "settings": {**settings, "text_enabled": False}}
        rows = run_phase("job", plain, n)
        for r in rows:
            r["name"] = r["name"].replace("drift job", "job, no text")
        rows += run_phase("job", {**common, **times}, n)
        rows += run_phase("popmon", common, n)
        try:
            import evidently  # noqa: F401

            have_evidently = not a.skip_evidently
        except ImportError:
            have_evidently = False
        if have_evidently:
            rows += run_phase("evidently", common, n)
        store.close()

    head = f"{'phase':<30}{'rows':>10}{'seconds':>9}{'peak RSS MB':>13}{'of which phase':>16}"
    print(f"\n{head}{'report kB':>11}")
    for r in rows:
        print(
            f"{r['name']:<30}{r['rows']:>10,}{r['seconds']:>9.1f}{r['peak_mb']:>13.0f}"
            f"{r['phase_mb']:>16.0f}{r['report_kb']:>11,}"
        )
    plain_cold = rows[0]["seconds"]
    cold, incr, bare = rows[2]["seconds"], rows[3]["seconds"], rows[4]["seconds"]
    print(f"\ncold / bare popmon = {cold / bare:.2f} (target <= 1.5)")
    print(f"incremental / cold = {incr / cold:.2f} (target <= 0.2)")
    print(f"with text: cold / cold without text = {cold / plain_cold:.2f} (target <= 1.5), "
          f"incremental day {incr:.1f} s (target <= 5 s)")  # fmt: skip
    if not have_evidently:
        print("Evidently skipped (--skip-evidently, or not installed: pip install '.[bench]')")


if __name__ == "__main__":
    main()
