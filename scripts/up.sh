#!/usr/bin/env bash
# `make up`: the tagwatch stack on this machine without Docker (honcho + Procfile), in the
# background. Installs what is missing, trains the model if there is none, waits until every
# process answers, prints the URLs. `make down` stops it. TAGWATCH_DEMO=1: the demo settings
# (1-minute drift bins judged every minute, alert `for:` of the quality/drift alerts shortened).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"
cd "$STACK_ROOT"
mode="${TAGWATCH_DEMO:+demo}"
mode="${mode:-normal}"

for pid_file in "${STACK_PID_FILES[@]}"; do
  if stack_running "$pid_file"; then
    if [ "$pid_file" = "$STACK_PID_FILE" ]; then
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
if ! "$VENV/bin/python" -c "import exporter.app, drift, alerting.mailsink, honcho, aiosmtpd" 2>/dev/null; then
  echo "installing tagwatch into $VENV"
  "$VENV/bin/pip" install --quiet -e "$STACK_ROOT[dev]"
fi
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
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

mkdir -p "$STACK_VAR"/{run,log,mail,alertmanager/data,prometheus} "$TAGWATCH_STATE_DIR" "$STACK_REPORTS"

# --- the model --------------------------------------------------------------------------
if [ ! -f "$TAGWATCH_MODELS_DIR/LATEST" ]; then
  echo "no model in $TAGWATCH_MODELS_DIR: training the default one (~15 s)"
  python -m tagger.train --output "$TAGWATCH_MODELS_DIR" --quiet
fi

# --- configuration ----------------------------------------------------------------------
python -m alerting render-config --output "$STACK_VAR/alertmanager/alertmanager.yml"
if [ "$mode" = demo ]; then
  python "$STACK_ROOT/scripts/demo_prometheus.py" --output "$STACK_VAR/prometheus-config"
  export TAGWATCH_PROMETHEUS_CONFIG="$STACK_VAR/prometheus-config/prometheus.yml"
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
setsid honcho --no-colour -f "$STACK_ROOT/Procfile" -d "$STACK_ROOT" start >>"$STACK_LOG" 2>&1 < /dev/null &
echo $! > "$STACK_PID_FILE"

deadline=$((SECONDS + ${TAGWATCH_UP_TIMEOUT:-120}))
for check in "${STACK_CHECKS[@]}"; do
  name="${check%%|*}"
  url="${check#*|}"
  until python - "$url" <<'PY' 2>/dev/null
import socket, sys, urllib.request
url = sys.argv[1]
if url.startswith("smtp://"):
    host, port = url[7:].split(":")
    socket.create_connection((host, int(port)), timeout=2).close()
else:
    urllib.request.urlopen(url, timeout=2)
PY
  do
    if ! stack_running || [ $SECONDS -gt $deadline ]; then
      echo "error: $name did not come up ($url); last lines of $STACK_LOG:" >&2
      tail -n 30 "$STACK_LOG" >&2
      "$STACK_ROOT/scripts/down.sh" >/dev/null || true
      exit 1
    fi
    sleep 1
  done
  echo "  $name up"
done
print_urls
