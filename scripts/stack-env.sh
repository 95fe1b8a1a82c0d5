# Environment of the local stack, sourced by scripts/up.sh, demo.sh and down.sh (bash).
# Every value can be overridden from the caller's environment.
STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export STACK_ROOT
# The demo keeps its state apart (var/demo, wiped by each `make demo`): Alertmanager would not
# mail again alerts it already notified, and a demo must not mix with a real store.
if [ -n "${TAGWATCH_DEMO:-}" ]; then
  export STACK_VAR="${STACK_VAR:-$STACK_ROOT/var/demo}"
else
  export STACK_VAR="${STACK_VAR:-$STACK_ROOT/var}"
fi
export STACK_REPORTS="${STACK_REPORTS:-$([ -n "${TAGWATCH_DEMO:-}" ] && echo "$STACK_VAR/reports" || echo "$STACK_ROOT/reports")}"
export STACK_PID_FILE="$STACK_VAR/run/stack.pid"
export STACK_LOG="$STACK_VAR/log/stack.log"
export VENV="${VENV:-$STACK_ROOT/.venv}"
export PATH="$VENV/bin:$PATH"

export TAGWATCH_HOST="${TAGWATCH_HOST:-127.0.0.1}"
export TAGWATCH_MODELS_DIR="${TAGWATCH_MODELS_DIR:-$STACK_ROOT/models}"
export TAGWATCH_STORE_URL="${TAGWATCH_STORE_URL:-sqlite:///$STACK_VAR/tagwatch.sqlite3}"
export TAGWATCH_STATE_DIR="${TAGWATCH_STATE_DIR:-$STACK_VAR/drift}"
export TAGWATCH_PROMETHEUS_CONFIG="${TAGWATCH_PROMETHEUS_CONFIG:-$STACK_ROOT/prometheus/prometheus.yml}"
# Alertmanager's rendered config lives in var/; its templates stay in the repository.
export TAGWATCH_ALERTMANAGER_TEMPLATES="${TAGWATCH_ALERTMANAGER_TEMPLATES:-$STACK_ROOT/alertmanager/templates/*.tmpl}"

# name|url that answers 200 when the process is up
STACK_CHECKS=(
  "predictor|http://127.0.0.1:8000/readyz"
  "drift|http://127.0.0.1:8001/healthz"
  "weekly|http://127.0.0.1:8002/metrics"
  "prometheus|http://127.0.0.1:9090/-/ready"
  "alertmanager|http://127.0.0.1:9093/-/ready"
  "mailsink|smtp://127.0.0.1:1025"
)
STACK_PORTS=(8000 8001 8002 9090 9093 1025)

stack_running() {  # [pid file]
  local pid_file="${1:-$STACK_PID_FILE}"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# the pid files of both kinds of stack (normal and demo)
STACK_PID_FILES=("$STACK_ROOT/var/run/stack.pid" "$STACK_ROOT/var/demo/run/stack.pid")

print_urls() {
  cat <<URLS
tagwatch local stack (state: $STACK_VAR, logs: $STACK_LOG, mail: $STACK_VAR/mail/*.eml)
  predictor      http://127.0.0.1:8000   (POST /predict, /feedback; /metrics)
  drift report   http://127.0.0.1:8001/reports/latest.html
  drift metrics  http://127.0.0.1:8001/metrics
  weekly job     http://127.0.0.1:8002/metrics
  Prometheus     http://127.0.0.1:9090/alerts
  Alertmanager   http://127.0.0.1:9093
  SMTP sink      127.0.0.1:1025 -> $STACK_VAR/mail/
  Grafana        only with Docker: docker compose up -d, then http://localhost:3000
URLS
}
