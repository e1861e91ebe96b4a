from dualchain.proto.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TxState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TX_STATE_UNKNOWN: _ClassVar[TxState]
    TX_STATE_PENDING: _ClassVar[TxState]
    TX_STATE_COMMITTED: _ClassVar[TxState]
    TX_STATE_DROPPED: _ClassVar[TxState]
TX_STATE_UNKNOWN: TxState
TX_STATE_PENDING: TxState
TX_STATE_COMMITTED: TxState
TX_STATE_DROPPED: TxState

class GetBalancesRequest(_message.Message):
    __slots__ = ("accounts",)
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, accounts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Balance(_message.Message):
    __slots__ = ("account", "amount")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    account: bytes
    amount: int
    def __init__(self, account: _Optional[bytes] = ..., amount: _Optional[int] = ...) -> None: ...

class GetBalancesResponse(_message.Message):
    __slots__ = ("balances", "height")
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    balances: _containers.RepeatedCompositeFieldContainer[Balance]
    height: int
    def __init__(self, balances: _Optional[_Iterable[_Union[Balance, _Mapping]]] = ..., height: _Optional[int] = ...) -> None: ...

class GetNonceRequest(_message.Message):
    __slots__ = ("sender",)
    SENDER_FIELD_NUMBER: _ClassVar[int]
    sender: bytes
    def __init__(self, sender: _Optional[bytes] = ...) -> None: ...

class GetNonceResponse(_message.Message):
    __slots__ = ("next_nonce", "admissible")
    NEXT_NONCE_FIELD_NUMBER: _ClassVar[int]
    ADMISSIBLE_FIELD_NUMBER: _ClassVar[int]
    next_nonce: int
    admissible: int
    def __init__(self, next_nonce: _Optional[int] = ..., admissible: _Optional[int] = ...) -> None: ...

