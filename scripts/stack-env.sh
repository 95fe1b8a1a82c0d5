# Environment of the local stack, sourced by scripts/up.sh, demo.sh and down.sh (bash).
# Every value can be overridden from the caller's environment.
STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export STACK_ROOT
# The demo keeps its state apart (var/demo, wiped by each `make demo`): Alertmanager would not
# mail again alerts it already notified, and a demo must not mix with a real store.
# STACK_FLEET=1 (`make up-fleet`): the fleet stack, PostgreSQL and two predictor replicas
# (the `fleet` lines of services.conf), its state apart too (var/fleet).
if [ -n "${TAGWATCH_DEMO:-}" ]; then
  _var="$STACK_ROOT/var/demo"
else
  _var="$STACK_ROOT/var"
fi
export STACK_VAR="${STACK_VAR:-$_var${STACK_FLEET:+/fleet}}"
unset _var
export STACK_REPORTS="${STACK_REPORTS:-$([ -n "${TAGWATCH_DEMO:-}" ] && echo "$STACK_VAR/reports" || echo "$STACK_ROOT/reports")}"
export STACK_PID_FILE="$STACK_VAR/run/stack.pid"
export STACK_LOG="$STACK_VAR/log/stack.log"
export VENV="${VENV:-$STACK_ROOT/.venv}"
export PATH="$VENV/bin:$PATH"

export TAGWATCH_HOST="${TAGWATCH_HOST:-127.0.0.1}"
export TAGWATCH_MODELS_DIR="${TAGWATCH_MODELS_DIR:-$STACK_ROOT/models}"
if [ -z "${STACK_FLEET:-}" ]; then
  export TAGWATCH_STORE_URL="${TAGWATCH_STORE_URL:-sqlite:///$STACK_VAR/tagwatch.sqlite3}"
fi  # the fleet's PostgreSQL URL needs its port: below
# MLflow tracking + registry: the processes use the SQLite store directly (no server needed);
# the Procfile's `mlflow server` is the UI on the same store
export TAGWATCH_MLFLOW_TRACKING_URI="${TAGWATCH_MLFLOW_TRACKING_URI:-sqlite:///$STACK_VAR/mlflow/mlflow.db}"
export TAGWATCH_MLFLOW_ARTIFACTS_DIR="${TAGWATCH_MLFLOW_ARTIFACTS_DIR:-$STACK_VAR/mlflow/artifacts}"
# An ops stack sends nothing anywhere: MLflow's usage telemetry off (server and clients), and
# `mlflow server` without its GenAI job runner and huey consumers (~2 GB, both cores busy for
# ~40 s after each start; tagwatch never submits MLflow jobs)
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
export DO_NOT_TRACK="${DO_NOT_TRACK:-true}"
export TAGWATCH_STATE_DIR="${TAGWATCH_STATE_DIR:-$STACK_VAR/drift}"
# Secrets (files written by scripts/make-secrets.sh at `make up`; a caller's own files win):
# POST /feedback's bearer token (the demo's replay sends it), the lifecycle's (POST /retrain and
# /webhook; Alertmanager sends it) and the key that signs prediction ids, one for every replica
export TAGWATCH_FEEDBACK_TOKEN_FILE="${TAGWATCH_FEEDBACK_TOKEN_FILE:-$STACK_VAR/secrets/feedback_token}"
export TAGWATCH_LIFECYCLE_TOKEN_FILE="${TAGWATCH_LIFECYCLE_TOKEN_FILE:-$STACK_VAR/secrets/lifecycle_token}"
export TAGWATCH_ID_SECRET_FILE="${TAGWATCH_ID_SECRET_FILE:-$STACK_VAR/secrets/id_secret}"
# Alertmanager's rendered config lives in var/; its templates stay in the repository.
export TAGWATCH_ALERTMANAGER_TEMPLATES="${TAGWATCH_ALERTMANAGER_TEMPLATES:-$STACK_ROOT/alertmanager/templates/*.tmpl}"

# --- services and ports: scripts/services.conf is the one place (see its header) -------------
STACK_SERVICES_FILE="${STACK_SERVICES_FILE:-$STACK_ROOT/scripts/services.conf}"
export STACK_SERVICES_FILE
STACK_SERVICES=()  # "name|port|ready|scrape|show|what", ports after the environment's overrides
STACK_CHECKS=()    # "name|url that answers 200 (or smtp:// or tcp://host:port) when it is up"
STACK_PORTS=()
while read -r _name _port _ready _scrape _stack _show _what; do
  case "$_name" in ''|'#'*) continue ;; esac
  # the fleet's services (PostgreSQL, the second predictor) only in the fleet stack
  if [ "$_stack" = fleet ] && [ -z "${STACK_FLEET:-}" ]; then continue; fi
  _var="STACK_PORT_$(echo "$_name" | tr 'a-z-' 'A-Z_')"
  _port="${!_var:-$_port}"
  export "$_var=$_port"
  STACK_SERVICES+=("$_name|$_port|$_ready|$_scrape|$_show|$_what")
  STACK_PORTS+=("$_port")
  case "$_ready" in
    -) ;;
    smtp|tcp) STACK_CHECKS+=("$_name|$_ready://127.0.0.1:$_port") ;;
    *) STACK_CHECKS+=("$_name|http://127.0.0.1:$_port$_ready") ;;
  esac
