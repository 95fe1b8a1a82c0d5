#!/usr/bin/env bash
# Static checks of the monitoring configuration (called by `make lint`): Prometheus config and
# rules, promtool rule unit tests, Alertmanager config, its routing, and that the committed
# alertmanager.yml is what `python -m alerting render-config` renders from default settings.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"

promtool check config prometheus/prometheus.yml
promtool check rules prometheus/rules/*.yml
promtool test rules prometheus/tests/*.yml
amtool check-config alertmanager/alertmanager.yml

route() {  # route EXPECTED_RECEIVER LABEL=VALUE...
  local expected="$1"; shift
  amtool config routes test --config.file=alertmanager/alertmanager.yml \
    --verify.receivers="$expected" "$@" >/dev/null 2>&1 \
    || { echo "routing: $* does not go to $expected" >&2; exit 1; }
  echo "routing: $* -> $expected"
}
route email-critical alertname=PredictorDown severity=critical job=predictor
route lifecycle,email-warning alertname=DataDriftDetected severity=warning job=drift
route email-warning alertname=DriftJobFailing severity=warning job=drift
route null alertname=Whatever severity=info job=predictor
route email-warning alertname=Unlabelled

if ! diff -u alertmanager/alertmanager.yml <("$PYTHON" -m alerting render-config --defaults); then
  echo "alertmanager/alertmanager.yml differs from the rendered defaults:" \
       "run '$PYTHON -m alerting render-config --defaults > alertmanager/alertmanager.yml'" >&2
  exit 1
fi
echo "monitoring configuration OK"
