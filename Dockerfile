# The executor image: a Prefect process worker with the crews baked in. Tag it per release
# and point the deployments at that tag; `compose.yaml` runs one per work pool.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CREWAI_DISABLE_TELEMETRY=true \
    OTEL_SDK_DISABLED=true \
    DO_NOT_TRACK=1 \
    EDGECREW_EXECUTOR_DIR=/app \
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 \
    PREFECT_WORKER_QUERY_SECONDS=1

WORKDIR /app
COPY pyproject.toml README.md prefect.yaml ./
COPY shared ./shared
COPY edge ./edge
COPY executor ./executor
RUN pip install '.[executor]' \
    && useradd --create-home --uid 10001 worker
USER worker

# The pool comes from the command (compose passes --pool gpu or --pool cpu).
ENTRYPOINT ["prefect", "worker", "start", "--type", "process"]
CMD ["--pool", "cpu"]
