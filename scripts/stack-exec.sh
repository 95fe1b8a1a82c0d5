#!/usr/bin/env bash
# Run a command in the local stack's environment (ports of scripts/services.conf, TAGWATCH_*
# URLs, store, state), e.g. the weekly summary now:
#   bash scripts/stack-exec.sh python -m alerting run-once
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"
cd "$STACK_ROOT"
export TAGWATCH_REPORTS_DIR="${TAGWATCH_REPORTS_DIR:-$STACK_REPORTS/weekly}"
exec "$@"
