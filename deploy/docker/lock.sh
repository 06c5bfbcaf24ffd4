#!/usr/bin/env bash
# Regenerate deploy/docker/locks/<image>.txt: every dependency of one image pinned with the
# sha256 of every wheel PyPI has for it, for the image's Python and platform (uv pip compile).
# Run through `make deploy-lock` (it installs the pinned uv into .venv-lock).
#
# The CUDA images take torch (and triton, and the nvidia-* CUDA libraries it depends on) from
# the PyTorch index of their CUDA version, which this lock cannot reach: those packages are
# left out here (--no-emit-package) and installed first, by version, from TORCH_INDEX_URL.
# Where that index is reachable, add `--extra-index-url $TORCH_INDEX_URL
# --index-strategy unsafe-best-match` and drop the exclusions to lock them too.
#
# TESTED (optional): a constraints file of the versions the test suite ran with (`make
# deploy-lock` writes it from the project's .venv), so the images run what was tested.
set -euo pipefail
UV=${UV:-.venv-lock/bin/uv}
TESTED=${TESTED:-}
OUT=deploy/docker/locks
export UV_NO_CONFIG=1
mkdir -p "$OUT"

compile() {  # name python extras [extra uv args...]
  local name=$1 python=$2 extras=$3; shift 3
  local args=()
  for e in ${extras//,/ }; do args+=(--extra "$e"); done
  if [ -n "$TESTED" ]; then args+=(--constraint "$TESTED"); fi
  "$UV" pip compile pyproject.toml "${args[@]}" "$@" \
    --generate-hashes --python-version "$python" --python-platform x86_64-manylinux_2_28 \
    --index-url https://pypi.org/simple --no-header --emit-index-url --quiet -o "$OUT/$name.txt"
}

# torch, triton and every nvidia-* package torch from PyPI would bring.
no_cuda=(--no-emit-package torch --no-emit-package triton)
for pkg in nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 \
  nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 \
  nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx; do
  no_cuda+=(--no-emit-package "$pkg")
done

compile gateway 3.11 gateway
compile retention 3.11 retention
compile filter 3.12 filter,gpu
compile generator 3.12 generator "${no_cuda[@]}"
compile trainer 3.12 trainer,gpu "${no_cuda[@]}"
# Anything torch-shaped left in a lock means the exclusions above are out of date.
if grep -lE '^(torch|triton|nvidia-)' "$OUT"/*.txt; then
  echo "a lock still pins torch/triton/nvidia-*: update no_cuda in $0" >&2
  exit 1
fi
