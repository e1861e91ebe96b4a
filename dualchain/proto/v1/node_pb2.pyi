from dualchain.proto.v1 import chain_pb2 as _chain_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PingRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: bytes
    def __init__(self, client_id: _Optional[bytes] = ...) -> None: ...

class PingReply(_message.Message):
    __slots__ = ("node_id", "version", "server_time_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    version: int
    server_time_ms: int
    def __init__(self, node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., server_time_ms: _Optional[int] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: bytes
    def __init__(self, client_id: _Optional[bytes] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "version", "model_hash", "batches", "batch_size", "learning_rate", "deadline_ms", "wait_ms", "dataset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    version: int
    model_hash: bytes
    batches: int
    batch_size: int
    learning_rate: float
    deadline_ms: int
    wait_ms: int
    dataset: str
    def __init__(self, task_id: _Optional[int] = ..., version: _Optional[int] = ..., model_hash: _Optional[bytes] = ..., batches: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., deadline_ms: _Optional[int] = ..., wait_ms: _Optional[int] = ..., dataset: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_hash",)
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    model_hash: bytes
    def __init__(self, model_hash: _Optional[bytes] = ...) -> None: ...

class UpdateChunk(_message.Message):
    __slots__ = ("data", "head")
    DATA_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    head: UpdateHead
    def __init__(self, data: _Optional[bytes] = ..., head: _Optional[_Union[UpdateHead, _Mapping]] = ...) -> None: ...

class UpdateHead(_message.Message):
    __slots__ = ("params_hash", "signature")
    PARAMS_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    params_hash: bytes
    signature: bytes
    def __init__(self, params_hash: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class SubmitUpdateReply(_message.Message):
    __slots__ = ("update_digest", "current_version")
    UPDATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    update_digest: bytes
    current_version: int
    def __init__(self, update_digest: _Optional[bytes] = ..., current_version: _Optional[int] = ...) -> None: ...

class NodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "version", "accuracy", "loss", "updates_accepted", "updates_refused", "aggregator", "ctbc_height", "cmbc_final_height", "clients", "bytes_from_clients", "bytes_to_clients", "bytes_relayed")
    class UpdatesRefusedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    UPDATES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    CTBC_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CMBC_FINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    BYTES_RELAYED_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    version: int
    accuracy: float
    loss: float
    updates_accepted: int
    updates_refused: _containers.ScalarMap[str, int]
    aggregator: bool
    ctbc_height: int
    cmbc_final_height: int
    clients: int
    bytes_from_clients: int
    bytes_to_clients: int
    bytes_relayed: int
    def __init__(self, node_id: _Optional[bytes] = ..., version: _Optional[int] = ..., accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., updates_accepted: _Optional[int] = ..., updates_refused: _Optional[_Mapping[str, int]] = ..., aggregator: _Optional[bool] = ..., ctbc_height: _Optional[int] = ..., cmbc_final_height: _Optional[int] = ..., clients: _Optional[int] = ..., bytes_from_clients: _Optional[int] = ..., bytes_to_clients: _Optional[int] = ..., bytes_relayed: _Optional[int] = ...) -> None: ...
