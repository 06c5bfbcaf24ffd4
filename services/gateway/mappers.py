"""Database rows to API messages (and the few values stored in a packed form)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headshots.v1 import headshots_pb2 as pb
from headshots.v1 import internal_pb2
from services.policy import names

_SCORE_FIELDS = frozenset(pb.Scores.DESCRIPTOR.fields_by_name)


def photo_proto(row: Any) -> pb.Photo:
    p = pb.Photo(
        name=names.photo_name(row.tenant_id, row.order_id, row.photo_id),
        filename=row.filename,
        usable=row.usable,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        sharpness=row.sharpness,
        face_size_px=row.face_size_px,
        identity_distance=row.identity_distance,
        findings=[pb.PhotoFinding(**f) for f in row.findings],
    )
    p.create_time.FromDatetime(row.created_at)
    return p


def result_proto(row: Any) -> pb.Result:
    r = pb.Result(
        name=names.result_name(row.tenant_id, row.order_id, row.result_id),
        rank=row.rank,
        delivered=row.delivered,
        style_id=row.style_id,
        seed=int(row.seed),
        model_id=row.model_id,
        scores=pb.Scores(**{k: float(v) for k, v in row.scores.items() if k in _SCORE_FIELDS}),
        rejection_reasons=list(row.rejection_reasons),
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        width=row.width,
        height=row.height,
        round=row.round,
    )
    r.create_time.FromDatetime(row.created_at)
    return r


def tenant_proto(row: Any) -> pb.Tenant:
    t = pb.Tenant(
        name=names.tenant_name(row.tenant_id),
        display_name=row.display_name,
        requests_per_minute=row.requests_per_minute,
        max_orders_in_flight=row.max_orders_in_flight,
    )
    t.create_time.FromDatetime(row.created_at)
    return t


def api_key_proto(row: Any) -> pb.ApiKey:
    key = pb.ApiKey(
        name=names.api_key_name(row.tenant_id, row.key_id),
        display_name=row.display_name,
        prefix=f"hs_{row.key_id}_",
    )
    key.create_time.FromDatetime(row.created_at)
    if row.revoked_at is not None:
        key.revoke_time.FromDatetime(row.revoked_at)
    return key


def finding_dicts(findings: Sequence[pb.PhotoFinding]) -> list[dict[str, Any]]:
    return [{"code": f.code, "message": f.message, "blocking": f.blocking} for f in findings]


def set_check_of(analysis: internal_pb2.SetAnalysis, photo_names: dict[str, str]) -> pb.SetCheck:
    return pb.SetCheck(
        different_person=[photo_names.get(p, p) for p in analysis.different_person],
        variety_score=analysis.variety_score,
        usable_count=analysis.usable_count,
        findings=list(analysis.findings),
    )


def embedding_bytes(values: Sequence[float]) -> bytes | None:
    return np.asarray(values, dtype=np.float32).tobytes() if len(values) else None


def embedding_list(data: bytes | None) -> list[float]:
    return np.frombuffer(data, dtype=np.float32).tolist() if data else []
