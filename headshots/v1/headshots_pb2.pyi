import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_CREATED: _ClassVar[OrderState]
    ORDER_STATE_UPLOADING: _ClassVar[OrderState]
    ORDER_STATE_QUEUED: _ClassVar[OrderState]
    ORDER_STATE_TRAINING: _ClassVar[OrderState]
    ORDER_STATE_GENERATING: _ClassVar[OrderState]
    ORDER_STATE_FILTERING: _ClassVar[OrderState]
    ORDER_STATE_READY: _ClassVar[OrderState]
    ORDER_STATE_EXPIRED: _ClassVar[OrderState]
    ORDER_STATE_FAILED: _ClassVar[OrderState]
    ORDER_STATE_CANCELLED: _ClassVar[OrderState]
    ORDER_STATE_DELETED: _ClassVar[OrderState]

class SubjectClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBJECT_CLASS_UNSPECIFIED: _ClassVar[SubjectClass]
    SUBJECT_CLASS_PERSON: _ClassVar[SubjectClass]
    SUBJECT_CLASS_MAN: _ClassVar[SubjectClass]
    SUBJECT_CLASS_WOMAN: _ClassVar[SubjectClass]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_UPLOAD: _ClassVar[Stage]
    STAGE_TRAINING: _ClassVar[Stage]
    STAGE_GENERATION: _ClassVar[Stage]
    STAGE_FILTERING: _ClassVar[Stage]
    STAGE_DELIVERY: _ClassVar[Stage]
    STAGE_RETENTION: _ClassVar[Stage]
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_CREATED: OrderState
ORDER_STATE_UPLOADING: OrderState
ORDER_STATE_QUEUED: OrderState
ORDER_STATE_TRAINING: OrderState
ORDER_STATE_GENERATING: OrderState
ORDER_STATE_FILTERING: OrderState
ORDER_STATE_READY: OrderState
ORDER_STATE_EXPIRED: OrderState
ORDER_STATE_FAILED: OrderState
ORDER_STATE_CANCELLED: OrderState
ORDER_STATE_DELETED: OrderState
SUBJECT_CLASS_UNSPECIFIED: SubjectClass
SUBJECT_CLASS_PERSON: SubjectClass
SUBJECT_CLASS_MAN: SubjectClass
SUBJECT_CLASS_WOMAN: SubjectClass
STAGE_UNSPECIFIED: Stage
STAGE_UPLOAD: Stage
STAGE_TRAINING: Stage
STAGE_GENERATION: Stage
STAGE_FILTERING: Stage
STAGE_DELIVERY: Stage
STAGE_RETENTION: Stage

