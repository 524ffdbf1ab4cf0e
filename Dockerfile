# The executor image: edgecrew's warm Prefect worker (executor/worker.py) with the crews
# baked in. Tag it per release; `compose.yaml` runs one per work pool.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CREWAI_DISABLE_TELEMETRY=true \
    OTEL_SDK_DISABLED=true \
    DO_NOT_TRACK=1 \
    EDGECREW_EXECUTOR_DIR=/app \
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30

WORKDIR /app
COPY pyproject.toml README.md prefect.yaml prefect-ingest.yaml edgecrew.toml ./
COPY shared ./shared
COPY edge ./edge
COPY executor ./executor
# The crews edgecrew.toml names. Your own: `pip install` your crew project here (its
# dependencies and tools come with it), or COPY it and give its folder as `path`.
COPY examples/crews ./examples/crews
RUN pip install '.[executor]' \
    && useradd --create-home --uid 10001 worker
USER worker
ENV EDGECREW_CONFIG=/app/edgecrew.toml

# The pool comes from the command (compose passes --pool gpu or --pool cpu). On SIGTERM
# (a rolling update) it stops claiming runs and lets running crews finish for up to
# --drain-seconds; give the container a stop grace period at least that long.
EXPOSE 8080
HEALTHCHECK CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health')"]
ENTRYPOINT ["edgecrew-worker", "--healthcheck-host", "0.0.0.0", "--healthcheck-port", "8080"]
CMD ["--pool", "cpu"]
