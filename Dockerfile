# authserver on python:3.11-slim. Used by docker-compose.yml (app + PostgreSQL 16).
#
# migrations/ and templates/ sit at the top of the repository and the package finds them
# relative to itself, so the source tree stays in /app and the install is editable.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY authserver ./authserver
COPY migrations ./migrations
COPY templates ./templates
RUN pip install -c constraints.txt -e . \
 && useradd --system --uid 10001 --home-dir /data --create-home authserver

# Runs unprivileged; the working directory holds the SQLite default if no database URL is set.
USER authserver
WORKDIR /data
EXPOSE 8000
CMD ["authserver", "serve", "--host", "0.0.0.0", "--proxy-headers"]
