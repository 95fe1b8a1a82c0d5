#!/usr/bin/env bash
# `make demo`: the local stack in demo mode, then a replay of real questions — a few hundred
# from late 2011 (the training period: all green), then 2019-2020 (real data and concept drift).
# Ends when the drift and quality alert emails are in the sink (var/demo/mail), or after a
# timeout, then sends the weekly summary once (var/demo/reports/weekly) and lists the mails.
# The drift bins are one minute long: the 2011 questions are sent alone in one minute, the
# 2019-2020 ones from the next, so that no bin mixes the two periods.
set -euo pipefail
export TAGWATCH_DEMO=1
source "$(dirname "${BASH_SOURCE[0]}")/stack-env.sh"
cd "$STACK_ROOT"

# The demo shows the alert emails first, then the retrain (by hand, at the end): a retrain fired
# by the webhook at the first DataDriftDetected promotes a new version at once, the drift job then
# judges that version against its own baseline, and the drift alert resolves before Alertmanager
# sends its email. DEMO_WEBHOOK=1 keeps the webhook (the retrain fires from the alerts).
if [ -z "${DEMO_WEBHOOK:-}" ]; then
  export TAGWATCH_LIFECYCLE_WEBHOOK_URL=""
fi
RATE="${DEMO_RATE:-25}"
TIMEOUT="${DEMO_ALERT_TIMEOUT:-600}"

