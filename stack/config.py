"""The local stack's Prometheus config, with the ports of ``scripts/services.conf``.

``prometheus/prometheus.yml`` is the production config with the default ports; ``make up`` runs
a copy written by this module: every scraped service of ``services.conf`` (after the
``STACK_PORT_<NAME>`` overrides of the environment) becomes a target ``127.0.0.1:<port>`` of its
job (``<name>``, or the job a replica names: the fleet's ``predictor2`` is a second instance of
job ``predictor``), Alertmanager's target follows its port, and the rule files are copied next
to it (``--demo``: ``for:`` of the demo alerts capped, see ``stack.demo``).
``--file-sd``: the targets go to ``targets/<job>.json`` read through ``file_sd_configs``
(Prometheus re-reads them on change: a replica joins without a restart; docs/scaling.md).
Services of the ``fleet`` stack count only when ``STACK_FLEET`` is set (``make up-fleet``).

    python -m stack.config prometheus --output var/prometheus-config [--demo] [--file-sd]
    python -m stack.config services      # name port ready scrape show (after overrides)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stack.demo import DEMO_ALERTS, shorten

# the repository: the local stack runs from its checkout (pip install -e)
ROOT = Path(__file__).resolve().parents[1]
SERVICES_FILE = ROOT / "scripts" / "services.conf"


STACKS = ("all", "fleet")


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    ready: str
    scrape: bool
    show: str
    what: str
    job: str | None = None  # the Prometheus job it is scraped as (None: not scraped)
    stack: str = "all"  # "fleet": only in the fleet stack (make up-fleet)

    @property
    def port_variable(self) -> str:
        return "STACK_PORT_" + self.name.upper().replace("-", "_")


def load_services(
    path: Path = SERVICES_FILE, env: Mapping[str, str] | None = None
) -> list[Service]:
    """The services of ``path`` in the stack ``env`` asks for (``STACK_FLEET``: the fleet's too),
    ports overridden by ``STACK_PORT_<NAME>`` of ``env``."""
    env = os.environ if env is None else env
    fleet = bool(env.get("STACK_FLEET"))
    services = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 6)
        if len(fields) < 6:
            raise ValueError(f"{path}:{number}: expected name port ready scrape stack show [what]")
        name, port, ready, scrape, stack, show = fields[:6]
        if stack not in STACKS:
            raise ValueError(f"{path}:{number}: stack must be one of {STACKS}, not {stack!r}")
        if stack == "fleet" and not fleet:
            continue
        job = None if scrape == "no" else name if scrape == "yes" else scrape
        override = env.get("STACK_PORT_" + name.upper().replace("-", "_"))
        service = Service(
            name=name,
            port=int(override or port),
            ready=ready,
            scrape=job is not None,
            show=show,
            what=(fields[6:] or [""])[0],
            job=job,
            stack=stack,
        )
        services.append(service)
    ports = [s.port for s in services]
    if len(set(ports)) != len(ports):
        raise ValueError(f"two services share a port: {ports}")
    return services


def scrape_targets(services: list[Service]) -> dict[str, list[str]]:
    """Job name -> its targets on 127.0.0.1 (a job's replicas in services.conf order)."""
    targets: dict[str, list[str]] = {}
    for s in services:
        if s.job is not None:
            targets.setdefault(s.job, []).append(f"127.0.0.1:{s.port}")
    return targets


def local_prometheus_config(
    base: dict[str, Any], services: list[Service], file_sd_dir: str | None = None
) -> dict[str, Any]:
    """``base`` with the targets of every scraped service, on 127.0.0.1 at its port: a static
    list, or with ``file_sd_dir`` a ``file_sd_configs`` entry reading ``<dir>/<job>.json``."""
    config = dict(base)
    jobs = {j["job_name"]: dict(j) for j in base.get("scrape_configs", [])}
    for name, targets in scrape_targets(services).items():
        job = jobs.setdefault(name, {"job_name": name})
        job.pop("static_configs", None)
        job.pop("file_sd_configs", None)
        if file_sd_dir is None:
            job["static_configs"] = [{"targets": targets}]
        else:
            job["file_sd_configs"] = [{"files": [f"{file_sd_dir}/{name}.json"]}]
    config["scrape_configs"] = list(jobs.values())
    by_name = {s.name: s for s in services}
    if "alertmanager" in by_name:
        target = f"127.0.0.1:{by_name['alertmanager'].port}"
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    return config


def write_file_sd(directory: Path, services: list[Service]) -> None:
    """One ``<job>.json`` per job (file_sd format), each replaced atomically: Prometheus may be
    reading it (it watches the files and picks up a new replica without a restart)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, targets in scrape_targets(services).items():
        tmp = directory / f".{name}.json.tmp"
        tmp.write_text(json.dumps([{"targets": targets, "labels": {}}], indent=2) + "\n")
        tmp.replace(directory / f"{name}.json")


def write_prometheus(
    output: Path,
    services: list[Service],
    demo: bool,
    max_for: str,
    interval: str | None = None,
    file_sd: bool = False,
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
    if file_sd:
        write_file_sd(output / "targets", services)
    config = local_prometheus_config(base, services, "targets" if file_sd else None)
    config["rule_files"] = ["rules/*.yml"]
    if interval:  # tests: scrape and evaluate every second
        config["global"] = dict(
            config.get("global", {}),
            scrape_interval=interval,
            evaluation_interval=interval,
            scrape_timeout=interval,
        )
    header = (
        "# Written by python -m stack.config from prometheus/prometheus.yml and services.conf\n"
    )
    (output / "prometheus.yml").write_text(header + yaml.safe_dump(config, sort_keys=False))
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m stack.config", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    prom = sub.add_parser("prometheus", help="write the local stack's Prometheus config")
    prom.add_argument("--output", type=Path, required=True)
    prom.add_argument("--demo", action="store_true", help="cap for: of the demo alerts")
    prom.add_argument("--max-for", default="1m", help="longest for: of the demo alerts")
    prom.add_argument("--interval", default=None, help="scrape and evaluation interval")
    prom.add_argument(
        "--file-sd", action="store_true", help="targets in targets/<job>.json (file_sd_configs)"
    )
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
            scrape = "yes" if s.job == s.name else s.job or "no"
            print(s.name, s.port, s.ready, scrape, s.show)
        return 0
    changed = write_prometheus(a.output, services, a.demo, a.max_for, a.interval, a.file_sd)
    note = f", for: of {changed} demo alert(s) capped at {a.max_for}" if a.demo else ""
    print(f"Prometheus config in {a.output}/prometheus.yml{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
