"""The local stack's Prometheus config, with the ports of ``scripts/services.conf``.

``prometheus/prometheus.yml`` is the production config with the default ports; ``make up`` runs
a copy written by this script: every scraped service of ``services.conf`` (after the
``STACK_PORT_<NAME>`` overrides of the environment) becomes a job ``<name>`` with the target
``127.0.0.1:<port>``, Alertmanager's target follows its port, and the rule files are copied next
to it (``--demo``: ``for:`` of the demo alerts capped, see ``demo_prometheus.py``).

    python scripts/stack_config.py prometheus --output var/prometheus-config [--demo]
    python scripts/stack_config.py services      # name port ready scrape show (after overrides)
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# run as a script: its own folder is on the import path (tests load both files by path)
from demo_prometheus import DEMO_ALERTS, shorten

ROOT = Path(__file__).resolve().parents[1]
SERVICES_FILE = ROOT / "scripts" / "services.conf"


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    ready: str
    scrape: bool
    show: str
    what: str

    @property
    def port_variable(self) -> str:
        return "STACK_PORT_" + self.name.upper().replace("-", "_")


def load_services(
    path: Path = SERVICES_FILE, env: Mapping[str, str] | None = None
) -> list[Service]:
    """The services of ``path``, ports overridden by ``STACK_PORT_<NAME>`` of ``env``."""
    env = os.environ if env is None else env
    services = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 5)
        if len(fields) < 5:
            raise ValueError(f"{path}:{number}: expected name port ready scrape show [what]")
        name, port, ready, scrape, show = fields[:5]
        service = Service(name, int(port), ready, scrape == "yes", show, (fields[5:] or [""])[0])
        override = env.get(service.port_variable)
        if override:
            service = Service(name, int(override), ready, service.scrape, show, service.what)
        services.append(service)
    ports = [s.port for s in services]
    if len(set(ports)) != len(ports):
        raise ValueError(f"two services share a port: {ports}")
    return services


def local_prometheus_config(base: dict[str, Any], services: list[Service]) -> dict[str, Any]:
    """``base`` with one scrape job per scraped service, on 127.0.0.1 at its port."""
    config = dict(base)
    jobs = {j["job_name"]: dict(j) for j in base.get("scrape_configs", [])}
    for s in services:
        if s.scrape:
            job = jobs.setdefault(s.name, {"job_name": s.name})
            job["static_configs"] = [{"targets": [f"127.0.0.1:{s.port}"]}]
    config["scrape_configs"] = list(jobs.values())
    by_name = {s.name: s for s in services}
    if "alertmanager" in by_name:
        target = f"127.0.0.1:{by_name['alertmanager'].port}"
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    return config


def write_prometheus(
    output: Path, services: list[Service], demo: bool, max_for: str, interval: str | None = None
) -> int:
    base_path = ROOT / "prometheus" / "prometheus.yml"
    base = yaml.safe_load(base_path.read_text())
    rules_out = output / "rules"
    rules_out.mkdir(parents=True, exist_ok=True)
    for old in rules_out.glob("*.yml"):
        old.unlink()
    changed = 0
    for pattern in base.get("rule_files", []):
        for name in sorted(glob.glob(str(base_path.parent / pattern))):
            rules = yaml.safe_load(Path(name).read_text())
            if demo:
                changed += shorten(rules, set(DEMO_ALERTS), max_for)
            (rules_out / Path(name).name).write_text(yaml.safe_dump(rules, sort_keys=False))
    config = local_prometheus_config(base, services)
    config["rule_files"] = ["rules/*.yml"]
    if interval:  # tests: scrape and evaluate every second
        config["global"] = dict(
            config.get("global", {}),
            scrape_interval=interval,
            evaluation_interval=interval,
            scrape_timeout=interval,
        )
    header = (
        "# Written by scripts/stack_config.py from prometheus/prometheus.yml and services.conf\n"
    )
    (output / "prometheus.yml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    prom = sub.add_parser("prometheus", help="write the local stack's Prometheus config")
    prom.add_argument("--output", type=Path, required=True)
    prom.add_argument("--demo", action="store_true", help="cap for: of the demo alerts")
    prom.add_argument("--max-for", default="1m", help="longest for: of the demo alerts")
    prom.add_argument("--interval", default=None, help="scrape and evaluation interval")
    sub.add_parser("services", help="print the services after the environment's overrides")
    a = p.parse_args(argv)
    services_file = Path(os.environ.get("STACK_SERVICES_FILE") or SERVICES_FILE)
    try:
        services = load_services(services_file)
    except (OSError, ValueError) as exc:
        print(f"error: {services_file}: {exc}", file=sys.stderr)
        return 2
    if a.command == "services":
        for s in services:
            print(s.name, s.port, s.ready, "yes" if s.scrape else "no", s.show)
        return 0
    changed = write_prometheus(a.output, services, a.demo, a.max_for, a.interval)
    note = f", for: of {changed} demo alert(s) capped at {a.max_for}" if a.demo else ""
    print(f"Prometheus config in {a.output}/prometheus.yml{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