class Tenant(_message.Message):
    __slots__ = ("name", "display_name", "create_time", "requests_per_minute", "max_orders_in_flight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_ORDERS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    create_time: _timestamp_pb2.Timestamp
    requests_per_minute: int
    max_orders_in_flight: int
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests_per_minute: _Optional[int] = ..., max_orders_in_flight: _Optional[int] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("name", "display_name", "prefix", "create_time", "revoke_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    prefix: str
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., prefix: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("stage", "done", "total", "fraction", "eta", "detail")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    done: int
    total: int
    fraction: float
    eta: _duration_pb2.Duration
    detail: str
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., fraction: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class RetentionSchedule(_message.Message):
    __slots__ = ("photos_delete_time", "model_delete_time", "results_delete_time")
    PHOTOS_DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESULTS_DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    photos_delete_time: _timestamp_pb2.Timestamp
    model_delete_time: _timestamp_pb2.Timestamp
    results_delete_time: _timestamp_pb2.Timestamp
    def __init__(self, photos_delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., results_delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("name", "display_name", "state", "style_ids", "custom_prompt", "subject_class", "candidate_count", "result_count", "photo_retention_days", "keep_model", "photo_count", "progress", "failure_reason", "retention", "create_time", "update_time", "version", "delivered_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STYLE_IDS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    RESULT_COUNT_FIELD_NUMBER: _ClassVar[int]
    PHOTO_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    KEEP_MODEL_FIELD_NUMBER: _ClassVar[int]
    PHOTO_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    state: OrderState
    style_ids: _containers.RepeatedScalarFieldContainer[str]
    custom_prompt: str
    subject_class: SubjectClass
    candidate_count: int
    result_count: int
    photo_retention_days: int
    keep_model: bool
    photo_count: int
    progress: Progress
    failure_reason: str
    retention: RetentionSchedule
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    version: int
    delivered_count: int
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., state: _Optional[_Union[OrderState, str]] = ..., style_ids: _Optional[_Iterable[str]] = ..., custom_prompt: _Optional[str] = ..., subject_class: _Optional[_Union[SubjectClass, str]] = ..., candidate_count: _Optional[int] = ..., result_count: _Optional[int] = ..., photo_retention_days: _Optional[int] = ..., keep_model: _Optional[bool] = ..., photo_count: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., failure_reason: _Optional[str] = ..., retention: _Optional[_Union[RetentionSchedule, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ..., delivered_count: _Optional[int] = ...) -> None: ...

class PhotoFinding(_message.Message):
    __slots__ = ("code", "message", "blocking")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    blocking: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., blocking: _Optional[bool] = ...) -> None: ...

class Photo(_message.Message):
    __slots__ = ("name", "filename", "usable", "findings", "width", "height", "size_bytes", "sha256", "create_time", "sharpness", "face_size_px", "identity_distance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    USABLE_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    FACE_SIZE_PX_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    filename: str
    usable: bool
    findings: _containers.RepeatedCompositeFieldContainer[PhotoFinding]
    width: int
    height: int
    size_bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    sharpness: float
    face_size_px: float
    identity_distance: float
    def __init__(self, name: _Optional[str] = ..., filename: _Optional[str] = ..., usable: _Optional[bool] = ..., findings: _Optional[_Iterable[_Union[PhotoFinding, _Mapping]]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sharpness: _Optional[float] = ..., face_size_px: _Optional[float] = ..., identity_distance: _Optional[float] = ...) -> None: ...

class UploadPhotosRequest(_message.Message):
    __slots__ = ("parent", "filename", "content_type", "data")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    parent: str
    filename: str
    content_type: str
    data: bytes
    def __init__(self, parent: _Optional[str] = ..., filename: _Optional[str] = ..., content_type: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class SetCheck(_message.Message):
    __slots__ = ("different_person", "variety_score", "usable_count", "findings")
    DIFFERENT_PERSON_FIELD_NUMBER: _ClassVar[int]
    VARIETY_SCORE_FIELD_NUMBER: _ClassVar[int]
    USABLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    different_person: _containers.RepeatedScalarFieldContainer[str]
    variety_score: float
    usable_count: int
    findings: _containers.RepeatedCompositeFieldContainer[PhotoFinding]
    def __init__(self, different_person: _Optional[_Iterable[str]] = ..., variety_score: _Optional[float] = ..., usable_count: _Optional[int] = ..., findings: _Optional[_Iterable[_Union[PhotoFinding, _Mapping]]] = ...) -> None: ...

class UploadPhotosResponse(_message.Message):
    __slots__ = ("photos", "set_check", "outcomes")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    SET_CHECK_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[Photo]
    set_check: SetCheck
    outcomes: _containers.RepeatedCompositeFieldContainer[PhotoOutcome]
    def __init__(self, photos: _Optional[_Iterable[_Union[Photo, _Mapping]]] = ..., set_check: _Optional[_Union[SetCheck, _Mapping]] = ..., outcomes: _Optional[_Iterable[_Union[PhotoOutcome, _Mapping]]] = ...) -> None: ...

class PhotoOutcome(_message.Message):
    __slots__ = ("index", "filename", "stored", "photo", "code", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    filename: str
    stored: bool
    photo: str
    code: str
    message: str
    def __init__(self, index: _Optional[int] = ..., filename: _Optional[str] = ..., stored: _Optional[bool] = ..., photo: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ListPhotosRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPhotosResponse(_message.Message):
    __slots__ = ("photos", "next_page_token", "set_check")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SET_CHECK_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[Photo]
    next_page_token: str
    set_check: SetCheck
    def __init__(self, photos: _Optional[_Iterable[_Union[Photo, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., set_check: _Optional[_Union[SetCheck, _Mapping]] = ...) -> None: ...

class DeletePhotoRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePhotoResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateOrderRequest(_message.Message):
    __slots__ = ("parent", "order", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    order: Order
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., order: _Optional[_Union[Order, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class SubmitOrderRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetOrderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "state")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    state: OrderState
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., state: _Optional[_Union[OrderState, str]] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[Order]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchOrderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchOrderResponse(_message.Message):
    __slots__ = ("order", "sequence")
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    order: Order
    sequence: int
    def __init__(self, order: _Optional[_Union[Order, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class Scores(_message.Message):
    __slots__ = ("likeness", "quality", "sharpness", "face_confidence", "eye_consistency", "hands", "face_geometry", "yaw", "pitch")
    LIKENESS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SHARPNESS_FIELD_NUMBER: _ClassVar[int]
    FACE_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EYE_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    HANDS_FIELD_NUMBER: _ClassVar[int]
    FACE_GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    likeness: float
    quality: float
    sharpness: float
    face_confidence: float
    eye_consistency: float
    hands: float
    face_geometry: float
    yaw: float
    pitch: float
    def __init__(self, likeness: _Optional[float] = ..., quality: _Optional[float] = ..., sharpness: _Optional[float] = ..., face_confidence: _Optional[float] = ..., eye_consistency: _Optional[float] = ..., hands: _Optional[float] = ..., face_geometry: _Optional[float] = ..., yaw: _Optional[float] = ..., pitch: _Optional[float] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("name", "rank", "delivered", "style_id", "seed", "model_id", "scores", "rejection_reasons", "content_type", "size_bytes", "width", "height", "create_time", "round")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASONS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    name: str
    rank: int
    delivered: bool
    style_id: str
    seed: int
    model_id: str
    scores: Scores
    rejection_reasons: _containers.RepeatedScalarFieldContainer[str]
    content_type: str
    size_bytes: int
    width: int
    height: int
    create_time: _timestamp_pb2.Timestamp
    round: int
    def __init__(self, name: _Optional[str] = ..., rank: _Optional[int] = ..., delivered: _Optional[bool] = ..., style_id: _Optional[str] = ..., seed: _Optional[int] = ..., model_id: _Optional[str] = ..., scores: _Optional[_Union[Scores, _Mapping]] = ..., rejection_reasons: _Optional[_Iterable[str]] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., round: _Optional[int] = ...) -> None: ...

class RejectionSummary(_message.Message):
    __slots__ = ("candidates", "passed", "delivered", "by_reason")
    class ByReasonEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    BY_REASON_FIELD_NUMBER: _ClassVar[int]
    candidates: int
    passed: int
    delivered: int
    by_reason: _containers.ScalarMap[str, int]
    def __init__(self, candidates: _Optional[int] = ..., passed: _Optional[int] = ..., delivered: _Optional[int] = ..., by_reason: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListResultsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "include_rejected")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REJECTED_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    include_rejected: bool
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_rejected: _Optional[bool] = ...) -> None: ...

class ListResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token", "summary")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    next_page_token: str
    summary: RejectionSummary
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., summary: _Optional[_Union[RejectionSummary, _Mapping]] = ...) -> None: ...

class DownloadResultRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DownloadResultResponse(_message.Message):
    __slots__ = ("data", "content_type", "total_size")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    total_size: int
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class PreviewImage(_message.Message):
    __slots__ = ("data", "content_type", "seed", "width", "height")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    seed: int
    width: int
    height: int
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., seed: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class CreatePreviewRequest(_message.Message):
    __slots__ = ("parent", "style_id", "photo", "content_type", "count", "custom_prompt", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    PHOTO_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    style_id: str
    photo: bytes
    content_type: str
    count: int
    custom_prompt: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., style_id: _Optional[str] = ..., photo: _Optional[bytes] = ..., content_type: _Optional[str] = ..., count: _Optional[int] = ..., custom_prompt: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreatePreviewResponse(_message.Message):
    __slots__ = ("images", "model_id", "latency")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[PreviewImage]
    model_id: str
    latency: _duration_pb2.Duration
    def __init__(self, images: _Optional[_Iterable[_Union[PreviewImage, _Mapping]]] = ..., model_id: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DeleteOrderRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("id", "data_class", "object_count", "byte_count", "delete_time", "trigger", "key_id_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_COUNT_FIELD_NUMBER: _ClassVar[int]
    BYTE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_HASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    data_class: str
    object_count: int
    byte_count: int
    delete_time: _timestamp_pb2.Timestamp
    trigger: str
    key_id_hash: str
    def __init__(self, id: _Optional[str] = ..., data_class: _Optional[str] = ..., object_count: _Optional[int] = ..., byte_count: _Optional[int] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trigger: _Optional[str] = ..., key_id_hash: _Optional[str] = ...) -> None: ...

class DeletionReceipt(_message.Message):
    __slots__ = ("receipt_id", "order", "entries", "complete_time", "name")
    RECEIPT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    receipt_id: str
    order: str
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    complete_time: _timestamp_pb2.Timestamp
    name: str
    def __init__(self, receipt_id: _Optional[str] = ..., order: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class GetDeletionReceiptRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Style(_message.Message):
    __slots__ = ("id", "display_name", "wardrobe", "lighting", "background", "prompt", "negative_prompt")
    ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    WARDROBE_FIELD_NUMBER: _ClassVar[int]
    LIGHTING_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    id: str
    display_name: str
    wardrobe: str
    lighting: str
    background: str
    prompt: str
    negative_prompt: str
    def __init__(self, id: _Optional[str] = ..., display_name: _Optional[str] = ..., wardrobe: _Optional[str] = ..., lighting: _Optional[str] = ..., background: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ...) -> None: ...

class ListStylesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStylesResponse(_message.Message):
    __slots__ = ("styles", "next_page_token")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[Style]
    next_page_token: str
    def __init__(self, styles: _Optional[_Iterable[_Union[Style, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("tenant", "tenant_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    tenant_id: str
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("parent", "api_key")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    api_key: ApiKey
    def __init__(self, parent: _Optional[str] = ..., api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "next_page_token")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    next_page_token: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetApiKeyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
