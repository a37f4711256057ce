# syntax=docker/dockerfile:1
# One image for every Zhongtai component; the command selects the process:
#   docker run IMAGE customer | product | data_hub | gateway | relay --service NAME | migrate
#
# Build from the repository root AFTER `make proto` (generated code in gen/ is not
# committed, and codegen needs Maven for one proto jar, so it runs outside the image):
#   make proto && docker build -t zhongtai:0.1.0 .
# Pin the base by digest in your registry mirror for byte-reproducible builds:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- build stage ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies in their own layer: only pyproject.toml and constraints.txt invalidate it.
# The runtime dependency list comes from pyproject.toml; constraints.txt pins every version.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -c constraints.txt -r requirements.txt \
 && pip check \
 && python -m compileall -q /opt/venv > /dev/null

# Application code and the pre-generated protobuf modules (gen/, from `make proto`).
COPY services/ /app/services/
COPY gateway/ /app/gateway/
COPY gen/ /app/gen/
# The data hub's trained scores (zhongtai models train), baked in: ZT_DATAHUB_MODEL_PATH (docs/adr/0020).
COPY models/ /app/models/
# Fail the build, not the pod: every component and its run-time files must be in the image
# (Alembic migrations live in services/<name>/migrations, the docs page in gateway/static).
# devtools/ is not copied: only `zhongtai demo-data` imports it (lazily) and it is dev tooling.
RUN test -d /app/gen/bank \
      || { echo "gen/ is empty: run 'make proto' before 'docker build'" >&2; exit 1; } \
 && for s in customer product data_hub; do test -f /app/services/$s/migrations/env.py || exit 1; done \
 && test -f /app/gateway/static/docs.html \
 && test -f /app/models/scores.json \
 && python -m compileall -q /app \
 && PYTHONPATH=/app:/app/gen python -c "import services.cli, grpc_health.v1.health_pb2, services.customer.main, services.product.main, services.data_hub.main, gateway.main"

# -------------------------------------------------------------- runtime stage ----
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="zhongtai" \
      org.opencontainers.image.description="Zhongtai middle platform: customer, product, data_hub, gateway, relay, migrate" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    ZT_GRPC_HOST=0.0.0.0 \
    ZT_HTTP_HOST=0.0.0.0
# A fixed numeric user: Kubernetes runAsNonRoot can only verify numeric ids.
RUN groupadd --system --gid 10001 zhongtai \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin zhongtai
# Root-owned and read-only for the runtime user; the only writable place is /tmp.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# gRPC customer/product/data_hub, HTTP gateway, Prometheus metrics (ZT_METRICS_PORT).
EXPOSE 50051 50052 50053 8080 9464
# No HEALTHCHECK: Kubernetes ignores it; the chart uses native gRPC/HTTP probes.
ENTRYPOINT ["python", "-m", "services.cli"]
CMD ["gateway"]
