#!/usr/bin/env bash
# Random secrets for docker compose (secrets/) or the local stack (var/secrets/): never a fixed
# default. Existing files are kept. Usage: bash scripts/make-secrets.sh [dir] (default secrets/)
set -euo pipefail
dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/secrets}"
mkdir -p "$dir"
umask 077
random() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
for name in api_token link_secret grafana_admin_password smtp_password postgres_password \
  feedback_token lifecycle_token id_secret; do
  [ -s "$dir/$name" ] || { random > "$dir/$name"; echo "wrote $dir/$name"; }
done
# mailpit's UI login: user "tagwatch", the password in mailpit_ui_password, an htpasswd {SHA} line
if [ ! -s "$dir/mailpit_ui_auth" ]; then
  [ -s "$dir/mailpit_ui_password" ] || random > "$dir/mailpit_ui_password"
  python3 - "$dir" <<'PY'
import base64, hashlib, pathlib, sys
d = pathlib.Path(sys.argv[1])
pw = (d / "mailpit_ui_password").read_text().strip()
digest = base64.b64encode(hashlib.sha1(pw.encode()).digest()).decode()
(d / "mailpit_ui_auth").write_text(f"tagwatch:{{SHA}}{digest}\n")
PY
  echo "wrote $dir/mailpit_ui_auth (user tagwatch, password in $dir/mailpit_ui_password)"
fi
# compose mounts secret files into containers running as uid 10001 (tagwatch) or the images'
# own users: readable by them, still out of git (.gitignore) and of the environment
chmod 0644 "$dir"/api_token "$dir"/link_secret "$dir"/grafana_admin_password "$dir"/smtp_password \
  "$dir"/mailpit_ui_auth "$dir"/postgres_password "$dir"/feedback_token "$dir"/lifecycle_token \
  "$dir"/id_secret
