from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class BlockTemplateRequest(_message.Message):
    __slots__ = ("miner_public_key", "hashrate_hs", "reward_account")
    MINER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    HASHRATE_HS_FIELD_NUMBER: _ClassVar[int]
    REWARD_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    miner_public_key: bytes
    hashrate_hs: float
    reward_account: bytes
    def __init__(self, miner_public_key: _Optional[bytes] = ..., hashrate_hs: _Optional[float] = ..., reward_account: _Optional[bytes] = ...) -> None: ...

class BlockTemplate(_message.Message):
    __slots__ = ("template_id", "chain_id", "height", "parent_hash", "target", "timestamp_ms", "app_hash", "reward_tx", "tx_hashes")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    APP_HASH_FIELD_NUMBER: _ClassVar[int]
    REWARD_TX_FIELD_NUMBER: _ClassVar[int]
    TX_HASHES_FIELD_NUMBER: _ClassVar[int]
    template_id: bytes
    chain_id: str
    height: int
    parent_hash: bytes
    target: bytes
    timestamp_ms: int
    app_hash: bytes
    reward_tx: bytes
    tx_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, template_id: _Optional[bytes] = ..., chain_id: _Optional[str] = ..., height: _Optional[int] = ..., parent_hash: _Optional[bytes] = ..., target: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., app_hash: _Optional[bytes] = ..., reward_tx: _Optional[bytes] = ..., tx_hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SubmitBlockRequest(_message.Message):
    __slots__ = ("template_id", "header", "reward_tx")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REWARD_TX_FIELD_NUMBER: _ClassVar[int]
    template_id: bytes
    header: bytes
    reward_tx: bytes
    def __init__(self, template_id: _Optional[bytes] = ..., header: _Optional[bytes] = ..., reward_tx: _Optional[bytes] = ...) -> None: ...

class SubmitBlockResponse(_message.Message):
    __slots__ = ("outcome", "block_hash", "height")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    block_hash: bytes
    height: int
    def __init__(self, outcome: _Optional[str] = ..., block_hash: _Optional[bytes] = ..., height: _Optional[int] = ...) -> None: ...

class WatchTipRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TipEvent(_message.Message):
    __slots__ = ("head_hash", "height", "pending")
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    head_hash: bytes
    height: int
    pending: bool
    def __init__(self, head_hash: _Optional[bytes] = ..., height: _Optional[int] = ..., pending: _Optional[bool] = ...) -> None: ...
