"""manifest.json of the face stack: what each ONNX file is, where it came from, its checks.

The manifest doubles as the build cache: a folder whose manifest has the current build key
and whose files all still have their recorded sha256 is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def onnx_io_spec(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX file: name, shape (symbolic dims as names), dtype."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def describe(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            tt = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tt.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            out.append({"name": v.name, "shape": shape, "dtype": dtype})
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("models"), list) else None


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = out_dir / MANIFEST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a manifest
    return path


def entry_is_intact(out_dir: Path, entry: dict[str, Any]) -> bool:
    path = out_dir / str(entry.get("file", ""))
    return path.is_file() and sha256_file(path) == entry.get("sha256")


def cached_entries(out_dir: Path, build_key: str) -> dict[str, dict[str, Any]] | None:
    """Entries by name when the folder holds an intact build for `build_key`, else None."""
    manifest = read_manifest(out_dir)
    if manifest is None or manifest.get("build_key") != build_key:
        return None
    entries = {str(e.get("name")): e for e in manifest["models"]}
    if not all(entry_is_intact(out_dir, e) for e in entries.values()):
        return None
    return entries
