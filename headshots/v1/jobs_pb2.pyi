import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from headshots.v1 import headshots_pb2 as _headshots_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_STARTED: _ClassVar[EventKind]
    EVENT_KIND_PROGRESS: _ClassVar[EventKind]
    EVENT_KIND_COMPLETED: _ClassVar[EventKind]
    EVENT_KIND_FAILED: _ClassVar[EventKind]
    EVENT_KIND_NEEDS_MORE: _ClassVar[EventKind]
    EVENT_KIND_SCORED: _ClassVar[EventKind]
    EVENT_KIND_DELETED: _ClassVar[EventKind]
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_STARTED: EventKind
EVENT_KIND_PROGRESS: EventKind
EVENT_KIND_COMPLETED: EventKind
EVENT_KIND_FAILED: EventKind
EVENT_KIND_NEEDS_MORE: EventKind
EVENT_KIND_SCORED: EventKind
EVENT_KIND_DELETED: EventKind

class TrainingConfig(_message.Message):
    __slots__ = ("rank", "steps", "learning_rate", "train_text_encoder")
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TEXT_ENCODER_FIELD_NUMBER: _ClassVar[int]
    rank: int
    steps: int
    learning_rate: float
    train_text_encoder: bool
    def __init__(self, rank: _Optional[int] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., train_text_encoder: _Optional[bool] = ...) -> None: ...

class TrainJob(_message.Message):
    __slots__ = ("job_id", "tenant_id", "order_id", "photo_keys", "subject_class", "reference_embedding", "config")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    PHOTO_KEYS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    order_id: str
    photo_keys: _containers.RepeatedScalarFieldContainer[str]
    subject_class: _headshots_pb2.SubjectClass
    reference_embedding: _containers.RepeatedScalarFieldContainer[float]
    config: TrainingConfig
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., photo_keys: _Optional[_Iterable[str]] = ..., subject_class: _Optional[_Union[_headshots_pb2.SubjectClass, str]] = ..., reference_embedding: _Optional[_Iterable[float]] = ..., config: _Optional[_Union[TrainingConfig, _Mapping]] = ...) -> None: ...