done < "$STACK_SERVICES_FILE"
unset _name _port _ready _scrape _stack _show _what _var

# the fleet: every process on the PostgreSQL of scripts/postgres.sh; no password in the URL or
# the environment: libpq reads it from a private pgpass file (written by postgres.sh init).
# Each predictor replica spools to its own directory (the Procfile sets predictor2's).
if [ -n "${STACK_FLEET:-}" ]; then
  export STACK_PG_DIR="${STACK_PG_DIR:-$STACK_VAR/pg}"
  export TAGWATCH_STORE_URL="${TAGWATCH_STORE_URL:-postgresql://tagwatch@127.0.0.1:$STACK_PORT_POSTGRES/tagwatch}"
  export PGPASSFILE="${PGPASSFILE:-$STACK_VAR/secrets/pgpass}"
  export TAGWATCH_STORE_SPOOL_DIR="${TAGWATCH_STORE_SPOOL_DIR:-$STACK_VAR/spool/predictor}"
fi

# settings derived from the ports (every process reads its own TAGWATCH_* values)
export TAGWATCH_SMTP_HOST="${TAGWATCH_SMTP_HOST:-127.0.0.1}"
export TAGWATCH_SMTP_PORT="${TAGWATCH_SMTP_PORT:-$STACK_PORT_MAILSINK}"
export TAGWATCH_WEEKLY_PORT="${TAGWATCH_WEEKLY_PORT:-$STACK_PORT_WEEKLY}"
export TAGWATCH_PREDICTOR_URL="${TAGWATCH_PREDICTOR_URL:-http://127.0.0.1:$STACK_PORT_PREDICTOR}"
export TAGWATCH_PROMETHEUS_URL="${TAGWATCH_PROMETHEUS_URL:-http://127.0.0.1:$STACK_PORT_PROMETHEUS}"
export TAGWATCH_DRIFT_REPORT_URL="${TAGWATCH_DRIFT_REPORT_URL:-http://127.0.0.1:$STACK_PORT_DRIFT/reports/latest.html}"
# the drift process posts DriftExplained (the words behind a drift alert) to Alertmanager's API
export TAGWATCH_ALERTMANAGER_API_URL="${TAGWATCH_ALERTMANAGER_API_URL:-http://127.0.0.1:$STACK_PORT_ALERTMANAGER}"
# the runbook is served rendered by the drift process (/docs/runbook.md#<alert>)
export TAGWATCH_RUNBOOK_BASE_URL="${TAGWATCH_RUNBOOK_BASE_URL:-http://127.0.0.1:$STACK_PORT_DRIFT}"
# no Grafana in the local stack, and Debian's Alertmanager has no web UI: emails link neither
export TAGWATCH_GRAFANA_URL="${TAGWATCH_GRAFANA_URL-}"
export TAGWATCH_ALERTMANAGER_URL="${TAGWATCH_ALERTMANAGER_URL-}"

stack_running() {  # [pid file]
  local pid_file="${1:-$STACK_PID_FILE}"
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

# the pid files of every kind of stack (normal, demo, fleet)
STACK_PID_FILES=("$STACK_ROOT/var/run/stack.pid" "$STACK_ROOT/var/demo/run/stack.pid"
                 "$STACK_ROOT/var/fleet/run/stack.pid" "$STACK_ROOT/var/demo/fleet/run/stack.pid")
case " ${STACK_PID_FILES[*]} " in
  *" $STACK_PID_FILE "*) ;;
  *) STACK_PID_FILES=("$STACK_PID_FILE" "${STACK_PID_FILES[@]}") ;;  # a STACK_VAR elsewhere
esac

# the URL of a service's page: Debian's Prometheus 2.x has no React UI, only /classic/<page>
stack_page_url() {  # port path
  local url="http://127.0.0.1:$1$2"
  if [ "$2" != / ] && ! python - "$url" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
    if python - "http://127.0.0.1:$1/classic$2" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
PY
      url="http://127.0.0.1:$1/classic$2"
    fi
  fi
  echo "$url"
}

print_urls() {
  local entry name port ready scrape show what
  echo "tagwatch local stack (state: $STACK_VAR, logs: $STACK_LOG, mail: $STACK_VAR/mail/*.eml)"
  for entry in "${STACK_SERVICES[@]}"; do
    IFS='|' read -r name port ready scrape show what <<<"$entry"
    if [ "$show" = - ]; then
      printf '  %-13s %-45s %s\n' "$name" "127.0.0.1:$port" "${what//\$STACK_VAR/$STACK_VAR}"
    else
      printf '  %-13s %-45s %s\n' "$name" "$(stack_page_url "$port" "$show")" "${what//\$STACK_VAR/$STACK_VAR}"
    fi
  done
  echo "  Grafana       only with Docker: docker compose up -d, then http://localhost:3000"
}
