"""``python -m exporter serve``: a small supervisor that keeps gunicorn serving the champion.

Why a supervisor: resolving ``models:/tagwatch@champion`` needs MLflow (``import mlflow`` costs
~1.6 s and ~170 MB), and each gunicorn worker would pay it. The supervisor pays it once: it
syncs the champion into the local cache (``models/<artefact_version>/`` + ``models/LATEST``,
:func:`lifecycle.registry.sync_champion`), and workers keep loading the local artefact.

Every ``TAGWATCH_MODEL_POLL_SECONDS`` it syncs again; when ``models/LATEST`` changed (a
promotion in MLflow, or a pointer rewritten by hand without MLflow) it rolls the workers : a
throw-away process first loads the new model and answers one question (preflight), then
``workers`` times SIGTTIN (gunicorn adds workers, which load the new model while the old ones
keep serving), and once every new worker reports the new version, as many SIGTTOU (gunicorn
stops the oldest workers gracefully: each finishes its request).
The listening socket never closes and there are always ``workers`` workers accepting, so no
request fails and none waits for a worker to boot. A new model that does not load is refused:
the pointer goes back, the new worker is stopped, the old model stays served.

The supervisor tells the workers which version to load and ``/metrics`` what it did through
``supervisor.json`` in the prometheus multiprocess folder (served version, registry errors,
swaps, registry versions); each worker writes
``workers/<pid>.json`` there once its app is loaded (``gunicorn_conf.post_worker_init``).
MLflow unreachable never stops the predictor: the cached champion is served, a warning logged,
``tagwatch_model_registry_errors_total`` counts it, and the next poll tries again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exporter.settings import PredictorSettings

log = logging.getLogger("exporter.supervisor")

STATUS_FILE = "supervisor.json"
WORKERS_DIR = "workers"
POINTER_FILE = "LATEST"  # tagger.artefact.LATEST_FILE (not imported: keeps pandas out of here)
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


@dataclass
class SupervisorStatus:
    """What the supervisor did, read by every worker's /metrics (exporter.metrics)."""

    registry_errors: int = 0
    last_sync_timestamp: float = 0.0
    swaps: dict[str, int] = field(default_factory=lambda: {"done": 0, "refused": 0})
    # artefact version -> registry version, for tagwatch_model_registry_version
    registry_versions: dict[str, int] = field(default_factory=dict)
    # the artefact version workers load (models/LATEST is what is wanted; this is what passed
    # the preflight): a worker (re)started at any time never loads a model that was refused
    served: str | None = None


def status_path(multiproc_dir: Path) -> Path:
    return Path(multiproc_dir) / STATUS_FILE


def read_status(multiproc_dir: Path | None) -> SupervisorStatus | None:
    """The supervisor's status, or None when there is none (no supervisor, single process)."""
    if multiproc_dir is None:
        return None
    try:
        raw = json.loads(status_path(multiproc_dir).read_text())
    except (OSError, ValueError):
        return None
    status = SupervisorStatus()
    for key, value in raw.items():
        if hasattr(status, key):
            setattr(status, key, value)
    return status


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_status(multiproc_dir: Path, status: SupervisorStatus) -> None:
    _write_atomic(status_path(multiproc_dir), json.dumps(asdict(status), sort_keys=True))


def read_pointer(models_dir: Path) -> str | None:
    try:
        return (Path(models_dir) / POINTER_FILE).read_text().strip() or None
    except OSError:
        return None


def write_pointer(models_dir: Path, version: str) -> None:
    _write_atomic(Path(models_dir) / POINTER_FILE, version + "\n")


def report_worker(
    multiproc_dir: Path, pid: int, model_version: str | None, error: str | None
) -> None:
    """Called by each worker once its app is loaded: which model it serves."""
    folder = Path(multiproc_dir) / WORKERS_DIR
    folder.mkdir(exist_ok=True)
    payload = {"pid": pid, "model_version": model_version, "error": error}
    _write_atomic(folder / f"{pid}.json", json.dumps(payload))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by gunicorn) no longer serves
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    return True


