"""The client SDK's pure parts: how an upload stream is cut, what a refused photo says, the
stage clock, and the contact sheet (no server here; see tests/integration/test_client_sdk.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clients.contact_sheet import SheetItem, render
from clients.order_states import StageClock
from clients.photos import CHUNK_BYTES, PhotoFolderError, photo_files, upload_requests
from clients.sdk import RefusedPhoto
from headshots.v1 import headshots_pb2 as pb

FACES = Path(__file__).resolve().parents[1] / "fixtures" / "faces"
CLIENTS = Path(__file__).resolve().parents[2] / "clients"


def reassemble(requests: list[pb.UploadPhotosRequest]) -> dict[str, bytes]:
    """What the gateway rebuilds from the stream: a photo starts where a filename is set."""
    photos: dict[str, bytearray] = {}
    current = ""
    for req in requests:
        if req.filename:
            current = req.filename
            photos[current] = bytearray()
        photos[current].extend(req.data)
    return {k: bytes(v) for k, v in photos.items()}


def test_upload_stream_names_the_order_once_and_each_photo_on_its_first_chunk() -> None:
    files = sorted((FACES / "obama").glob("*.jpg"))[:3]
    big = ("big.png", bytes(range(256)) * 10_000)  # 2.4 MiB: three chunks at the default
    reqs = list(upload_requests("tenants/t/orders/o", [*files, big]))
    assert reqs[0].parent == "tenants/t/orders/o"
    assert all(not r.parent for r in reqs[1:])
    assert all(len(r.data) <= CHUNK_BYTES for r in reqs)
    assert [r.filename for r in reqs if r.filename] == [f.name for f in files] + ["big.png"]
    assert sum(1 for r in reqs if not r.filename) == 2  # big.png's second and third chunks
    assert reassemble(reqs) == {**{f.name: f.read_bytes() for f in files}, "big.png": big[1]}
    types = {r.filename: r.content_type for r in reqs if r.filename}
    assert types[files[0].name] == "image/jpeg" and types["big.png"] == "image/png"


def test_small_chunks_and_an_empty_photo() -> None:
    photo = sorted((FACES / "obama").glob("*.jpg"))[0]
    reqs = list(upload_requests("tenants/t/orders/o", [("empty.jpg", b""), photo], 4096))
    # An empty file is still one (empty) message with its name, so it can be refused by name.
    assert reqs[0].filename == "empty.jpg" and reqs[0].data == b""
    assert len(reqs) == 1 + -(-photo.stat().st_size // 4096)
    assert reassemble(reqs)[photo.name] == photo.read_bytes()
    with pytest.raises(ValueError):
        list(upload_requests("tenants/t/orders/o", [photo], 0))


def test_photo_files_of_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PhotoFolderError, match="not a folder"):
        photo_files(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PhotoFolderError, match="no photos"):
        photo_files(tmp_path)
    for name in ("b.JPG", "a.png", "c.webp"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in photo_files(tmp_path)] == ["a.png", "b.JPG", "c.webp"]


def test_refused_photo_reads_its_code_and_sentence() -> None:
    r = RefusedPhoto("x.jpg", "BLURRED: photo 3 (x.jpg) was refused: the photo is blurred")
    filename, reason = r  # still a (filename, reason) pair
    assert (filename, r.code) == ("x.jpg", "BLURRED")
    assert r.message == "photo 3 (x.jpg) was refused: the photo is blurred"
    assert reason.endswith("blurred")


def test_stage_clock_sums_revisited_states() -> None:
    clock = StageClock(t0=0.0)
    for state, at in [
        (pb.ORDER_STATE_QUEUED, 1.0),
        (pb.ORDER_STATE_QUEUED, 2.0),
        (pb.ORDER_STATE_GENERATING, 3.0),
        (pb.ORDER_STATE_FILTERING, 5.0),
        (pb.ORDER_STATE_GENERATING, 6.0),
        (pb.ORDER_STATE_FILTERING, 9.0),
        (pb.ORDER_STATE_READY, 10.0),
    ]:
        clock.see(state, at)
    assert clock.sequence == [
        "QUEUED",
        "GENERATING",
        "FILTERING",
        "GENERATING",
        "FILTERING",
        "READY",
    ]
    assert clock.seconds == {"QUEUED": 2.0, "GENERATING": 5.0, "FILTERING": 2.0}
    assert clock.first_seen["FILTERING"] == 5.0


def test_contact_sheet_escapes_what_it_shows() -> None:
    r = pb.Result(name="tenants/t/orders/o/results/r0-00001", style_id="<script>", rank=1)
    r.delivered = True
    page = render(
        pb.Order(name="tenants/t/orders/o"),
        [SheetItem(r, "001.png")],
        pb.RejectionSummary(),
        notice="noise from a <tiny> model",
    )
    assert "<script>" not in page and "&lt;script&gt;" in page
    # The notice sits under the title, escaped.
    assert page.index("</h1>") < page.index("noise from a &lt;tiny&gt; model")
    assert 'class="notice"' not in render(pb.Order(), [], pb.RejectionSummary())


def test_the_clients_need_no_service_dev_or_test_code() -> None:
    """A partner can ship `clients/` with the generated messages alone."""
    found = set()
    for path in CLIENTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((path.name, node.module.split(".")[0]))
            elif isinstance(node, ast.Import):
                found.update((path.name, a.name.split(".")[0]) for a in node.names)
    assert {top for _, top in found} >= {"grpc", "headshots", "clients"}
    assert (
        sorted(
            f"{f} imports {top}"
            for f, top in found
            if top in {"services", "devstack", "tests", "bench"}
        )
        == []
    )
