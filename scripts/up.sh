#!/usr/bin/env bash
# `make up`: the tagwatch stack on this machine without Docker (honcho + Procfile), in the
# background. Installs what is missing, trains the model if there is none, waits until every
# process answers, prints the URLs. `make down` stops it. TAGWATCH_DEMO=1: the demo settings
# (1-minute drift bins judged every minute, alert `for:` of the quality/drift alerts shortened).
# STACK_FLEET=1 (`make up-fleet`): the fleet, a throwaway PostgreSQL cluster (scripts/postgres.sh)
# as the store and two predictor replicas, scraped as two instances of job "predictor".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"
cd "$STACK_ROOT"
mode="${TAGWATCH_DEMO:+demo}"
mode="${mode:-normal}${STACK_FLEET:+ fleet}"

for pid_file in "${STACK_PID_FILES[@]}"; do
  if stack_running "$pid_file"; then
    if [ "$pid_file" = "$STACK_PID_FILE" ]; then
      # the running predictor must serve the model that models/LATEST names (models/ may have
      # been deleted or retrained while the stack ran)
      if ! problem="$(python - "http://127.0.0.1:$STACK_PORT_PREDICTOR/readyz" "$TAGWATCH_MODELS_DIR" <<'PY'
import json, sys, urllib.error, urllib.request
from pathlib import Path
url, models = sys.argv[1], Path(sys.argv[2])
try:
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
except urllib.error.HTTPError as e:
    body = json.loads(e.read() or b"{}")
    print(f"its predictor is not ready: {'; '.join(body.get('problems', [])) or e}")
    sys.exit(1)
except OSError as e:
    print(f"its predictor does not answer at {url} ({e})")
    sys.exit(1)
latest = models / "LATEST"
want = latest.read_text().strip() if latest.is_file() else None
serving = body.get("model_version")
if want is None:
    print(f"its predictor serves model {serving} while {latest} does not exist "
          "(models/ deleted while the stack ran?)")
    sys.exit(1)
refused = (body.get("refused_model") or {}).get("version")
if serving != want and refused == want:  # serving the last good version: a warning
    for warning in body.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
elif serving != want:
    print(f"its predictor serves model {serving} while {latest} names {want}")
    sys.exit(1)
PY
)"; then
        echo "error: tagwatch stack already running (pid $(cat "$pid_file"), $mode mode)," \
             "but $problem. 'make down && make up' restarts it on the current model" >&2
        exit 1
      fi
      echo "tagwatch stack already running (pid $(cat "$pid_file"), $mode mode)"
      print_urls
      exit 0
    fi
    echo "error: a tagwatch stack of the other mode is running ($pid_file): make down first" >&2
    exit 1
  fi
done

# --- install what is missing -------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import exporter.app, drift, alerting.mailsink, stack.config, honcho, aiosmtpd" 2>/dev/null; then
  echo "installing tagwatch into $VENV"
  "$VENV/bin/pip" install --quiet -e "$STACK_ROOT[dev]"
