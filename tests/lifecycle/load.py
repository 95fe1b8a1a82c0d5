"""Real load on loopback for swap tests and the lifecycle benchmark: threads POSTing /predict.

Each request opens a fresh connection (as separate clients do), so every worker gets some of
them; every answer is kept with its time, status and the model version that served it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests

TITLES = (
    "How do I sort a list of dictionaries by a value in python?",
    "javascript array map returns undefined",
    "SQL join two tables with a where clause",
    "java NullPointerException when calling a method of a list",
    "css center a div horizontally and vertically",
    "c# linq group by multiple columns",
)


@dataclass
class Answer:
    t: float  # time.monotonic() when the answer came
    status: int  # HTTP status, or 0 when the request failed without one
    version: str | None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Load:
    """``with Load(url, threads) as load:`` sends requests until the block ends (or max_seconds)."""

    url: str
    threads: int = 4
    max_seconds: float = 120.0
    timeout: float = 30.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, i: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            title = f"{TITLES[(i + n) % len(TITLES)]} {n}"
            n += 1
            t0 = time.monotonic()
            try:
                r = requests.post(
                    f"{self.url}/predict", json={"title": title}, timeout=self.timeout
                )
                version = r.json().get("model_version") if r.status_code == 200 else None
                answer = Answer(time.monotonic(), r.status_code, version, None if r.ok else r.text)
            except (requests.RequestException, ValueError) as exc:
                answer = Answer(time.monotonic(), 0, None, f"{type(exc).__name__}: {exc}")
            answer.seconds = answer.t - t0
            with self._lock:
                self.answers.append(answer)

    def __enter__(self) -> Load:
        for i in range(self.threads):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(self.timeout + 5)

    def failed(self) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.status != 200]

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.t >= t]

    def last_other_version(self, version: str) -> float | None:
        """Time of the last answer served by another version than ``version``."""
        with self._lock:
            other = [a.t for a in self.answers if a.status == 200 and a.version != version]
        return max(other) if other else None
