"""Write the demo variant of the Prometheus config: same rules, shorter ``for:`` on demo alerts.

``make demo`` must show the quality and drift alerts within minutes, while the real rules wait
30 minutes before a quality alert fires. This copies ``prometheus/prometheus.yml`` and its rule
files to ``--output`` and caps ``for:`` of the alerts named in ``--alerts`` at ``--max-for``;
expressions, thresholds and every other rule stay as they are.

    python -m stack.demo --output var/demo/prometheus
"""

from __future__ import annotations

import argparse
import glob
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO_ALERTS = (
    "DataDriftDetected",
    "JaccardLow",
    "TagCoverageLow",
    "ConceptDriftSuspected",
    "InputOOVRatioHigh",
    "EmptyPredictionRateHigh",
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration such as ``1h30m`` in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def shorten(rules: dict[str, Any], alerts: set[str], max_for: str) -> int:
    changed = 0
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            if rule.get("alert") in alerts and seconds(rule.get("for", "0s")) > seconds(max_for):
                rule["for"] = max_for
                changed += 1
    return changed


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m stack.demo", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "prometheus/prometheus.yml")
    p.add_argument("--output", type=Path, required=True, help="folder for the demo config")
    p.add_argument("--max-for", default="1m", help="longest for: of the demo alerts")
    p.add_argument("--alerts", default=",".join(DEMO_ALERTS), help="comma-separated alert names")
    a = p.parse_args()
    seconds(a.max_for)
    config = yaml.safe_load(a.config.read_text())
    rules_out = a.output / "rules"
    rules_out.mkdir(parents=True, exist_ok=True)
    alerts = {x.strip() for x in a.alerts.split(",") if x.strip()}
    changed = 0
    for pattern in config.get("rule_files", []):
        for name in sorted(glob.glob(str(a.config.parent / pattern))):
            rules = yaml.safe_load(Path(name).read_text())
            changed += shorten(rules, alerts, a.max_for)
            (rules_out / Path(name).name).write_text(yaml.safe_dump(rules, sort_keys=False))
    config["rule_files"] = ["rules/*.yml"]
    (a.output / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"demo Prometheus config in {a.output}: for: of {changed} alert(s) capped at {a.max_for}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