def worker_reports(multiproc_dir: Path) -> dict[int, dict[str, Any]]:
    """The live workers' reports by pid; reports of exited workers are removed."""
    out: dict[int, dict[str, Any]] = {}
    folder = Path(multiproc_dir) / WORKERS_DIR
    for path in folder.glob("*.json"):
        try:
            report = json.loads(path.read_text())
            pid = int(report["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            out[pid] = report
        else:
            path.unlink(missing_ok=True)
    return out


PREFLIGHT = """
import sys
from tagger.artefact import load_artefact
artefact = load_artefact(sys.argv[1], sys.argv[2])
artefact.model.analyse("How do I sort a list in python?", "")
"""


def preflight(models_dir: Path, version: str, timeout: float) -> str | None:
    """Load ``version`` and answer one question in a throw-away process; None if it works.

    A separate process keeps the model libraries out of the supervisor, and a model that does
    not load never reaches a worker that would answer 503 with it.
    """
    try:
        out = subprocess.run(
            [sys.executable, "-c", PREFLIGHT, str(models_dir), version],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"loading it took more than {timeout:g} s"
    if out.returncode == 0:
        return None
    lines = out.stderr.strip().splitlines()
    return lines[-1][:300] if lines else f"exit code {out.returncode}"


def follows_registry(settings: PredictorSettings) -> bool:
    """MLflow is used only when following is on, a tracking URI is set and no version pinned."""
    return bool(
        settings.follow_registry
        and settings.mlflow_tracking_uri.strip()
        and settings.model_version == "latest"
    )


class Supervisor:
    """Runs gunicorn as a child and swaps the model it serves; see the module docstring."""

    def __init__(self, settings: PredictorSettings, argv: Sequence[str], env: dict[str, str]):
        if settings.multiproc_dir is None:
            raise ValueError("the supervisor needs settings.multiproc_dir")
        self.settings = settings
        self.argv = list(argv)
        self.env = env
        self.multiproc_dir = Path(settings.multiproc_dir)
        self.models_dir = Path(settings.models_dir)
        self.follow = follows_registry(settings)
        self.swappable = settings.model_version == "latest"
        self.status = SupervisorStatus()
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.first_sync = threading.Event()
        self._refused: str | None = None
        self._registry_down = False
        self._lock = threading.Lock()

    # --- registry ---------------------------------------------------------------------------
    def sync(self) -> None:
        """Resolve the champion into the local cache; a failure is logged, counted, survived."""
        if not self.follow:
            return
        try:
            from lifecycle.registry import sync_champion  # imports mlflow: the supervisor only

            ref = sync_champion(self.settings, self.models_dir)
        except Exception as exc:  # RegistryError, or anything MLflow raises on a bad URI
            self.status.registry_errors += 1
            level = logging.DEBUG if self._registry_down else logging.WARNING
            log.log(
                level,
                "model registry unreachable (%s): serving the cached model %s; retrying every %g s",
                str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__,
                read_pointer(self.models_dir),
                self.settings.model_poll_seconds,
            )
            self._registry_down = True
        else:
            if self._registry_down:
                log.warning("model registry reachable again")
            self._registry_down = False
            self.status.last_sync_timestamp = time.time()
            if ref is None:
                log.info("no %s@%s yet: serving the local model", *self._model_names())
            else:
                self.status.registry_versions[ref.artefact_version] = ref.version
        self._publish()

    def _model_names(self) -> tuple[str, str]:
        return self.settings.registered_model, self.settings.champion_alias

    def _publish(self) -> None:
        with self._lock:
            write_status(self.multiproc_dir, self.status)

    # --- swap --------------------------------------------------------------------------------
    def _signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, sig)

    def _workers(self) -> set[int]:
        """gunicorn's live worker processes (its children that have not exited)."""
        if self.child is None:
            return set()
        master = self.child.pid
        out = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master and fields[0] not in ("Z", "X"):
                    out.add(int(stat.parent.name))
        return out

    def _scale(self, sig: int, n: int) -> None:
        """Send SIGTTIN/SIGTTOU ``n`` times, one at a time: the same signal sent again before
        gunicorn handled it would merge with it (one worker more or less than asked)."""
        step = 1 if sig == signal.SIGTTIN else -1
        wait = 5.0 if step > 0 else self.settings.model_swap_timeout_seconds
        for _ in range(n):
            target = len(self._workers()) + step
            self._signal_child(sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and not self.stopping.is_set():
                count = len(self._workers())
                if (count >= target) if step > 0 else (count <= target):
                    break
                time.sleep(0.02)

    def _wait_new_workers(self, known: set[int], n: int, timeout: float) -> list[dict[str, Any]]:
        """Reports of up to ``n`` workers that were not in ``known``, once they loaded."""
        deadline = time.monotonic() + timeout
        fresh: dict[int, dict[str, Any]] = {}
        while time.monotonic() < deadline and not self.stopping.is_set():
            for pid, report in worker_reports(self.multiproc_dir).items():
                if pid not in known:
                    fresh[pid] = report
            if len(fresh) >= n:
                break
            time.sleep(0.05)
        return list(fresh.values())

    def _refuse(self, old: str | None, new: str, why: object) -> bool:
        log.error("model %s refused (%s): keeping %s", new, why, old)
        if old is not None:
            write_pointer(self.models_dir, old)
        self._refused = new
        self.status.swaps["refused"] = self.status.swaps.get("refused", 0) + 1
        self.status.served = old
        self._publish()
        return False

    def swap(self, old: str | None, new: str) -> bool:
        """Roll every worker onto ``new`` (already in models/LATEST); False if refused."""
        t0 = time.monotonic()
        n = self.settings.workers
        problem = preflight(self.models_dir, new, self.settings.model_swap_timeout_seconds)
        if problem is not None:  # checked before any worker could answer with it
            return self._refuse(old, new, problem)
        log.info("model %s -> %s: starting %d new workers", old, new, n)
        self.status.served = new  # what a worker starting from now on loads
        self._publish()
        known = set(worker_reports(self.multiproc_dir))
        self._scale(signal.SIGTTIN, n)  # gunicorn boots them while the old workers keep serving
        fresh = self._wait_new_workers(known, n, self.settings.model_swap_timeout_seconds)
        if self.stopping.is_set():
            return False
        bad = [r for r in fresh if r.get("model_version") != new]
        if len(fresh) < n or bad:
            why = bad[0].get("error") or bad[0] if bad else f"{len(fresh)} of {n} workers came up"
            self.status.served = old  # workers started from now on load ``old`` again
            self._publish()
            for report in fresh:  # gunicorn replaces each with a worker on ``old``
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(report["pid"]), signal.SIGTERM)
            self._scale(signal.SIGTTOU, n)  # back to ``workers`` workers
            return self._refuse(old, new, why)
        self._scale(signal.SIGTTOU, n)  # gunicorn stops the oldest workers gracefully
        self.status.swaps["done"] = self.status.swaps.get("done", 0) + 1
        self._publish()
        log.info("model %s served by every worker after %.1f s", new, time.monotonic() - t0)
        return True

    def check(self) -> None:
        """One poll: sync, then swap if the pointer moved."""
        self.sync()
        current = read_pointer(self.models_dir)
        served = self.status.served
        if current is None or current == served or self.stopping.is_set():
            return
        if current == self._refused:
            if served is not None:
                write_pointer(self.models_dir, served)  # still refused: keep the old model
            return
        if served is None:
            # nothing was loadable at start: workers serve 503 until a model exists; restart them
            problem = preflight(self.models_dir, current, self.settings.model_swap_timeout_seconds)
            if problem is not None:
                self._refuse(None, current, problem)
                return
            self.status.served = current
            self._publish()
            self._signal_child(signal.SIGHUP)
            log.info("model %s available: reloading the workers", current)
            return
        self.swap(served, current)

    def _watch(self) -> None:
        try:
            self.sync()
        finally:
            self.first_sync.set()
        while not self.stopping.wait(self.settings.model_poll_seconds):
            if self.child is None:
                continue
            try:
                self.check()
            except Exception:  # the watcher must outlive any single failure
                log.exception(
                    "model check failed; next try in %g s", self.settings.model_poll_seconds
                )

    # --- process -----------------------------------------------------------------------------
    def _forward(self, signum: int, frame: object) -> None:
        if signum != signal.SIGHUP:
            self.stopping.set()
        self._signal_child(signum)

    def run(self) -> int:
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, self._forward)
        watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        if self.swappable:
            self._publish()
            watcher.start()
            # the cached champion is served at once if MLflow is slow; a later sync swaps
            deadline = time.monotonic() + self.settings.model_sync_timeout_seconds
            while not self.first_sync.is_set() and not self.stopping.is_set():
                if time.monotonic() > deadline:
                    break
                self.first_sync.wait(0.1)
            if not self.first_sync.is_set() and not self.stopping.is_set():
                log.warning(
                    "model registry did not answer within %g s: starting on the cached model",
                    self.settings.model_sync_timeout_seconds,
                )
        if self.stopping.is_set():
            return 0
        self.status.served = read_pointer(self.models_dir) if self.swappable else None
        self._publish()
        self.child = subprocess.Popen(self.argv, env=self.env)
        log.info(
            "gunicorn %d serving model %s (%s)",
            self.child.pid,
            self.status.served or self.settings.model_version,
            "following the registry"
            if self.follow
            else "following models/LATEST"
            if self.swappable
            else "pinned",
        )
        while True:
            try:
                code = self.child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
        self.stopping.set()
        return code
