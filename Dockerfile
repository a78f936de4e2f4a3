# syntax=docker/dockerfile:1.7
# kallglot-receiver: multi-stage build. Stage 1 builds wheels for the package and every dependency;
# stage 2 installs them offline into a slim Python 3.11 image that runs as a non-root user and
# works with a read-only root filesystem (only /data, SQLite's directory, needs to be writable).
#
#   docker build -t kallglot-receiver --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --read-only --tmpfs /tmp -v receiver-data:/data -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -e KALLGLOT_API_KEY=sk_test_… -e KALLGLOT_WEBHOOK_SECRETS=… kallglot-receiver
#
# Reproducible: the base image is pinned by digest (the multi-architecture index of
# python:3.11.15-slim-bookworm; bump tag and digest together) and every dependency by version and
# hash in requirements.lock (`bash .ci/lock` regenerates it; CI fails when it is stale).

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY receiver ./receiver
COPY handlers ./handlers
# Dependencies exactly as locked (hash-checked), then the package itself without resolving again.
RUN pip wheel --require-hashes --wheel-dir /wheels -r requirements.lock \
 && pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="kallglot-receiver" \
      org.opencontainers.image.description="Turns ended phone calls into delivered Kallglot call analyses" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kallglot/kallglot-receiver" \
      org.opencontainers.image.url="https://github.com/kallglot/kallglot-receiver" \
      org.opencontainers.image.documentation="https://github.com/kallglot/kallglot-receiver/blob/main/docs/deployment.md" \
      org.opencontainers.image.vendor="Kallglot"

# No .pyc writes (the root filesystem is read-only), unbuffered logs, SQLite on the data volume.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECEIVER_DATABASE_URL=sqlite:////data/receiver.db

RUN groupadd --system --gid 10001 receiver \
 && useradd --system --uid 10001 --gid receiver --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin receiver \
 && mkdir -p /data \
 && chown receiver:receiver /data

# Install the first stage's wheels only (no compiler, no network, no resolver, no wheel left in a
# layer), check them for consistency, then drop the packaging tools: nothing for development stays.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
 && pip check \
 && kallglot-receiver --help > /dev/null \
 && python -m pip uninstall --yes setuptools wheel pip

# The only writable place the service needs; `serve --sandbox` writes ./data/ here too.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
# 8080: the public webhooks; 9090: /metrics, /admin and the console (keep it private).
EXPOSE 8080 9090

HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

# Exec form: the service is PID 1 and receives SIGTERM itself (no shell in between); uvicorn stops
# accepting, the workers drain for RECEIVER_SHUTDOWN_GRACE_SECONDS, then it exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["kallglot-receiver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
