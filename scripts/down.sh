#!/usr/bin/env bash
# `make down`: stop the local stack started by scripts/up.sh or demo.sh (honcho's process group
# only: up.sh started honcho with setsid, so its group is the stack and nothing else).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"

stopped=0
for pid_file in "${STACK_PID_FILES[@]}"; do
  if ! stack_running "$pid_file"; then
    rm -f "$pid_file"
    continue
  fi
  pid="$(cat "$pid_file")"
  echo "stopping the tagwatch stack (honcho pid $pid, state in $(dirname "$(dirname "$pid_file")"))"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "still running after 30 s: SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  stopped=1
done
if [ "$stopped" = 1 ]; then
  echo "stopped (data kept in var/, models in $TAGWATCH_MODELS_DIR)"
else
  echo "tagwatch stack not running"
fi
