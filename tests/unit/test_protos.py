"""The wire contract: generated code is current, buf lint is clean, every public RPC has REST."""

from __future__ import annotations

import filecmp
import shutil
import sys
from pathlib import Path

from google.api import annotations_pb2

from headshots.v1 import headshots_pb2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gen_protos  # noqa: E402
import lint_protos  # noqa: E402


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    gen_protos.generate(tmp_path)
    fresh = tmp_path / "headshots" / "v1"
    committed = ROOT / "headshots" / "v1"
    names = sorted(p.name for p in fresh.glob("*.py*"))
    assert names == sorted(p.name for p in committed.glob("*.py*")), (
        "files differ: run `make protos`"
    )
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"stale generated code {mismatch + errors}: run `make protos`"
    )


def test_buf_lint_is_clean() -> None:
    result = lint_protos.lint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_catches_a_violation(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    bad = tmp_path / "protos" / "headshots" / "v1" / "headshots.proto"
    bad.write_text(bad.read_text().replace("ORDER_STATE_UNSPECIFIED = 0;", "UNKNOWN = 0;"))
    result = lint_protos.lint(tmp_path / "protos")
    assert result.returncode != 0
    assert "ENUM" in (result.stdout + result.stderr).upper()


def test_every_public_rpc_has_an_http_binding() -> None:
    for service_name in ("HeadshotService", "AdminService"):
        service = headshots_pb2.DESCRIPTOR.services_by_name[service_name]
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            assert rule.WhichOneof("pattern"), (
                f"{service_name}.{method.name} has no google.api.http"
            )


def test_public_api_has_the_required_rpcs() -> None:
    service = headshots_pb2.DESCRIPTOR.services_by_name["HeadshotService"]
    names = {m.name for m in service.methods}
    assert {
        "CreateOrder",
        "UploadPhotos",
        "SubmitOrder",
        "GetOrder",
        "ListOrders",
        "WatchOrder",
        "ListResults",
        "DownloadResult",
        "CreatePreview",
        "DeleteOrder",
        "ListStyles",
    } <= names
    upload = service.methods_by_name["UploadPhotos"]
    assert upload.client_streaming and not upload.server_streaming
    assert service.methods_by_name["WatchOrder"].server_streaming
    assert service.methods_by_name["DownloadResult"].server_streaming