class GetTxStatusRequest(_message.Message):
    __slots__ = ("tx_hashes",)
    TX_HASHES_FIELD_NUMBER: _ClassVar[int]
    tx_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, tx_hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TxStatus(_message.Message):
    __slots__ = ("tx_hash", "state", "height", "final", "code", "reason")
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tx_hash: bytes
    state: TxState
    height: int
    final: bool
    code: str
    reason: str
    def __init__(self, tx_hash: _Optional[bytes] = ..., state: _Optional[_Union[TxState, str]] = ..., height: _Optional[int] = ..., final: _Optional[bool] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetTxStatusResponse(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedCompositeFieldContainer[TxStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[TxStatus, _Mapping]]] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("data", "expected_hash", "upload")
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HASH_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    expected_hash: bytes
    upload: BlobUpload
    def __init__(self, data: _Optional[bytes] = ..., expected_hash: _Optional[bytes] = ..., upload: _Optional[_Union[BlobUpload, _Mapping]] = ...) -> None: ...

class BlobUpload(_message.Message):
    __slots__ = ("uploader", "size", "timestamp_ms", "signature")
    UPLOADER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    uploader: bytes
    size: int
    timestamp_ms: int
    signature: bytes
    def __init__(self, uploader: _Optional[bytes] = ..., size: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PutBlobResponse(_message.Message):
    __slots__ = ("hash", "size")
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    size: int
    def __init__(self, hash: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    def __init__(self, hash: _Optional[bytes] = ...) -> None: ...

class SubmitTxRequest(_message.Message):
    __slots__ = ("tx",)
    TX_FIELD_NUMBER: _ClassVar[int]
    tx: _ledger_pb2.Transaction
    def __init__(self, tx: _Optional[_Union[_ledger_pb2.Transaction, _Mapping]] = ...) -> None: ...

class SubmitTxResponse(_message.Message):
    __slots__ = ("tx_hash",)
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    tx_hash: bytes
    def __init__(self, tx_hash: _Optional[bytes] = ...) -> None: ...

class SubmitTxsRequest(_message.Message):
    __slots__ = ("txs",)
    TXS_FIELD_NUMBER: _ClassVar[int]
    txs: _containers.RepeatedCompositeFieldContainer[_ledger_pb2.Transaction]
    def __init__(self, txs: _Optional[_Iterable[_Union[_ledger_pb2.Transaction, _Mapping]]] = ...) -> None: ...

class TxResult(_message.Message):
    __slots__ = ("tx_hash", "accepted", "code", "reason")
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tx_hash: bytes
    accepted: bool
    code: str
    reason: str
    def __init__(self, tx_hash: _Optional[bytes] = ..., accepted: _Optional[bool] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SubmitTxsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TxResult]
    def __init__(self, results: _Optional[_Iterable[_Union[TxResult, _Mapping]]] = ...) -> None: ...

class GetBlockRequest(_message.Message):
    __slots__ = ("hash", "height")
    HASH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    height: int
    def __init__(self, hash: _Optional[bytes] = ..., height: _Optional[int] = ...) -> None: ...

class GetBlockResponse(_message.Message):
    __slots__ = ("block", "canonical")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    CANONICAL_FIELD_NUMBER: _ClassVar[int]
    block: _ledger_pb2.Block
    canonical: bool
    def __init__(self, block: _Optional[_Union[_ledger_pb2.Block, _Mapping]] = ..., canonical: _Optional[bool] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerInfo(_message.Message):
    __slots__ = ("id", "address", "connected", "height")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    id: bytes
    address: str
    connected: bool
    height: int
    def __init__(self, id: _Optional[bytes] = ..., address: _Optional[str] = ..., connected: _Optional[bool] = ..., height: _Optional[int] = ...) -> None: ...

class ChainStatus(_message.Message):
    __slots__ = ("chain_id", "kind", "genesis_hash", "height", "head_hash", "final_height", "final_hash", "view", "leader", "committee", "target", "cumulative_work", "mempool_size", "peers", "model_version", "model_hash", "model_height", "validators", "clients", "excluded")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GENESIS_HASH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    FINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FINAL_HASH_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    COMMITTEE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_WORK_FIELD_NUMBER: _ClassVar[int]
    MEMPOOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_HASH_FIELD_NUMBER: _ClassVar[int]
    MODEL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    VALIDATORS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    kind: str
    genesis_hash: bytes
    height: int
    head_hash: bytes
    final_height: int
    final_hash: bytes
    view: int
    leader: bytes
    committee: _containers.RepeatedScalarFieldContainer[bytes]
    target: bytes
    cumulative_work: bytes
    mempool_size: int
    peers: _containers.RepeatedCompositeFieldContainer[PeerInfo]
    model_version: int
    model_hash: bytes
    model_height: int
    validators: _containers.RepeatedScalarFieldContainer[bytes]
    clients: _containers.RepeatedCompositeFieldContainer[ClientStanding]
    excluded: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, chain_id: _Optional[str] = ..., kind: _Optional[str] = ..., genesis_hash: _Optional[bytes] = ..., height: _Optional[int] = ..., head_hash: _Optional[bytes] = ..., final_height: _Optional[int] = ..., final_hash: _Optional[bytes] = ..., view: _Optional[int] = ..., leader: _Optional[bytes] = ..., committee: _Optional[_Iterable[bytes]] = ..., target: _Optional[bytes] = ..., cumulative_work: _Optional[bytes] = ..., mempool_size: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[PeerInfo, _Mapping]]] = ..., model_version: _Optional[int] = ..., model_hash: _Optional[bytes] = ..., model_height: _Optional[int] = ..., validators: _Optional[_Iterable[bytes]] = ..., clients: _Optional[_Iterable[_Union[ClientStanding, _Mapping]]] = ..., excluded: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ClientStanding(_message.Message):
    __slots__ = ("client", "offences", "counted", "readmissions", "reputation", "excluded", "last_version", "last_reason")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    OFFENCES_FIELD_NUMBER: _ClassVar[int]
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    READMISSIONS_FIELD_NUMBER: _ClassVar[int]
    REPUTATION_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    LAST_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_REASON_FIELD_NUMBER: _ClassVar[int]
    client: bytes
    offences: int
    counted: int
    readmissions: int
    reputation: float
    excluded: bool
    last_version: int
    last_reason: str
    def __init__(self, client: _Optional[bytes] = ..., offences: _Optional[int] = ..., counted: _Optional[int] = ..., readmissions: _Optional[int] = ..., reputation: _Optional[float] = ..., excluded: _Optional[bool] = ..., last_version: _Optional[int] = ..., last_reason: _Optional[str] = ...) -> None: ...

class SubscribeBlocksRequest(_message.Message):
    __slots__ = ("from_height", "final_only")
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FINAL_ONLY_FIELD_NUMBER: _ClassVar[int]
    from_height: int
    final_only: bool
    def __init__(self, from_height: _Optional[int] = ..., final_only: _Optional[bool] = ...) -> None: ...
