# tagwatch: one image for the predictor, the drift job and the weekly summary (the command
# chooses). Slim, non-root; no data and no model inside: the model is trained at first start
# from the read-only data mount (/data) into the models volume (scripts/docker-entrypoint.sh).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# nginx in front of gunicorn absorbs slow clients (exporter/proxy.py); runs as the tagwatch user.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (cached while only the code changes): every one has a manylinux wheel.
COPY pyproject.toml README.md /src/
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

COPY tagger /src/tagger
COPY exporter /src/exporter
COPY drift /src/drift
COPY alerting /src/alerting
COPY store /src/store
COPY lifecycle /src/lifecycle
RUN pip install --no-deps /src && rm -rf /src

# the runbook the alert emails link to, served by the drift process at /docs/runbook.md
COPY docs/runbook.md /usr/local/share/tagwatch/runbook.md
COPY scripts/docker-entrypoint.sh /usr/local/bin/tagwatch-entrypoint
RUN chmod 0755 /usr/local/bin/tagwatch-entrypoint \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tagwatch --shell /usr/sbin/nologin tagwatch \
    && mkdir -p /var/lib/tagwatch/models /var/lib/tagwatch/store /var/lib/tagwatch/reports \
       /var/lib/tagwatch/var /var/lib/tagwatch/alertmanager /var/lib/tagwatch/mlflow \
       /var/lib/tagwatch/spool /data \
    && chown -R tagwatch:tagwatch /var/lib/tagwatch

# Paths inside the container; the named volumes of docker-compose.yml mount over them.
# (PROMETHEUS_MULTIPROC_DIR is set for the predictor only: other processes would write into it.)
ENV TAGWATCH_DATA_DIR=/data \
    TAGWATCH_MODELS_DIR=/var/lib/tagwatch/models \
    TAGWATCH_STORE_URL=sqlite:////var/lib/tagwatch/store/tagwatch.sqlite3 \
    TAGWATCH_HOST=0.0.0.0

USER 10001:10001
WORKDIR /var/lib/tagwatch
EXPOSE 8000 8001 8002 5000

HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD python -c "import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout=4)" \
        "http://127.0.0.1:${TAGWATCH_PORT:-8000}/healthz" || exit 1

ENTRYPOINT ["tagwatch-entrypoint"]
CMD ["python", "-m", "exporter", "serve"]
