# syntax=docker/dockerfile:1
#
# Coalition service image: one image for the API (`coalition serve`, the default),
# the worker (`coalition worker`) and migrations (`coalition migrate`).
#
#   docker build -t coalition .
#   docker run --rm -e DATABASE_URL=... -e REDIS_URL=... -p 8000:8000 coalition
#
# The project is installed as a regular (non-editable) wheel into /opt/venv in the
# builder stage; the runtime stage copies only that virtualenv, no source tree.

ARG PYTHON_IMAGE=python:3.11-slim

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

# (No PYTHONDONTWRITEBYTECODE here: pip precompiles the venv, which the non-root
# runtime user could not write to later.)
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# A compiler only for dependencies without a wheel for this platform (e.g. on arm64);
# it stays in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, read from pyproject.toml, so this layer is reused until they change.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself, as a wheel (not editable).
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install .

# Fail the build, not the first `coalition migrate`, if the wheel lacks the Alembic
# environment or revisions (package data is easy to lose with package-dir mappings).
RUN cd / && python -c "\
from alembic.script import ScriptDirectory; \
from coalition.platform.migrate import alembic_config; \
heads = ScriptDirectory.from_config(alembic_config('postgresql://build/check')).get_heads(); \
assert heads, 'no Alembic revisions in the installed package'; \
print('alembic heads:', heads)" \
 && coalition --help > /dev/null

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    COALITION_HOST=0.0.0.0 \
    COALITION_PORT=8000

RUN groupadd --system --gid 10001 coalition \
 && useradd --system --uid 10001 --gid coalition --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin coalition \
 && install -d -o coalition -g coalition /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER coalition:coalition

EXPOSE 8000

# Liveness only (the process answers); readiness (/health/ready: PostgreSQL + Redis) is
# checked by the orchestrator, see docker-compose.yml. urlopen raises on non-2xx -> exit 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]

CMD ["coalition", "serve", "--host", "0.0.0.0", "--port", "8000"]