fi
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
# nginx in front of the predictor absorbs slow clients (exporter/proxy.py)
command -v nginx >/dev/null || missing+=(nginx-light)
if [ -n "${STACK_FLEET:-}" ]; then
  [ -x "${PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ] || missing+=(postgresql-15)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "error: missing ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

for port in "${STACK_PORTS[@]}"; do
  if ! python -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
    echo "error: port $port on 127.0.0.1 is in use (another tagwatch stack or service?)" >&2
    exit 1
  fi
done

mkdir -p "$STACK_VAR"/{run,log,mail,alertmanager/data,prometheus,mlflow/artifacts} "$TAGWATCH_STATE_DIR" "$STACK_REPORTS"

# --- the MLflow store -------------------------------------------------------------------
# created and migrated once here: `mlflow server`, the predictor's supervisor and the lifecycle
# would otherwise race to create the same SQLite tables at their first start
if [[ "$TAGWATCH_MLFLOW_TRACKING_URI" == sqlite:* ]]; then
  python -c "from tagger.settings import TagwatchSettings as S; from tagger.tracking import configure_mlflow as c; c(S())" \
    2>>"$STACK_LOG.mlflow-init" || { echo "error: cannot create the MLflow store $TAGWATCH_MLFLOW_TRACKING_URI (see $STACK_LOG.mlflow-init)" >&2; exit 1; }
fi

# --- the model --------------------------------------------------------------------------
# the first run trains, registers version 1 in MLflow and makes it champion (tagger.train does
# both when there is no champion); a model already on disk but missing from the registry is
# registered as it is (not retrained); the predictor then serves models:/tagwatch@champion
need_model=""
if [ ! -f "$TAGWATCH_MODELS_DIR/LATEST" ]; then
  need_model="no model in $TAGWATCH_MODELS_DIR"
elif [ "${TAGWATCH_FOLLOW_REGISTRY:-true}" != false ]; then
  if versions="$(python -m lifecycle versions --json 2>/dev/null)"; then
    if ! grep -q '"champion"' <<<"$versions"; then
      echo "no champion in $TAGWATCH_MLFLOW_TRACKING_URI: registering the model on disk"
      python -m lifecycle register 2>>"$STACK_LOG.mlflow-init" \
        || { echo "error: registering the model failed (see $STACK_LOG.mlflow-init)" >&2; exit 1; }
    fi
  else
    echo "warning: MLflow ($TAGWATCH_MLFLOW_TRACKING_URI) unreachable: serving the cached model" >&2
  fi
fi
if [ -n "$need_model" ]; then
  echo "$need_model: training the default one (~15 s), registered as champion"
  python -m tagger.train --output "$TAGWATCH_MODELS_DIR" --quiet
fi

# --- secrets: random per install, never a fixed default (docs/runbook.md "Security") ------
bash "$STACK_ROOT/scripts/make-secrets.sh" "$STACK_VAR/secrets" >/dev/null
if [ -n "${STACK_FLEET:-}" ]; then
  # the cluster (once) and libpq's password file; honcho runs the server (Procfile `postgres`)
  bash "$STACK_ROOT/scripts/postgres.sh" init
fi
export TAGWATCH_API_TOKEN_FILE="${TAGWATCH_API_TOKEN_FILE:-$STACK_VAR/secrets/api_token}"
export TAGWATCH_LINK_SECRET_FILE="${TAGWATCH_LINK_SECRET_FILE:-$STACK_VAR/secrets/link_secret}"
# TAGWATCH_FEEDBACK_TOKEN_FILE, TAGWATCH_LIFECYCLE_TOKEN_FILE and TAGWATCH_ID_SECRET_FILE
# are exported by stack-env.sh (demo.sh's replay needs the first): the files written above,
# unless the caller set its own (checked here, before Alertmanager's config names one of them)
for secret_file in "$TAGWATCH_FEEDBACK_TOKEN_FILE" "$TAGWATCH_LIFECYCLE_TOKEN_FILE" "$TAGWATCH_ID_SECRET_FILE"; do
  [ -r "$secret_file" ] || { echo "error: cannot read $secret_file (a TAGWATCH_*_FILE setting)" >&2; exit 1; }
done

# --- configuration ----------------------------------------------------------------------
python -m alerting render-config --output "$STACK_VAR/alertmanager/alertmanager.yml"
# Prometheus runs a copy of prometheus/prometheus.yml with the ports of scripts/services.conf
# (STACK_DEMO_MAX_FOR, STACK_PROMETHEUS_INTERVAL: shorter for tests)
# (the fleet: the targets in file_sd files, where more replicas are one more line away)
python -m stack.config prometheus --output "$STACK_VAR/prometheus-config" \
  ${TAGWATCH_DEMO:+--demo --max-for "${STACK_DEMO_MAX_FOR:-1m}"} ${STACK_FLEET:+--file-sd} \
  ${STACK_PROMETHEUS_INTERVAL:+--interval "$STACK_PROMETHEUS_INTERVAL"} >/dev/null
export TAGWATCH_PROMETHEUS_CONFIG="${TAGWATCH_PROMETHEUS_CONFIG:-$STACK_VAR/prometheus-config/prometheus.yml}"
if [ -n "${TAGWATCH_DEMO:-}" ]; then
  export TAGWATCH_BIN_SIZE="${TAGWATCH_BIN_SIZE:-1min}"
  export TAGWATCH_CRON="${TAGWATCH_CRON:-* * * * *}"
  export TAGWATCH_WINDOW_DAYS="${TAGWATCH_WINDOW_DAYS:-1}"
  export TAGWATCH_RUN_ON_START="${TAGWATCH_RUN_ON_START:-true}"
fi
promtool check config "$TAGWATCH_PROMETHEUS_CONFIG" >/dev/null
amtool check-config "$STACK_VAR/alertmanager/alertmanager.yml" >/dev/null

# --- start ------------------------------------------------------------------------------
echo "starting the tagwatch stack ($mode mode)"
: > "$STACK_LOG"
# the services of services.conf (STACK_SERVICES_FILE may name a subset of the Procfile)
names=()
for entry in "${STACK_SERVICES[@]}"; do names+=("${entry%%|*}"); done
setsid honcho --no-colour -f "$STACK_ROOT/Procfile" -d "$STACK_ROOT" start "${names[@]}" \
  >>"$STACK_LOG" 2>&1 < /dev/null &
echo $! > "$STACK_PID_FILE"

deadline=$((SECONDS + ${TAGWATCH_UP_TIMEOUT:-120}))
fail() {  # message: stop what started, say why, exit
  echo "error: $1" >&2
  "$STACK_ROOT/scripts/down.sh" >/dev/null || true
  exit 1
}
for check in "${STACK_CHECKS[@]}"; do
  name="${check%%|*}"
  url="${check#*|}"
  same=0
  last=""
  # exit 0: up; 3: answered "not ready" with a reason (printed); else: not answering yet
  until reason="$(python - "$url" <<'PY' 2>/dev/null
import json, socket, sys, urllib.error, urllib.request
url = sys.argv[1]
if url.startswith(("smtp://", "tcp://")):
    host, port = url.split("://", 1)[1].split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
    sys.exit(0)
try:
    with urllib.request.urlopen(url, timeout=2) as r:
        body = r.read()
    # ready, with warnings (the predictor serving the last good model): said, not a failure
    try:
        print("; ".join(json.loads(body).get("warnings", [])))
    except (ValueError, AttributeError):
        pass
except urllib.error.HTTPError as e:
    try:
        body = json.loads(e.read())
        print("; ".join(body.get("problems") or [body.get("status", "")]))
    except ValueError:
        print(f"HTTP {e.code}")
    sys.exit(3)
PY
)"; do
    status=$?
    if [ $status = 3 ] && [ -n "$reason" ]; then
      # the process answers and states its problem: the same reason 3 s in a row is permanent
      if [ "$reason" = "$last" ]; then same=$((same + 1)); else same=0; last="$reason"; fi
      if [ $same -ge 3 ]; then
        fail "$name is not ready: $url says: $reason"
      fi
    fi
    if ! stack_running; then
      echo "$name exited before it answered $url; last lines of $STACK_LOG:" >&2
      tail -n 30 "$STACK_LOG" >&2
      fail "$name did not come up"
    fi
    if [ $SECONDS -gt $deadline ]; then
      echo "last lines of $STACK_LOG:" >&2
      tail -n 30 "$STACK_LOG" >&2
      fail "$name did not come up within ${TAGWATCH_UP_TIMEOUT:-120} s ($url${last:+: $last})"
    fi
    sleep 1
  done
  echo "  $name up"
  if [ -n "$reason" ]; then echo "  warning: $name: $reason" >&2; fi
done
print_urls
