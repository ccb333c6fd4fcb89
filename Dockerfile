# One image for the four services; the command picks the service, e.g.
#   docker run -e PORT=8081 mlfleet uvicorn --factory services.registry.app:create_app --host 0.0.0.0 --port 8081
# Runs as a non-root user and works with a read-only root filesystem (state lives in
# MLFLEET_HOME, a volume; /tmp a tmpfs). Tracing: set OTEL_EXPORTER_OTLP_ENDPOINT.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlfleet ./mlfleet
COPY services ./services
COPY deploy/triton ./deploy/triton
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group mlfleet \
 && mkdir -p /var/lib/mlfleet && chown 10001:10001 /var/lib/mlfleet
COPY --from=build /install /usr/local
WORKDIR /app
ENV MLFLEET_HOME=/var/lib/mlfleet PORT=8080 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
VOLUME ["/var/lib/mlfleet"]
EXPOSE 8080 8081 8082 8083
HEALTHCHECK --interval=10s --timeout=2s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=2)"]
CMD ["uvicorn", "--factory", "services.gateway.app:create_app", "--host", "0.0.0.0", "--port", "8080", "--no-access-log", "--no-server-header", \
     "--timeout-graceful-shutdown", "10", "--http", "services.gateway.http_protocol:CoalescingHttpToolsProtocol"]