class GenerateJob(_message.Message):
    __slots__ = ("job_id", "tenant_id", "order_id", "adapter_key", "instance_prompt", "style_ids", "custom_prompt", "count", "round", "seed_base", "reference_embedding", "result_count", "final_round")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_KEY_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STYLE_IDS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SEED_BASE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    RESULT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINAL_ROUND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    order_id: str
    adapter_key: str
    instance_prompt: str
    style_ids: _containers.RepeatedScalarFieldContainer[str]
    custom_prompt: str
    count: int
    round: int
    seed_base: int
    reference_embedding: _containers.RepeatedScalarFieldContainer[float]
    result_count: int
    final_round: bool
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., adapter_key: _Optional[str] = ..., instance_prompt: _Optional[str] = ..., style_ids: _Optional[_Iterable[str]] = ..., custom_prompt: _Optional[str] = ..., count: _Optional[int] = ..., round: _Optional[int] = ..., seed_base: _Optional[int] = ..., reference_embedding: _Optional[_Iterable[float]] = ..., result_count: _Optional[int] = ..., final_round: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("result_id", "blob_key", "style_id", "seed", "index", "model_id", "width", "height", "content_type", "size_bytes")
    RESULT_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_KEY_FIELD_NUMBER: _ClassVar[int]
    STYLE_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    result_id: str
    blob_key: str
    style_id: str
    seed: int
    index: int
    model_id: str
    width: int
    height: int
    content_type: str
    size_bytes: int
    def __init__(self, result_id: _Optional[str] = ..., blob_key: _Optional[str] = ..., style_id: _Optional[str] = ..., seed: _Optional[int] = ..., index: _Optional[int] = ..., model_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_type: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class FilterJob(_message.Message):
    __slots__ = ("job_id", "tenant_id", "order_id", "round", "batch", "candidates", "round_total", "reference_embedding", "result_count", "final_round")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ROUND_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    RESULT_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINAL_ROUND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    tenant_id: str
    order_id: str
    round: int
    batch: int
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    round_total: int
    reference_embedding: _containers.RepeatedScalarFieldContainer[float]
    result_count: int
    final_round: bool
    def __init__(self, job_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., round: _Optional[int] = ..., batch: _Optional[int] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., round_total: _Optional[int] = ..., reference_embedding: _Optional[_Iterable[float]] = ..., result_count: _Optional[int] = ..., final_round: _Optional[bool] = ...) -> None: ...

class TrainingResult(_message.Message):
    __slots__ = ("adapter_key", "rank", "steps", "chosen_step", "final_loss", "likeness", "instance_prompt", "base_model_id")
    ADAPTER_KEY_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_STEP_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    LIKENESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    adapter_key: str
    rank: int
    steps: int
    chosen_step: int
    final_loss: float
    likeness: float
    instance_prompt: str
    base_model_id: str
    def __init__(self, adapter_key: _Optional[str] = ..., rank: _Optional[int] = ..., steps: _Optional[int] = ..., chosen_step: _Optional[int] = ..., final_loss: _Optional[float] = ..., likeness: _Optional[float] = ..., instance_prompt: _Optional[str] = ..., base_model_id: _Optional[str] = ...) -> None: ...

class ScoredCandidate(_message.Message):
    __slots__ = ("candidate", "scores", "rejection_reasons")
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASONS_FIELD_NUMBER: _ClassVar[int]
    candidate: Candidate
    scores: _headshots_pb2.Scores
    rejection_reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, candidate: _Optional[_Union[Candidate, _Mapping]] = ..., scores: _Optional[_Union[_headshots_pb2.Scores, _Mapping]] = ..., rejection_reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class FilterBatchResult(_message.Message):
    __slots__ = ("round", "batch", "scored")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    round: int
    batch: int
    scored: _containers.RepeatedCompositeFieldContainer[ScoredCandidate]
    def __init__(self, round: _Optional[int] = ..., batch: _Optional[int] = ..., scored: _Optional[_Iterable[_Union[ScoredCandidate, _Mapping]]] = ...) -> None: ...

class Selection(_message.Message):
    __slots__ = ("result_ids", "summary")
    RESULT_IDS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    result_ids: _containers.RepeatedScalarFieldContainer[str]
    summary: _headshots_pb2.RejectionSummary
    def __init__(self, result_ids: _Optional[_Iterable[str]] = ..., summary: _Optional[_Union[_headshots_pb2.RejectionSummary, _Mapping]] = ...) -> None: ...

class MoreCandidatesNeeded(_message.Message):
    __slots__ = ("round", "passed", "wanted")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    WANTED_FIELD_NUMBER: _ClassVar[int]
    round: int
    passed: int
    wanted: int
    def __init__(self, round: _Optional[int] = ..., passed: _Optional[int] = ..., wanted: _Optional[int] = ...) -> None: ...

class OrderEvent(_message.Message):
    __slots__ = ("event_id", "tenant_id", "order_id", "stage", "kind", "time", "done", "total", "eta_seconds", "detail", "failure_reason", "job_id", "training", "scored", "selection", "needs_more", "deletion", "model_seconds", "round")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    NEEDS_MORE_FIELD_NUMBER: _ClassVar[int]
    DELETION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tenant_id: str
    order_id: str
    stage: _headshots_pb2.Stage
    kind: EventKind
    time: _timestamp_pb2.Timestamp
    done: int
    total: int
    eta_seconds: float
    detail: str
    failure_reason: str
    job_id: str
    training: TrainingResult
    scored: FilterBatchResult
    selection: Selection
    needs_more: MoreCandidatesNeeded
    deletion: _headshots_pb2.DeletionReceipt
    model_seconds: float
    round: int
    def __init__(self, event_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., stage: _Optional[_Union[_headshots_pb2.Stage, str]] = ..., kind: _Optional[_Union[EventKind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., eta_seconds: _Optional[float] = ..., detail: _Optional[str] = ..., failure_reason: _Optional[str] = ..., job_id: _Optional[str] = ..., training: _Optional[_Union[TrainingResult, _Mapping]] = ..., scored: _Optional[_Union[FilterBatchResult, _Mapping]] = ..., selection: _Optional[_Union[Selection, _Mapping]] = ..., needs_more: _Optional[_Union[MoreCandidatesNeeded, _Mapping]] = ..., deletion: _Optional[_Union[_headshots_pb2.DeletionReceipt, _Mapping]] = ..., model_seconds: _Optional[float] = ..., round: _Optional[int] = ...) -> None: ...

class LifecycleEvent(_message.Message):
    __slots__ = ("event_id", "tenant_id", "order_id", "state", "time", "photo_retention_days", "keep_model")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PHOTO_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    KEEP_MODEL_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tenant_id: str
    order_id: str
    state: _headshots_pb2.OrderState
    time: _timestamp_pb2.Timestamp
    photo_retention_days: int
    keep_model: bool
    def __init__(self, event_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., order_id: _Optional[str] = ..., state: _Optional[_Union[_headshots_pb2.OrderState, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., photo_retention_days: _Optional[int] = ..., keep_model: _Optional[bool] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("stream", "consumer", "stream_seq", "subject", "payload", "deliveries", "reason", "time")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQ_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    stream: str
    consumer: str
    stream_seq: int
    subject: str
    payload: bytes
    deliveries: int
    reason: str
    time: _timestamp_pb2.Timestamp
    def __init__(self, stream: _Optional[str] = ..., consumer: _Optional[str] = ..., stream_seq: _Optional[int] = ..., subject: _Optional[str] = ..., payload: _Optional[bytes] = ..., deliveries: _Optional[int] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
