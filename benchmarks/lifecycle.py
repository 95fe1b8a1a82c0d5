"""Model lifecycle benchmark: the zero-downtime swap and what MLflow would cost each worker.

    python -m benchmarks.lifecycle [--workers 2] [--threads 4] [--poll 1] [--quick]

(a) swap: two real models registered in a SQLite-backed MLflow (temporary folder), the real
    predictor (``python -m exporter serve``: supervisor + gunicorn + nginx when installed)
    following ``champion`` under load from concurrent clients on loopback; ``Registry.promote``
    moves the alias; measured: seconds from the promotion until every worker serves the new
    version (the supervisor polls every ``--poll`` s, default 60 s in production: add up to one
    interval), requests failed during the swap (target 0), latency during the swap;
(b) memory: RSS of a live gunicorn worker (MLflow kept out: the supervisor resolves the
    champion), the same worker code after ``import mlflow`` and one alias lookup (what each
    worker would cost if it resolved the champion itself), and the supervisor's RSS (paid
    once per predictor).
Prints a table. ``--quick``: small models (4,000 training questions) instead of the default
(2008–2011, all rows); the swap time includes loading the model in a new worker.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tagger.settings import TagwatchSettings
from tests.lifecycle.load import Load

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def train_two(data: Path, out: Path, quick: bool) -> list[Path]:
    """Two real models (K=100 and K=120) from the same data load."""
    from tagger.train import train_variants

    versions = train_variants(data, out, (100, 120), 4000 if quick else None, prefix="bench-k")
    return list(versions.values())


def served_versions(url: str) -> set[str]:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return set(re.findall(r'^tagwatch_model_info\{[^}]*version="([^"]*)"', text, re.M))


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def worker_pids(multiproc: Path) -> list[int]:
    pids = []
    for path in (multiproc / "workers").glob("*.json"):
        pid = int(json.loads(path.read_text())["pid"])
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


MLFLOW_WORKER = """
import json, os, sys, time
from exporter.app import create_app
from exporter.settings import PredictorSettings
settings = PredictorSettings(models_dir=sys.argv[1], store_enabled=False)
def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
app = create_app(settings)
before = rss()
t0 = time.perf_counter()
import mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[2])
mlflow.set_registry_uri(sys.argv[2])
MlflowClient().get_model_version_by_alias("tagwatch", "champion")
print(json.dumps({"before": before, "after": rss(), "seconds": time.perf_counter() - t0}))
"""


def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    from lifecycle.registry import Registry
    from tagger.tracking import log_training

    base = TagwatchSettings()
    data = base.titles_path if base.data_dir.is_absolute() else (REPO / base.titles_path)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="tagwatch-bench-lifecycle-") as tmp_:
        tmp = Path(tmp_)
        t0 = time.perf_counter()
        artefacts = train_two(data.resolve(), tmp / "artefacts", args.quick)
        print(f"trained 2 models in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        settings = TagwatchSettings(
            mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow' / 'mlflow.db'}",
            mlflow_artifacts_dir=tmp / "mlflow" / "artifacts",
        )
        versions = [log_training(settings, p, run_name=p.name) for p in artefacts]
        registry = Registry(settings)
        registry.promote(versions[0].version, reason="benchmark start", actor="benchmark")
        port = free_port()
        multiproc = tmp / "prometheus-multiproc"
        env = {
            **os.environ,
            "TAGWATCH_MODELS_DIR": str(tmp / "models"),
            "TAGWATCH_PORT": str(port),
            "TAGWATCH_WORKERS": str(args.workers),
            "TAGWATCH_STORE_URL": f"sqlite:///{tmp / 'store.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            "TAGWATCH_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
            "TAGWATCH_MLFLOW_ARTIFACTS_DIR": str(settings.mlflow_artifacts_dir),
            "TAGWATCH_MODEL_POLL_SECONDS": str(args.poll),
            "TAGWATCH_FOLLOW_REGISTRY": "true",
            "TAGWATCH_LOG_LEVEL": "WARNING",
            # the load comes from one address, faster than the per-client rate limit, and
            # sends no feedback: both are beside what this measures (the swap under load)
            "TAGWATCH_RATE_LIMIT_PER_SECOND": "0",
            "TAGWATCH_FEEDBACK_AUTH": "open",
        }
        log = open(tmp / "predictor.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            v2 = versions[1].artefact_version
            wait(lambda: requests.get(f"{url}/readyz", timeout=2).ok, 120, "predictor ready")
            wait(lambda: len(worker_pids(multiproc)) == args.workers, 60, "workers")
            time.sleep(1.0)
            pids = worker_pids(multiproc)
            worker_rss = [rss_mb(p) for p in pids]
            supervisor_rss = rss_mb(proc.pid)
            with Load(url, threads=args.threads, max_seconds=args.duration + 120) as load:
                time.sleep(args.duration / 2)
                registry.promote(versions[1].version, reason="benchmark swap", actor="benchmark")
                t_promoted = time.monotonic()
                wait(lambda: served_versions(url) == {v2}, 120, "every worker on the new model")
                swap_seconds = time.monotonic() - t_promoted
                time.sleep(args.duration / 2)
            answers = load.answers
            failed = load.failed()
            last_old = load.last_other_version(v2)
            before = [a.seconds for a in answers if a.t < t_promoted]
            during = [a.seconds for a in answers if t_promoted <= a.t <= t_promoted + swap_seconds]
            new_pids = worker_pids(multiproc)
            new_worker_rss = [rss_mb(p) for p in new_pids]
        finally:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
            log.close()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                MLFLOW_WORKER,
                str(tmp / "models"),
                settings.mlflow_tracking_uri,
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        mlflow_worker = json.loads(probe.stdout)

    def p99(values: list[float]) -> float:
        return sorted(values)[int(0.99 * (len(values) - 1))] if values else float("nan")

    n = args.workers
    mlflow_delta = mlflow_worker["after"] - mlflow_worker["before"]
    rows += [
        ("promotion → every worker serves it", f"{swap_seconds:.1f} s", f"poll {args.poll:g} s"),
        (
            "last answer from the old model",
            f"{(last_old or t_promoted) - t_promoted:.1f} s after promotion",
            "",
        ),
        ("requests during the run", str(len(answers)), f"{args.threads} client threads"),
        ("requests failed", str(len(failed)), "target 0"),
        (
            "latency p99 before / during swap",
            f"{1000 * p99(before):.0f} ms / {1000 * p99(during):.0f} ms",
            f"max {1000 * max(a.seconds for a in answers):.0f} ms",
        ),
        (
            "worker RSS (MLflow kept out)",
            f"{sum(worker_rss) / len(worker_rss):.0f} MB",
            f"{n} workers; after the swap {sum(new_worker_rss) / len(new_worker_rss):.0f} MB",
        ),
        (
            "worker RSS if it imported mlflow",
            f"{sum(worker_rss) / len(worker_rss) + mlflow_delta:.0f} MB",
            f"+{mlflow_delta:.0f} MB and +{mlflow_worker['seconds']:.1f} s per worker "
            f"(import mlflow + alias lookup, measured in a process running create_app: "
            f"{mlflow_worker['before']:.0f} → {mlflow_worker['after']:.0f} MB)",
        ),
        ("supervisor RSS (mlflow, once)", f"{supervisor_rss:.0f} MB", "one per predictor"),
    ]
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4, help="concurrent client threads")
    p.add_argument("--poll", type=float, default=1.0, help="TAGWATCH_MODEL_POLL_SECONDS")
    p.add_argument("--duration", type=float, default=6.0, help="seconds of load around the swap")
    p.add_argument("--quick", action="store_true", help="small models (faster, smaller)")
    p.add_argument("--retrain-rows", type=int, default=15000, help="labelled questions (0: skip)")
    args = p.parse_args()
    rows = run(args)
    if args.retrain_rows:
        from benchmarks.lifecycle_retrain import bench_retrain

        r = bench_retrain(args.retrain_rows)
        rows.append(
            (f"retrain on {r['rows']:,} labelled questions", f"{r['seconds']:.1f} s", r["line"])
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<28} note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<28} {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
