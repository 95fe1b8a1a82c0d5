"""Grafana provisioning and dashboards: static checks, then every panel query on real data."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.grafana.conftest import Stack
from tests.processes import REPO_ROOT

GRAFANA = REPO_ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCE_UID = "tagwatch-prometheus"
EXPECTED_UIDS = {"tagwatch-predictor", "tagwatch-quality", "tagwatch-drift", "tagwatch-lifecycle"}
# What Grafana substitutes for its built-in variables (the datasource's timeInterval is 15s).
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def all_targets() -> list[Any]:
    params = []
    for path in DASHBOARD_FILES:
        board = load(path)
        for panel in panels(board):
            for target in panel.get("targets", []):
                params.append(
                    pytest.param(
                        board,
                        panel,
                        target,
                        id=f"{board['uid']}:{panel['title']}:{target['refId']}",
                    )
                )
    return params


def test_provisioning_pins_the_datasource_and_locks_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/tagwatch.yml").read_text())
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert by_uid[DATASOURCE_UID]["type"] == "prometheus"
    assert by_uid[DATASOURCE_UID]["url"] == "http://prometheus:9090"
    assert by_uid[DATASOURCE_UID]["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/tagwatch.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["allowUiUpdates"] is False
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_have_stable_uids_and_a_sane_layout() -> None:
    boards = [load(p) for p in DASHBOARD_FILES]
    assert {b["uid"] for b in boards} == EXPECTED_UIDS
    for board in boards:
        assert board["editable"] is False
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{board['uid']}: duplicate panel ids"
        for panel in panels(board):
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, (board["uid"], panel["title"])
            if panel["type"] in ("row", "text"):
                continue
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            assert panel["targets"], f"{board['uid']}: panel {panel['title']!r} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
                assert target["expr"].strip()


def test_the_drift_dashboard_links_to_the_latest_popmon_report() -> None:
    board = load(GRAFANA / "dashboards/drift.json")
    urls = [link["url"] for link in board["links"]]
    assert "${drift_url}/reports/latest.html" in urls
    (drift_url,) = [v for v in board["templating"]["list"] if v["name"] == "drift_url"]
    assert drift_url["query"] == "http://localhost:8001"


def test_links_and_texts_use_only_defined_variables() -> None:
    for path in DASHBOARD_FILES:
        board = load(path)
        defined = {v["name"] for v in board["templating"]["list"]} | set(BUILTINS)
        texts = [link["url"] for link in board["links"]]
        texts += [p["options"]["content"] for p in panels(board) if p["type"] == "text"]
        for text in texts:
            for m in VARIABLE.finditer(text):
                name = m.group(1) or m.group(2) or m.group(3)
                assert name in defined, f"{board['uid']}: undefined ${name} in {text!r}"


def resolve_variables(stack: Stack, board: dict[str, Any]) -> dict[str, str]:
    """Values of the dashboard's variables as Grafana would pick them (their default).

    A query variable may use the variables defined before it (``up{job="$job"}``); "All" (the
    default of ``instance``) becomes the variable's ``allValue``, as Grafana sends it.
    """
    values = dict(BUILTINS)
    for var in board["templating"]["list"]:
        if var["type"] in ("constant", "textbox", "custom"):
            values[var["name"]] = var["query"]
            continue
        assert var["type"] == "query", f"{var['name']}: unsupported variable type {var['type']}"
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((\w+(?:\{[^}]*\})?),\s*(\w+)\)", query)
        assert m, f"{var['name']}: only label_values(selector, label) is supported: {query!r}"
        r = requests.get(
            f"{stack.prometheus_url}/api/v1/label/{m.group(2)}/values",
            params={"match[]": substitute(m.group(1), values)},
            timeout=10,
        )
        options = r.json()["data"]
        assert options, f"variable ${var['name']} ({query}) has no value"
        default = var.get("current", {}).get("value")
        if isinstance(default, list):
            assert var.get("multi"), f"${var['name']}: a list default needs multi"
            (default,) = default
        if default == "$__all":
            assert var.get("includeAll"), f"${var['name']}: All is the default but not offered"
            values[var["name"]] = var.get("allValue") or "|".join(map(re.escape, options))
            continue
        assert default in options, f"${var['name']} default {default!r} not among {options}"
        values[var["name"]] = default
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise AssertionError(f"undefined variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(repl, expr)


# a selector of a dashboard expression: metric{labels}
SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")


def test_every_dashboard_has_an_instance_variable_all_by_default() -> None:
    for path in DASHBOARD_FILES:
        board = load(path)
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
        assert var["type"] == "query" and var["includeAll"] and var["multi"], board["uid"]
        assert var["current"]["value"] == ["$__all"], f"{board['uid']}: All is not the default"
        assert var["allValue"] == ".*"  # also the replicas gone since (a killed one's history)
        assert re.fullmatch(r'label_values\(up\{job="[^"]+"\}, instance\)', var["query"])


def test_per_process_panels_filter_by_instance() -> None:
    """Every selector on the job the instance variable lists filters by it; only the fleet's
    recorded series (level job:* or job_<label>:*, e.g. job_tag:*: no instance label) stay
    whole."""
    for path in DASHBOARD_FILES:
        board = load(path)
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "instance"]
        job = re.search(r'job="([^"]+)"', var["query"]).group(1)  # type: ignore[union-attr]
        for panel in panels(board):
            for target in panel.get("targets", []):
                for metric, labels in SELECTOR.findall(target["expr"]):
                    level = metric.split(":")[0] if ":" in metric else ""
                    fleet = re.fullmatch(r"job(_\w+)?", level) and "instance" not in level
                    if f'job="{job}"' not in labels or fleet:
                        continue
                    assert 'instance=~"$instance"' in labels, (board["uid"], panel["title"])


def test_every_dashboard_variable_resolves(stack: Stack) -> None:
    for path in DASHBOARD_FILES:
        values = resolve_variables(stack, load(path))
        assert values


@pytest.mark.slow
@pytest.mark.parametrize(("board", "panel", "target"), all_targets())
def test_panel_query_returns_data(
    stack: Stack, board: dict[str, Any], panel: dict[str, Any], target: dict[str, Any]
) -> None:
    expr = substitute(target["expr"], resolve_variables(stack, board))
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    now = time.time()
    if target.get("instant"):
        body = stack.query(expr, time=now)
    else:
        body = stack.query(expr, start=now - 120, end=now, step=5)
    assert body["status"] == "success", f"{expr!r}: {body.get('errorType')}: {body.get('error')}"
    result = body["data"]["result"]
    assert result, f"{board['uid']} / {panel['title']}: no data for {expr!r}"
    if body["data"]["resultType"] == "matrix":
        values = [float(v) for series in result for _, v in series["values"]]
    else:
        values = [float(series["value"][1]) for series in result]
    assert any(not math.isnan(v) for v in values), f"{panel['title']}: only NaN for {expr!r}"


def test_the_popmon_report_link_resolves_on_the_drift_process(stack: Stack) -> None:
    board = load(GRAFANA / "dashboards/drift.json")
    (link,) = [lk["url"] for lk in board["links"] if "reports" in lk["url"]]
    url = substitute(link, {"drift_url": stack.drift_url})
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    assert "popmon" in r.text.lower()
