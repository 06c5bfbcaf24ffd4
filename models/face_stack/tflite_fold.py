"""Fold float16 weights of a TFLite flatbuffer into float32 constants.

MediaPipe ships most of its models with half-precision weights: each weight is a FLOAT16
constant followed by a DEQUANTIZE op that widens it at run time. tflite2onnx 0.4.1 cannot
convert those DEQUANTIZE ops (its layout propagation fails on them), so we fold them before
conversion: each DEQUANTIZE whose input is a FLOAT16 constant is removed and its FLOAT32
output tensor gets the widened values as its own constant buffer. fp16 -> fp32 widening is
exact, so the folded model computes exactly what the original computes.

Why rewrite the flatbuffer rather than fix the ONNX graph afterwards: the conversion itself
fails on the unfolded graph, so there is no ONNX graph to fix.

Runs inside the conversion venv (needs `ai_edge_litert`, whose generated schema module has
the flatbuffers object API; the `tflite` package used by tflite2onnx has read accessors only).
"""

from __future__ import annotations

import numpy as np

# Numbers from the TFLite schema (schema.fbs): TensorType.FLOAT16 / FLOAT32, BuiltinOperator.
_FLOAT32 = 0
_FLOAT16 = 1
_DEQUANTIZE = 6


def _opcode(code: object) -> int:
    # Opcodes >= 127 live in `builtinCode`; older files only set `deprecatedBuiltinCode`.
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode))  # type: ignore[attr-defined]


def fold_fp16(data: bytes) -> tuple[bytes, int]:
    """Return (folded flatbuffer, number of folded DEQUANTIZE ops)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    folded = 0
    for sub in model.subgraphs:
        keep = []
        for op in sub.operators:
            if _opcode(model.operatorCodes[op.opcodeIndex]) == _DEQUANTIZE:
                src = sub.tensors[op.inputs[0]]
                dst = sub.tensors[op.outputs[0]]
                raw = model.buffers[src.buffer].data if src.buffer else None
                if src.type == _FLOAT16 and dst.type == _FLOAT32 and raw is not None:
                    values = np.frombuffer(bytes(np.asarray(raw, np.uint8)), np.float16)
                    buf = schema.BufferT()
                    buf.data = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
                    model.buffers.append(buf)
                    dst.buffer = len(model.buffers) - 1
                    # The half-precision copy is now unused: drop its bytes.
                    model.buffers[src.buffer].data = None
                    folded += 1
                    continue
            keep.append(op)
        sub.operators = keep
    builder = flatbuffers.Builder(len(data) * 2)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), folded
