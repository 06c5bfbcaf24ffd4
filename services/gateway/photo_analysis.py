"""The filter's verdict on an order's selfies (FilterService.AnalyzeSelfies).

Each photo's pixels go to the filter once (`describe`, as the photo arrives); what the
filter measured comes back as `SelfieFacts`, stored with the photo's row. The set's verdict
(`judge_set`) is then asked over facts only: adding a photo to a set of nineteen costs one
photo's analysis, not twenty. A photo stored before facts existed has its image analysed
once, the next time its set is judged, and the caller stores the facts it gets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc

from headshots.v1 import internal_pb2, internal_pb2_grpc
from services.common.grpc.errors import ApiError
from services.common.grpc.server import outgoing_timeout
from services.common.storage.base import BlobStore

log = logging.getLogger(__name__)


class StaleFacts(Exception):
    """The filter measures differently now: stored facts must be measured again."""


async def analyze(
    stub: internal_pb2_grpc.FilterServiceStub,
    inputs: Sequence[internal_pb2.SelfieInput | tuple[str, bytes]],
    timeout_s: float,
) -> internal_pb2.AnalyzeSelfiesResponse:
    """One AnalyzeSelfies call; a (photo id, image bytes) pair is an image input."""
    request = internal_pb2.AnalyzeSelfiesRequest(
        photos=[
            x
            if isinstance(x, internal_pb2.SelfieInput)
            else internal_pb2.SelfieInput(photo_id=x[0], image=x[1])
            for x in inputs
        ]
    )
    try:
        return await stub.AnalyzeSelfies(request, timeout=outgoing_timeout(timeout_s))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
            raise StaleFacts(err.details()) from err
        log.warning("AnalyzeSelfies failed: %s %s", err.code(), err.details())
        raise ApiError(
            grpc.StatusCode.UNAVAILABLE,
            "the photo check is unavailable right now; nothing was stored, please retry",
            reason="FILTER_UNAVAILABLE",
            retry_after_s=5.0,
        ) from err


def facts_input(photo_id: str, facts: internal_pb2.SelfieFacts) -> internal_pb2.SelfieInput:
    return internal_pb2.SelfieInput(photo_id=photo_id, facts=facts)


async def describe(
    stub: internal_pb2_grpc.FilterServiceStub, photo_id: str, image: bytes, timeout_s: float
) -> internal_pb2.SelfieAnalysis:
    """One photo analysed on its own: its verdict (a set of one adds no finding) and, when
    it could be decoded, the facts to store."""
    response = await analyze(
        stub, [internal_pb2.SelfieInput(photo_id=photo_id, image=image)], timeout_s
    )
    return response.photos[0]


def stored_facts(row: Any) -> internal_pb2.SelfieFacts | None:
    if not row.selfie_facts:
        return None
    return internal_pb2.SelfieFacts.FromString(bytes(row.selfie_facts))


async def judge_set(
    stub: internal_pb2_grpc.FilterServiceStub,
    blobs: BlobStore,
    rows: Sequence[Any],
    new: Sequence[internal_pb2.SelfieInput],
    timeout_s: float,
) -> tuple[internal_pb2.AnalyzeSelfiesResponse, dict[str, internal_pb2.SelfieFacts]]:
    """The set's verdict over stored photos (`rows`, by their facts) followed by `new`
    inputs, in that order. Also returns the facts measured now for rows that had none (or
    stale ones): the caller stores them. One image at a time is read and sent."""
    measured: dict[str, internal_pb2.SelfieFacts] = {}

    async def measure(row: Any) -> internal_pb2.SelfieFacts:
        verdict = await describe(stub, row.photo_id, await blobs.get(row.blob_key), timeout_s)
        measured[row.photo_id] = verdict.facts
        return verdict.facts

    facts = {}
    for row in rows:
        facts[row.photo_id] = stored_facts(row) or await measure(row)
    try:
        inputs = [facts_input(r.photo_id, facts[r.photo_id]) for r in rows]
        return await analyze(stub, [*inputs, *new], timeout_s), measured
    except StaleFacts:
        log.info("the filter measures selfies differently now: measuring %d again", len(rows))
    for row in rows:
        facts[row.photo_id] = measured.get(row.photo_id) or await measure(row)
    inputs = [facts_input(r.photo_id, facts[r.photo_id]) for r in rows]
    try:
        return await analyze(stub, [*inputs, *new], timeout_s), measured
    except StaleFacts as err:
        # `new` came from this filter a moment ago; stale now means it was replaced mid-call.
        raise ApiError(
            grpc.StatusCode.UNAVAILABLE,
            "the photo check changed during the upload; nothing was stored, please retry",
            reason="FILTER_UNAVAILABLE",
            retry_after_s=5.0,
        ) from err
