"""Gateway pieces that need no server: key hashing, the state machine table, photo
decoding, path templates and the OpenAPI document."""

from __future__ import annotations

import io

import pytest
from openapi_spec_validator import validate
from PIL import Image

from headshots.v1 import headshots_pb2 as pb
from services.gateway import orders as om
from services.gateway.auth import KEY_RE, digest, new_key
from services.gateway.httprules import compile_template
from services.gateway.openapi import build_openapi
from services.gateway.uploads import Limits, Refusal, clean


def test_api_key_is_stored_only_as_a_salted_peppered_hash() -> None:
    a, b = new_key(b"pepper"), new_key(b"pepper")
    assert KEY_RE.match(a.secret) and a.secret.startswith(f"hs_{a.key_id}_")
    assert a.secret.encode() not in a.digest and a.salt != b.salt
    assert digest(b"pepper", a.salt, a.secret) == a.digest
    assert digest(b"other", a.salt, a.secret) != a.digest
    assert digest(b"pepper", a.salt, b.secret) != a.digest


def test_state_machine_allows_only_the_documented_moves() -> None:
    assert om.can_move(om.UPLOADING, om.QUEUED)
    assert not om.can_move(om.CREATED, om.QUEUED)  # no photos yet
    assert not om.can_move(om.READY, om.TRAINING)
    assert not any(om.can_move(om.DELETED, s) for s in pb.OrderState.values() if s != om.DELETED)
    for live in om.LIVE:  # FAILED, CANCELLED, DELETED from any live state
        assert {om.FAILED, om.CANCELLED, om.DELETED} <= om.TRANSITIONS[live]
    assert om.seed_base("o-1", 0) == om.seed_base("o-1", 0) != om.seed_base("o-1", 1)


def test_clean_refuses_without_decoding_oversized_input() -> None:
    with pytest.raises(Refusal) as err:
        clean(b"\0" * 2048, Limits(max_bytes=1024))
    assert err.value.code == "TOO_LARGE"


def test_clean_rewrites_png_with_alpha_as_plain_jpeg() -> None:
    src = io.BytesIO()
    img = Image.new("RGBA", (300, 200), (10, 200, 30, 0))
    img.info["comment"] = "secret"
    img.save(src, "PNG")
    out = clean(src.getvalue(), Limits())
    again = Image.open(io.BytesIO(out.data))
    assert again.format == "JPEG" and again.mode == "RGB" and again.size == (300, 200)
    assert again.getpixel((5, 5)) >= (250, 250, 250)  # transparent became white
    assert out.source_format == "PNG"


def test_small_photo_is_refused() -> None:
    src = io.BytesIO()
    Image.new("RGB", (100, 400), "red").save(src, "JPEG")
    with pytest.raises(Refusal) as err:
        clean(src.getvalue(), Limits(min_side=160))
    assert err.value.code == "TOO_SMALL"


def test_path_templates_match_resource_names() -> None:
    regex, variables, openapi, params = compile_template("/v1/{name=tenants/*/orders/*}:submit")
    assert variables == {"name": "tenants/*/orders/*"}
    assert openapi == "/v1/tenants/{tenant}/orders/{order}:submit"
    assert [p.name for p in params] == ["tenant", "order"]
    m = regex.fullmatch("/v1/tenants/a/orders/b:submit")
    assert m is not None and m.group("v0") == "tenants/a/orders/b"
    assert regex.fullmatch("/v1/tenants/a/orders/b") is None
    assert regex.fullmatch("/v1/tenants/a/x/orders/b:submit") is None


def test_openapi_document_is_valid() -> None:
    doc = build_openapi(
        pb.DESCRIPTOR.services_by_name["HeadshotService"],
        pb.DESCRIPTOR.services_by_name["AdminService"],
    )
    validate(doc)
    order = doc["components"]["schemas"]["headshots.v1.Order"]["properties"]
    assert order["version"]["type"] == "string"  # int64 as a JSON string
    assert order["createTime"]["format"] == "date-time"
