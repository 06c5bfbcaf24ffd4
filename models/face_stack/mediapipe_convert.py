"""Convert MediaPipe .tflite models to ONNX (runs inside the conversion venv).

Steps per model: fold float16 weights to float32 (`tflite_fold`), convert with tflite2onnx
0.4.1, and run the *original* .tflite with the LiteRT interpreter on the check inputs so the
main build can compare the ONNX outputs against it. This module only needs what the
conversion venv has (numpy, tflite, tflite2onnx, ai-edge-litert), never the project's
runtime dependencies, which is why the comparison itself happens in the main venv.

Usage: python -m models.face_stack.mediapipe_convert JOB.json  (prints a JSON result line)
JOB.json: [{"name", "tflite", "onnx", "check_inputs", "reference_outputs"}, ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.face_stack.tflite_fold import fold_fp16


def convert_one(tflite_path: Path, onnx_path: Path) -> int:
    import tflite2onnx

    folded, count = fold_fp16(tflite_path.read_bytes())
    with tempfile.TemporaryDirectory() as tmp:
        folded_path = Path(tmp) / "folded.tflite"
        folded_path.write_bytes(folded)
        tflite2onnx.convert(str(folded_path), str(onnx_path))
    return count


def run_reference(tflite_path: Path, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the unmodified .tflite, one sample at a time (the models are batch 1)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs: dict[str, list[np.ndarray]] = {}
    for sample in inputs:
        interp.set_tensor(inp["index"], sample[None].astype(np.float32))
        interp.invoke()
        for det in interp.get_output_details():
            outs.setdefault(det["name"], []).append(interp.get_tensor(det["index"]).copy())
    return {name: np.concatenate(v) for name, v in outs.items()}


def main(argv: list[str]) -> int:
    jobs: list[dict[str, Any]] = json.loads(Path(argv[0]).read_text())
    results = []
    for job in jobs:
        folded = convert_one(Path(job["tflite"]), Path(job["onnx"]))
        reference = run_reference(Path(job["tflite"]), np.load(job["check_inputs"])["x"])
        np.savez(job["reference_outputs"], **reference)
        results.append({"name": job["name"], "folded_fp16_constants": folded})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
