# authserver on python:3.11-slim, in two stages. Used by docker-compose.yml (replicas behind nginx).
#
# The builder makes a virtual environment in /opt/venv with every dependency (binary wheels, pinned
# by constraints.txt) and authserver itself. migrations/ and templates/ sit at the top of the
# repository and the package finds them relative to itself, so the source tree stays in /app and
# the install is editable; the final stage copies both to the same paths, and has no pip cache,
# no compilers and nothing else the build needed.
FROM python:3.11-slim AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY authserver ./authserver
COPY migrations ./migrations
COPY templates ./templates
RUN pip install --no-cache-dir -c constraints.txt -e .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    AUTHSERVER_HOME=/data

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/authserver-entrypoint
RUN groupadd --system --gid 10001 authserver \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --create-home authserver

# Runs unprivileged (numeric, so orchestrators can check it is not root); /data (AUTHSERVER_HOME) holds the SQLite default if no database URL is set.
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# docker stop sends SIGTERM: serve stops accepting, lets requests in flight finish for up to
# --timeout-graceful-shutdown seconds, and exits 0. Give the container longer than that before
# SIGKILL (docker-compose.yml: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
# The entrypoint turns AUTHSERVER_*_FILE and PGPASSWORD_FILE (Docker secrets) into the variables
# they name, then execs the command, so serve is PID 1 and receives the signal itself.
ENTRYPOINT ["/usr/local/bin/authserver-entrypoint"]
CMD ["authserver", "serve", "--host", "0.0.0.0", "--timeout-graceful-shutdown", "20"]
