import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from headshots.v1 import headshots_pb2 as _headshots_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SelfieInput(_message.Message):
    __slots__ = ("photo_id", "image", "facts")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    image: bytes
    facts: SelfieFacts
    def __init__(self, photo_id: _Optional[str] = ..., image: _Optional[bytes] = ..., facts: _Optional[_Union[SelfieFacts, _Mapping]] = ...) -> None: ...

class SelfieFacts(_message.Message):
    __slots__ = ("version", "findings", "embedding", "signature", "pose", "exposure", "profile")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    version: int
    findings: _containers.RepeatedCompositeFieldContainer[_headshots_pb2.PhotoFinding]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    signature: bytes
    pose: HeadPose
    exposure: float
    profile: bool
    def __init__(self, version: _Optional[int] = ..., findings: _Optional[_Iterable[_Union[_headshots_pb2.PhotoFinding, _Mapping]]] = ..., embedding: _Optional[_Iterable[float]] = ..., signature: _Optional[bytes] = ..., pose: _Optional[_Union[HeadPose, _Mapping]] = ..., exposure: _Optional[float] = ..., profile: _Optional[bool] = ...) -> None: ...

class AnalyzeSelfiesRequest(_message.Message):
    __slots__ = ("photos",)
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[SelfieInput]
    def __init__(self, photos: _Optional[_Iterable[_Union[SelfieInput, _Mapping]]] = ...) -> None: ...

class FaceBox(_message.Message):
    __slots__ = ("x", "y", "width", "height", "score", "landmarks")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    width: float
    height: float
    score: float
    landmarks: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., width: _Optional[float] = ..., height: _Optional[float] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Iterable[float]] = ...) -> None: ...

class HeadPose(_message.Message):
    __slots__ = ("yaw", "pitch", "roll")
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    yaw: float
    pitch: float
    roll: float
    def __init__(self, yaw: _Optional[float] = ..., pitch: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class SelfieAnalysis(_message.Message):
    __slots__ = ("photo_id", "usable", "findings", "faces", "face_size_px", "sharpness", "exposure", "pose", "duplicate_of", "identity_distance", "embedding", "width", "height", "facts")
    PHOTO_ID_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_PX_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_OF_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    photo_id: str
    usable: bool
    findings: _containers.RepeatedCompositeFieldContainer[_headshots_pb2.PhotoFinding]
    faces: _containers.RepeatedCompositeFieldContainer[FaceBox]
    face_size_px: float
    sharpness: float
    exposure: float
    pose: HeadPose
    duplicate_of: str
    identity_distance: float
    embedding: _containers.RepeatedScalarFieldContainer[float]
    width: int
    height: int
    facts: SelfieFacts
    def __init__(self, photo_id: _Optional[str] = ..., usable: _Optional[bool] = ..., findings: _Optional[_Iterable[_Union[_headshots_pb2.PhotoFinding, _Mapping]]] = ..., faces: _Optional[_Iterable[_Union[FaceBox, _Mapping]]] = ..., face_size_px: _Optional[float] = ..., sharpness: _Optional[float] = ..., exposure: _Optional[float] = ..., pose: _Optional[_Union[HeadPose, _Mapping]] = ..., duplicate_of: _Optional[str] = ..., identity_distance: _Optional[float] = ..., embedding: _Optional[_Iterable[float]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., facts: _Optional[_Union[SelfieFacts, _Mapping]] = ...) -> None: ...

class SetAnalysis(_message.Message):
    __slots__ = ("different_person", "identity_consistency", "variety_score", "pose_spread", "lighting_spread", "usable_count", "reference_embedding", "findings")
    DIFFERENT_PERSON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    VARIETY_SCORE_FIELD_NUMBER: _ClassVar[int]
    POSE_SPREAD_FIELD_NUMBER: _ClassVar[int]
    LIGHTING_SPREAD_FIELD_NUMBER: _ClassVar[int]
    USABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    different_person: _containers.RepeatedScalarFieldContainer[str]
    identity_consistency: float
    variety_score: float
    pose_spread: float
    lighting_spread: float
    usable_count: int
    reference_embedding: _containers.RepeatedScalarFieldContainer[float]
    findings: _containers.RepeatedCompositeFieldContainer[_headshots_pb2.PhotoFinding]
    def __init__(self, different_person: _Optional[_Iterable[str]] = ..., identity_consistency: _Optional[float] = ..., variety_score: _Optional[float] = ..., pose_spread: _Optional[float] = ..., lighting_spread: _Optional[float] = ..., usable_count: _Optional[int] = ..., reference_embedding: _Optional[_Iterable[float]] = ..., findings: _Optional[_Iterable[_Union[_headshots_pb2.PhotoFinding, _Mapping]]] = ...) -> None: ...

class AnalyzeSelfiesResponse(_message.Message):
    __slots__ = ("photos", "set")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[SelfieAnalysis]
    set: SetAnalysis
    def __init__(self, photos: _Optional[_Iterable[_Union[SelfieAnalysis, _Mapping]]] = ..., set: _Optional[_Union[SetAnalysis, _Mapping]] = ...) -> None: ...

class PreviewRequest(_message.Message):
    __slots__ = ("image", "style_id", "count", "seed", "custom_prompt")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    style_id: str
    count: int
    seed: int
    custom_prompt: str
    def __init__(self, image: _Optional[bytes] = ..., style_id: _Optional[str] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., custom_prompt: _Optional[str] = ...) -> None: ...

class PreviewResponse(_message.Message):
    __slots__ = ("images", "model_id", "latency")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_headshots_pb2.PreviewImage]
    model_id: str
    latency: _duration_pb2.Duration
    def __init__(self, images: _Optional[_Iterable[_Union[_headshots_pb2.PreviewImage, _Mapping]]] = ..., model_id: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class EraseRequest(_message.Message):
    __slots__ = ("tenant_id", "order_id", "request_id", "reason")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    order_id: str
    request_id: str
    reason: str
    def __init__(self, tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., request_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: _headshots_pb2.DeletionReceipt
    def __init__(self, receipt: _Optional[_Union[_headshots_pb2.DeletionReceipt, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("tenant_id", "order_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    order_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("data_class", "description", "default_after", "max_after", "starts_at")
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_AFTER_FIELD_NUMBER: _ClassVar[int]
    STARTS_AT_FIELD_NUMBER: _ClassVar[int]
    data_class: str
    description: str
    default_after: _duration_pb2.Duration
    max_after: _duration_pb2.Duration
    starts_at: str
    def __init__(self, data_class: _Optional[str] = ..., description: _Optional[str] = ..., default_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., starts_at: _Optional[str] = ...) -> None: ...

class ScheduledDeletion(_message.Message):
    __slots__ = ("data_class", "due_time", "policy", "done")
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    DUE_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    data_class: str
    due_time: _timestamp_pb2.Timestamp
    policy: str
    done: bool
    def __init__(self, data_class: _Optional[str] = ..., due_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[str] = ..., done: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("policies", "scheduled", "ledger")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[RetentionPolicy]
    scheduled: _containers.RepeatedCompositeFieldContainer[ScheduledDeletion]
    ledger: _containers.RepeatedCompositeFieldContainer[_headshots_pb2.LedgerEntry]
    def __init__(self, policies: _Optional[_Iterable[_Union[RetentionPolicy, _Mapping]]] = ..., scheduled: _Optional[_Iterable[_Union[ScheduledDeletion, _Mapping]]] = ..., ledger: _Optional[_Iterable[_Union[_headshots_pb2.LedgerEntry, _Mapping]]] = ...) -> None: ...
