# syntax=docker/dockerfile:1.7
# CUDA images: trainer, generator and filter (one image per service, one target each).
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/cuda.Dockerfile --target trainer   -t REGISTRY/headshots/trainer:TAG .
#   docker build -f deploy/docker/cuda.Dockerfile --target generator -t REGISTRY/headshots/generator:TAG .
#   docker build -f deploy/docker/cuda.Dockerfile --target filter    -t REGISTRY/headshots/filter:TAG .
# CUDA: torch's wheel (TORCH_INDEX_URL, cu128) and onnxruntime-gpu must match the base image's
# CUDA major version, and the nodes' driver must support it (CUDA 12.8 needs driver >= 570).
# Each image carries its own dependency group from its hashed lock (deploy/docker/locks): the
# filter has no torch at all; torch and its nvidia-* libraries come from the PyTorch index by
# version (the lock step cannot reach that index; deploy/README.md, "Images").
# Base image: a release tag here; release builds pin it by digest with
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04@sha256:<digest>
# Ubuntu 24.04's Python is 3.12 (pyproject allows >=3.11,<3.13). Models are never baked in.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

############################ build: one virtualenv per image, from its lock ############################
FROM ${CUDA_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive

# Compilers and headers live only in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev \
      build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY --chown=root:root deploy/docker/locks/ locks/

# filter: the ONNX face stack on onnxruntime-gpu (CUDA and cuDNN from the base image); no torch.
FROM build AS deps-filter
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r locks/filter.txt \
 && /opt/venv/bin/python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()" \
 && /opt/venv/bin/pip uninstall -y pip

# torch from the PyTorch CUDA index first (with the nvidia-* libraries it needs); then the
# rest of the group from the lock, hash-checked, without resolving anything again.
FROM build AS deps-torch
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0

FROM deps-torch AS deps-generator
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --require-hashes --no-deps -r locks/generator.txt \
 && /opt/venv/bin/python -c "import torch; assert torch.version.cuda, 'CPU torch in a CUDA image'" \
 && /opt/venv/bin/pip uninstall -y pip

FROM deps-torch AS deps-trainer
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --require-hashes --no-deps -r locks/trainer.txt \
 && /opt/venv/bin/python -c "import onnxruntime as o, torch; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers(); assert torch.version.cuda, 'CPU torch in a CUDA image'" \
 && /opt/venv/bin/pip uninstall -y pip

############################ runtime: shared by every GPU service ############################
FROM ${CUDA_IMAGE} AS runtime

ENV DEBIAN_FRONTEND=noninteractive
# Only the interpreter (the venv links to it) and OpenMP; no compilers, no headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libgomp1 \
 && rm -rf /var/lib/apt/lists/*

ENV PATH=/opt/venv/bin:/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/bin:/usr/bin:/bin \
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

# Each target below adds its own virtualenv at /opt/venv.
WORKDIR /app
COPY --chown=root:root headshots/ headshots/
COPY --chown=root:root services/ services/
COPY --chown=root:root models/ models/
COPY --chown=root:root deploy/docker/healthcheck.py /usr/local/lib/headshots/healthcheck.py
RUN python -m compileall -q /app /usr/local/lib/headshots

VOLUME ["/models"]
USER 10001:10001
# Docker and Compose use this; Kubernetes ignores it and uses native gRPC probes instead.
# The start period covers loading a base model from the volume.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "/usr/local/lib/headshots/healthcheck.py"]

############################ one target per service ############################
FROM runtime AS trainer
COPY --from=deps-trainer --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=trainer HS_GRPC_PORT=50054
EXPOSE 50054 9090
CMD ["python", "-m", "services.trainer"]

FROM runtime AS generator
COPY --from=deps-generator --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=generator HS_GRPC_PORT=50052
EXPOSE 50052 9090
CMD ["python", "-m", "services.generator"]

FROM runtime AS filter
COPY --from=deps-filter --chown=root:root /opt/venv /opt/venv
ENV HS_SERVICE_NAME=filter HS_GRPC_PORT=50053
EXPOSE 50053 9090
CMD ["python", "-m", "services.filter"]