# a fresh demo every time: stop whatever stack runs, forget the previous demo's state
"$STACK_ROOT/scripts/down.sh"
case "$STACK_VAR" in
  "$STACK_ROOT"/var/*) rm -rf "$STACK_VAR" ;;
  *) echo "error: refusing to wipe STACK_VAR=$STACK_VAR (not under $STACK_ROOT/var)" >&2; exit 1 ;;
esac
# the demo's retrain promotes a new version: it works on a copy of models/, so the model that
# `make up` serves is never changed by a demo
export TAGWATCH_MODELS_DIR="$STACK_VAR/models"
mkdir -p "$STACK_VAR"
cp -a "$STACK_ROOT/models" "$TAGWATCH_MODELS_DIR"
"$STACK_ROOT/scripts/up.sh"
start_mails=0

next_minute() {  # wait for the start of the next wall-clock minute (a new 1-minute drift bin)
  sleep $((60 - $(date -u +%-S) + 1))
}

echo
# the replay sends the feedback token make up wrote: /feedback needs it, and it exempts the
# replay (one address, $RATE requests a second) from the predictor's per-address rate limit
echo "== 1/3 replay: late 2011, the model's own period, alone in its 1-minute bin (expect green) =="
next_minute
python -m exporter.replay --since 2011-10-01 --until 2012-01-01 --limit "${DEMO_EARLY:-300}" \
  --speed 86400 --max-gap 0.5 --rate "$RATE" --feedback-delay 2 --feedback-token-file "$TAGWATCH_FEEDBACK_TOKEN_FILE"
next_minute
echo
echo "== 2/3 replay: 2019-2020 (expect data drift, concept drift, lower quality) =="
python -m exporter.replay --since 2019-01-01 --every "${DEMO_EVERY:-4}" \
  --speed 86400 --max-gap 0.5 --rate "$RATE" --feedback-delay 2 --feedback-token-file "$TAGWATCH_FEEDBACK_TOKEN_FILE"

echo
echo "== 3/3 waiting up to ${TIMEOUT}s for the drift and quality alert emails in $STACK_VAR/mail =="
python - "$STACK_VAR/mail" "$TIMEOUT" "$start_mails" <<'PY'
import sys, time
from pathlib import Path
from email import message_from_bytes, policy

mail_dir, timeout, skip = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
wanted = {
    "drift": ("DataDriftDetected",),
    "quality": ("JaccardLow", "TagCoverageLow", "ConceptDriftSuspected", "InputOOVRatioHigh"),
    # the words and new tags behind them (posted by the drift process: drift/notify.py)
    "what changed": ("DriftExplained",),
}
deadline = time.monotonic() + timeout
while True:
    files = sorted(mail_dir.glob("*.eml"))[skip:]
    texts = [f.read_bytes().decode("utf-8", "replace") for f in files]
    found = {k: any(a in t for t in texts for a in names) for k, names in wanted.items()}
    if all(found.values()) or time.monotonic() > deadline:
        break
    time.sleep(5)
named = []
for f in files:
    msg = message_from_bytes(f.read_bytes(), policy=policy.default)
    print(f"  {f.name}: {msg['Subject']}")
    body = msg.get_body(preferencelist=("plain",))
    named += [line for line in (body.get_content() if body else "").splitlines()
              if line.startswith("What changed: The questions changed")]
if named:
    print(f"what the drift emails name:\n  {named[-1].removeprefix('What changed: ')}")
missing = [k for k, ok in found.items() if not ok]
if missing:
    print(f"no {' and '.join(missing)} alert email after {timeout:.0f} s: see the logs", file=sys.stderr)
    sys.exit(1)
print("drift and quality alert emails received")
PY

echo
echo "== the retrain: fired by the alerts through Alertmanager's webhook (or now, by hand) =="
# the lifecycle service retrains when DataDriftDetected / JaccardLow reach its webhook; its
# summary line holds the Jaccard of the 2011 champion and of the challenger on the same, latest
# labelled questions (before -> after)
if ! python - "http://127.0.0.1:${STACK_PORT_LIFECYCLE:-8003}" "${DEMO_RETRAIN_WAIT:-$([ -n "${DEMO_WEBHOOK:-}" ] && echo 180 || echo 0)}" <<'PY'
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        health = json.load(urllib.request.urlopen(f"{url}/healthz", timeout=5))
    except OSError:
        health = {}
    last = health.get("last") or {}
    if last.get("line") and not health.get("retrain_running"):
        print(f"retrain fired by {last.get('source')}:\n  {last['line']}")
        sys.exit(0)
    time.sleep(5)
print("no retrain from the webhook yet: retraining now (POST /retrain)")
sys.exit(1)
PY
then
  # through the lifecycle service (POST /retrain), so that its metrics, Prometheus and the weekly
  # summary below see the retrain like one fired by the webhook
  # with the lifecycle's bearer token (from a file: printf is a builtin, the token stays out of ps)
  curl -fsS -XPOST -H @<(printf 'Authorization: Bearer %s\n' "$(cat "${TAGWATCH_LIFECYCLE_TOKEN_FILE:-$STACK_VAR/secrets/lifecycle_token}")") \
    "http://127.0.0.1:${STACK_PORT_LIFECYCLE:-8003}/retrain" && echo
  python - "http://127.0.0.1:${STACK_PORT_LIFECYCLE:-8003}" 300 <<'PY' || echo "the retrain did not finish: see $STACK_VAR/log/stack.log"
import json, sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    health = json.load(urllib.request.urlopen(f"{url}/healthz", timeout=5))
    last = health.get("last") or {}
    if last.get("source") == "manual" and last.get("line") and not health.get("retrain_running"):
        print(f"retrain ({last['outcome']}):\n  {last['line']}")
        sys.exit(0)
    time.sleep(3)
sys.exit(1)
PY
  sleep "${DEMO_SCRAPE_WAIT:-20}"  # one Prometheus scrape of the lifecycle's metrics, then the summary
fi

echo
echo "== weekly summary (sent once now) =="
TAGWATCH_REPORTS_DIR="$STACK_REPORTS/weekly" python -m alerting run-once || echo "weekly summary failed: see above"
echo
print_urls
cat <<NEXT
What to look at:
  - Prometheus alerts: $(stack_page_url "$STACK_PORT_PROMETHEUS" /alerts) (DataDriftDetected, JaccardLow, ...)
  - the emails: ls ${STACK_VAR#"$STACK_ROOT"/}/mail; each .eml opens in a mail client (or less)
  - the drift report: http://127.0.0.1:$STACK_PORT_DRIFT/reports/latest.html (Summary: effect
    size per feature; the 2011 bin green or nearly, the 2019-2020 bins red)
  - the weekly summary: ${STACK_REPORTS#"$STACK_ROOT"/}/weekly/
  - the runbook: http://127.0.0.1:$STACK_PORT_DRIFT/docs/runbook.md
\`make down\` stops the stack; ${STACK_VAR#"$STACK_ROOT"/} keeps the demo's store, mails and reports.
NEXT
