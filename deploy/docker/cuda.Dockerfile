# syntax=docker/dockerfile:1.7
# CUDA images: trainer, generator and filter (one image per service, one target each).
# Build from the repository root (the context is filtered by /.dockerignore):
#   docker build -f deploy/docker/cuda.Dockerfile --target trainer   -t REGISTRY/headshots/trainer:TAG .
#   docker build -f deploy/docker/cuda.Dockerfile --target generator -t REGISTRY/headshots/generator:TAG .
#   docker build -f deploy/docker/cuda.Dockerfile --target filter    -t REGISTRY/headshots/filter:TAG .
# The CUDA wheel of torch must match the base image's CUDA major version and the nodes'
# driver (CUDA 12.8 needs driver >= 570 on the GPU nodes). Base images are pinned to an exact
# release tag; a release pipeline should additionally pin them by digest.
# Ubuntu 24.04's Python is 3.12 (pyproject allows >=3.11,<3.13). Models are never baked in.

############################ build: dependencies into /opt/venv ############################
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive

# Compilers and headers live only in this stage.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv python3.12-dev \
      build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY --chown=root:root pyproject.toml constraints-cpu.txt ./

# torch from the PyTorch CUDA index first; the constraints file pins torch==2.13.0, which the
# installed 2.13.0+cu128 satisfies, so resolving the project cannot swap it. The "gpu" extra
# brings onnxruntime-gpu (never together with onnxruntime: they overwrite each other).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
RUN --mount=type=cache,target=/root/.cache/pip \
    python3.12 -m venv /opt/venv \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
 && /opt/venv/bin/pip install -c constraints-cpu.txt ".[gpu]" \
 && /opt/venv/bin/pip uninstall -y headshots \
 && /opt/venv/bin/python -c "import onnxruntime as o, torch; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers(); assert torch.version.cuda, 'CPU torch in a CUDA image'" \
 && /opt/venv/bin/pip uninstall -y pip

############################ runtime: shared by every GPU service ############################
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS runtime

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
    HS_LOG_FORMAT=json

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin app

COPY --from=build --chown=root:root /opt/venv /opt/venv
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
ENV HS_SERVICE_NAME=trainer HS_GRPC_PORT=50054
EXPOSE 50054 9090
CMD ["python", "-m", "services.trainer"]

FROM runtime AS generator
ENV HS_SERVICE_NAME=generator HS_GRPC_PORT=50052
EXPOSE 50052 9090
CMD ["python", "-m", "services.generator"]

FROM runtime AS filter
ENV HS_SERVICE_NAME=filter HS_GRPC_PORT=50053
EXPOSE 50053 9090
CMD ["python", "-m", "services.filter"]
