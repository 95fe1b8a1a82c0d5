"""A small client of Prometheus' HTTP API (instant and range queries)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests


class PrometheusError(RuntimeError):
    """Prometheus is unreachable or refused a query."""


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]]  # (unix time, value)


class PrometheusClient:
    def __init__(self, base_url: str, timeout_seconds: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._session = requests.Session()
        self._unreachable: str | None = None  # after one failed connection, fail fast

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        if self._unreachable:
            raise PrometheusError(self._unreachable)
        try:
            resp = self._session.get(url, params=params, timeout=self.timeout_seconds)
        except requests.Timeout as exc:
            self._unreachable = (
                f"Prometheus at {self.base_url} did not answer within {self.timeout_seconds} s"
            )
            raise PrometheusError(self._unreachable) from exc
        except requests.RequestException as exc:
            self._unreachable = f"Prometheus at {self.base_url} unreachable ({type(exc).__name__})"
            raise PrometheusError(self._unreachable) from exc
        try:
            body = resp.json()
        except ValueError as exc:
            raise PrometheusError(f"{url}: HTTP {resp.status_code}, not JSON") from exc
        if resp.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"{url}: HTTP {resp.status_code}: {body.get('error', 'unknown error')}"
            )
        return body["data"]

    def query(self, expr: str, at: datetime) -> list[Series]:
        data = self._get("/api/v1/query", {"query": expr, "time": at.timestamp()})
        if data["resultType"] == "scalar":
            t, v = data["result"]
            return [Series({}, [(float(t), float(v))])]
        return [
            Series(r["metric"], [(float(r["value"][0]), float(r["value"][1]))])
            for r in data["result"]
        ]

    def query_range(
        self, expr: str, start: datetime, end: datetime, step_seconds: float
    ) -> list[Series]:
        data = self._get(
            "/api/v1/query_range",
            {
                "query": expr,
                "start": start.timestamp(),
                "end": end.timestamp(),
                "step": step_seconds,
            },
        )
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]
