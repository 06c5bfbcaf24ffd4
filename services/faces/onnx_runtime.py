"""The one place ONNX Runtime sessions are made: CUDA where a GPU is present, CPU otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def pick_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build has it (onnxruntime-gpu on a GPU node)."""
    available = ort.get_available_providers()
    return [CUDA, CPU] if prefer_gpu and CUDA in available else [CPU]


def create_session(
    path: Path | str,
    *,
    intra_op_threads: int = 0,
    prefer_gpu: bool = True,
) -> ort.InferenceSession:
    """Load one model. `intra_op_threads=0` lets onnxruntime use every core it sees."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads > 0:
        opts.intra_op_num_threads = intra_op_threads
    # One inference at a time per session: inter-op threads only add contention here.
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=pick_providers(prefer_gpu))
    log.debug("onnx session %s on %s", Path(path).name, session.get_providers())
    return session


def input_name(session: ort.InferenceSession) -> str:
    return session.get_inputs()[0].name
