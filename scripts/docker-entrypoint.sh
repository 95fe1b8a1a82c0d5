#!/bin/sh
# Container entry point: train the model at first start if the models volume has none, then
# run the command. Only the service with TAGWATCH_TRAIN_IF_MISSING=1 (the predictor) trains;
# the others wait for it through docker-compose's depends_on/service_healthy.
set -eu

models="${TAGWATCH_MODELS_DIR:-/var/lib/tagwatch/models}"
data="${TAGWATCH_DATA_DIR:-/data}"
titles="$data/${TAGWATCH_TITLES_FILE:-stackoverflow_titles_2008_2020.csv.gz}"

if [ ! -f "$models/LATEST" ]; then
    if [ "${TAGWATCH_TRAIN_IF_MISSING:-0}" = "1" ]; then
        if [ ! -f "$titles" ]; then
            echo "tagwatch: no model in $models and no training data at $titles." >&2
            echo "tagwatch: mount the data folder read-only at $data (TAGWATCH_DATA_HOST_DIR)." >&2
            exit 2
        fi
        echo "tagwatch: no model in $models: training one from $titles (first start only)"
        python -m tagger.train --data "$titles" --output "$models" --quiet
    else
        echo "tagwatch: warning: no model in $models yet (the predictor trains it at first start)" >&2
    fi
fi

# PostgreSQL store: the password comes from a secret file (TAGWATCH_STORE_PASSWORD_FILE), never
# from the URL or the environment. libpq (psycopg) reads it from a pgpass file that only this
# user can read (PGPASSFILE); the secret mount itself is world-readable, which libpq refuses.
if [ -n "${TAGWATCH_STORE_PASSWORD_FILE:-}" ]; then
    if [ -r "$TAGWATCH_STORE_PASSWORD_FILE" ]; then
        pgpass="$(umask 077 && mktemp "${TMPDIR:-/tmp}/tagwatch-pgpass.XXXXXX")"
        # pgpass format host:port:db:user:password, with ':' and '\' escaped
        printf '*:*:*:*:%s\n' "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$TAGWATCH_STORE_PASSWORD_FILE" | head -n 1)" > "$pgpass"
        export PGPASSFILE="$pgpass"
    else
        echo "tagwatch: warning: TAGWATCH_STORE_PASSWORD_FILE=$TAGWATCH_STORE_PASSWORD_FILE is not readable" >&2
    fi
fi

exec "$@"
