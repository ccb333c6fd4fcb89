# One image for the four services; the command picks the service, e.g.
#   docker run mlfleet uvicorn --factory services.gateway.app:create_app --host 0.0.0.0 --port 8080
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlfleet ./mlfleet
COPY services ./services
COPY deploy ./deploy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 mlfleet
COPY --from=build /install /usr/local
WORKDIR /app
ENV MLFLEET_HOME=/var/lib/mlfleet PYTHONUNBUFFERED=1
RUN mkdir -p /var/lib/mlfleet && chown mlfleet /var/lib/mlfleet
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT','8080'), timeout=2)"
CMD ["uvicorn", "--factory", "services.gateway.app:create_app", "--host", "0.0.0.0", "--port", "8080"]
