"""The public API's shape, checked without a server: field behaviour on every field, the
message cap the proto quotes, errors that stay small, and text refused before PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
from google.api import field_behavior_pb2

from headshots.v1 import headshots_pb2 as pb
from services.common.grpc.errors import ApiError
from services.gateway.inputs import bad_text_fields
from services.gateway.validation import check_request_id, request_hash
from services.policy.limits import limits

PROTO = Path(__file__).resolve().parents[2] / "protos" / "headshots" / "v1" / "headshots.proto"


def test_every_public_field_declares_its_behaviour() -> None:
    missing = [
        f"{msg.name}.{fd.name}"
        for msg in pb.DESCRIPTOR.message_types_by_name.values()
        for fd in msg.fields
        if not fd.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    ]
    assert missing == []
    order = pb.Order.DESCRIPTOR.fields_by_name
    assert (
        field_behavior_pb2.OUTPUT_ONLY
        in order["state"].GetOptions().Extensions[field_behavior_pb2.field_behavior]
    )


def test_proto_quotes_the_gateways_message_cap() -> None:
    quoted = re.search(r"gRPC messages are capped at (\d+) MiB", PROTO.read_text())
    assert quoted is not None
    assert int(quoted.group(1)) * 1024 * 1024 == limits().max_message_bytes


def test_an_error_with_hundreds_of_refusals_fits_a_trailer() -> None:
    err = ApiError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "x" * 100_000,
        field_violations=[(f"photos[{i}]", "y" * 5000) for i in range(300)],
    )
    status = err.to_status()
    assert len(status.SerializeToString()) < 16 * 1024
    assert len(status.message) <= 400
    info = [d for d in status.details if d.type_url.endswith("ErrorInfo")]
    assert len(info) == 1  # every error has one, reason defaulting to the code


def test_control_characters_never_come_back_raw() -> None:
    status = ApiError(grpc.StatusCode.NOT_FOUND, "photo a\0b\x1b[31m").to_status()
    assert "\0" not in status.message and "\x1b" not in status.message


def test_nul_is_found_in_nested_and_repeated_text() -> None:
    req = pb.CreateOrderRequest(order=pb.Order(style_ids=["ok", "b\0ad"], display_name="fine"))
    assert list(bad_text_fields(req)) == ["order.style_ids"]


def test_request_ids_are_canonical_uuids_and_hash_without_themselves() -> None:
    check_request_id("")
    check_request_id("3f2b8c1e-9d4a-4b7e-8f00-1c2d3e4f5a6b")
    for bad in ("req-1", "3f2b8c1e9d4a4b7e8f001c2d3e4f5a6b", "x" * 2**20):
        try:
            check_request_id(bad)
        except ApiError as err:
            assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError(bad)
    a = pb.CreateOrderRequest(parent="tenants/t", request_id="1", order=pb.Order(keep_model=True))
    b = pb.CreateOrderRequest(parent="tenants/t", request_id="2", order=pb.Order(keep_model=True))
    c = pb.CreateOrderRequest(parent="tenants/t", request_id="1")
    assert request_hash(a) == request_hash(b) != request_hash(c)
