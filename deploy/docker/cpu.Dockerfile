# syntax=docker/dockerfile:1.7
# CPU images: gateway and retention (one image per service, one target each). The trainer,
# generator and filter targets here are CPU builds for overlays/dev (a laptop cluster with tiny
# models); production builds those three from cuda.Dockerfile.
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/cpu.Dockerfile --target gateway   -t REGISTRY/headshots/gateway:TAG .
#   docker build -f deploy/docker/cpu.Dockerfile --target retention -t REGISTRY/headshots/retention:TAG .
#   docker build -f deploy/docker/cpu.Dockerfile --target generator -t headshots/generator:dev .   (dev)
# Each image carries only its own dependency group (pyproject.toml), installed from its lock
# (deploy/docker/locks/<image>.txt, every wheel's sha256, `make deploy-lock`): the gateway and
# retention images have no torch, diffusers or onnxruntime, and no image has the test tools.
# Base image: a release tag here; release builds pin it by digest with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>   (deploy/README.md, "Images")
# Models are never baked in: /models is a volume (a PersistentVolumeClaim in Kubernetes).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

############################ build: one virtualenv per image, from its lock ############################
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers live only in this stage: a dependency without a wheel for this platform builds
# from source here and only its installed result is copied on.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY --chown=root:root pyproject.toml constraints-cpu.txt ./
COPY --chown=root:root deploy/docker/locks/ locks/

# Exactly the locked wheels, each checked against its hash; nothing resolved at build time.
FROM build AS deps-gateway
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r locks/gateway.txt \
 && /opt/venv/bin/pip uninstall -y pip

FROM build AS deps-retention
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r locks/retention.txt \
 && /opt/venv/bin/pip uninstall -y pip

# Dev only: the GPU services on CPU. The CPU wheel of torch from the PyTorch CPU index keeps
# gigabytes of CUDA libraries out; the constraints file pins torch==2.13.0 so resolving the
# rest cannot swap it. Not locked (that index is outside what the lock step can reach).
FROM build AS deps-ml
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && /opt/venv/bin/pip install -c constraints-cpu.txt ".[trainer,generator,filter,cpu]" \
 && /opt/venv/bin/pip uninstall -y headshots \
 && /opt/venv/bin/pip uninstall -y pip

############################ runtime: shared by every CPU service ############################
FROM ${PYTHON_IMAGE} AS runtime

# Read-only root filesystem in Kubernetes: nothing may write bytecode or caches outside /tmp
# (an emptyDir). The hub is switched off: weights come from /models only.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HS_MODELS_DIR=/models \
    HS_GRPC_HOST=0.0.0.0 \
    HS_METRICS_PORT=9090 \
    HS_METRICS_HOST=0.0.0.0 \
    HS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin app

# Code belongs to root and is not writable by the service user; each target below adds its
# own virtualenv at /opt/venv.
WORKDIR /app
COPY --chown=root:root headshots/ headshots/
COPY --chown=root:root services/ services/
COPY --chown=root:root models/ models/
COPY --chown=root:root deploy/docker/healthcheck.py /usr/local/lib/headshots/healthcheck.py
# Bytecode compiled at build time, since the running container cannot write it.
RUN python -m compileall -q /app /usr/local/lib/headshots

VOLUME ["/models"]
USER 10001:10001
# Docker and Compose use this; Kubernetes ignores it and uses native gRPC probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/lib/headshots/healthcheck.py"]

############################ one target per service ############################
FROM runtime AS gateway
COPY --from=deps-gateway --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=gateway HS_GRPC_PORT=50051 HS_GATEWAY_HTTP_PORT=8080
EXPOSE 50051 8080 9090
CMD ["python", "-m", "services.gateway"]

FROM runtime AS retention
COPY --from=deps-retention --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=retention HS_GRPC_PORT=50055
EXPOSE 50055 9090
CMD ["python", "-m", "services.retention"]

# CPU builds of the GPU services, for overlays/dev only.
FROM runtime AS trainer
COPY --from=deps-ml --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=trainer HS_GRPC_PORT=50054
EXPOSE 50054 9090
CMD ["python", "-m", "services.trainer"]

FROM runtime AS generator
COPY --from=deps-ml --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=generator HS_GRPC_PORT=50052
EXPOSE 50052 9090
CMD ["python", "-m", "services.generator"]

FROM runtime AS filter
COPY --from=deps-ml --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=filter HS_GRPC_PORT=50053
EXPOSE 50053 9090
CMD ["python", "-m", "services.filter"]
