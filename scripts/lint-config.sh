#!/usr/bin/env bash
# Configuration checks of the deployment files (called by `make lint`): the GitHub workflow
# against its JSON schema, docker-compose.yml with docker-compose, the Procfile with honcho,
# the Docker-side Prometheus config with promtool, the shell scripts with bash -n.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV_BIN="${VENV_BIN:-.venv/bin}"
run() { echo "+ $*"; "$@"; }

run "$VENV_BIN/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
if command -v docker-compose >/dev/null; then
  run docker-compose -f docker-compose.yml config -q
elif docker compose version >/dev/null 2>&1; then
  run docker compose -f docker-compose.yml config -q
else
  echo "docker-compose not installed: compose check skipped (apt-get install docker-compose)" >&2
fi
run "$VENV_BIN/honcho" check
if command -v promtool >/dev/null; then
  run promtool check config --syntax-only prometheus/prometheus.docker.yml
fi
for script in scripts/*.sh; do
  run bash -n "$script"
done
