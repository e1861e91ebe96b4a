from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TxKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TX_KIND_UNSPECIFIED: _ClassVar[TxKind]
    TX_KIND_MEMO: _ClassVar[TxKind]
    TX_KIND_VALIDATOR_REGISTER: _ClassVar[TxKind]
    TX_KIND_VALIDATOR_REMOVE: _ClassVar[TxKind]
    TX_KIND_CLIENT_REGISTER: _ClassVar[TxKind]
    TX_KIND_STATE_REPORT: _ClassVar[TxKind]
    TX_KIND_GROUP_ASSIGNMENT: _ClassVar[TxKind]
    TX_KIND_TASK_PLAN: _ClassVar[TxKind]
    TX_KIND_NODE_JOIN_REQUEST: _ClassVar[TxKind]
    TX_KIND_MODEL_VERSION: _ClassVar[TxKind]
    TX_KIND_EVIDENCE: _ClassVar[TxKind]
    TX_KIND_ANCHOR: _ClassVar[TxKind]
    TX_KIND_REWARD: _ClassVar[TxKind]
    TX_KIND_CLIENT_READMIT: _ClassVar[TxKind]

class VoteStep(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_STEP_UNSPECIFIED: _ClassVar[VoteStep]
    VOTE_STEP_PREVOTE: _ClassVar[VoteStep]
    VOTE_STEP_PRECOMMIT: _ClassVar[VoteStep]
TX_KIND_UNSPECIFIED: TxKind
TX_KIND_MEMO: TxKind
TX_KIND_VALIDATOR_REGISTER: TxKind
TX_KIND_VALIDATOR_REMOVE: TxKind
TX_KIND_CLIENT_REGISTER: TxKind
TX_KIND_STATE_REPORT: TxKind
TX_KIND_GROUP_ASSIGNMENT: TxKind
TX_KIND_TASK_PLAN: TxKind
TX_KIND_NODE_JOIN_REQUEST: TxKind
TX_KIND_MODEL_VERSION: TxKind
TX_KIND_EVIDENCE: TxKind
TX_KIND_ANCHOR: TxKind
TX_KIND_REWARD: TxKind
TX_KIND_CLIENT_READMIT: TxKind
VOTE_STEP_UNSPECIFIED: VoteStep
VOTE_STEP_PREVOTE: VoteStep
VOTE_STEP_PRECOMMIT: VoteStep

class Transaction(_message.Message):
    __slots__ = ("chain_id", "kind", "sender", "public_key", "nonce", "timestamp_ms", "payload", "signature")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    kind: TxKind
    sender: bytes
    public_key: bytes
    nonce: int
    timestamp_ms: int
    payload: bytes
    signature: bytes
    def __init__(self, chain_id: _Optional[str] = ..., kind: _Optional[_Union[TxKind, str]] = ..., sender: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., nonce: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("signer", "signature")
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    signer: bytes
    signature: bytes
    def __init__(self, signer: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("chain_id", "height", "round", "step", "block_hash", "voter", "signature")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    round: int
    step: VoteStep
    block_hash: bytes
    voter: bytes
    signature: bytes
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., round: _Optional[int] = ..., step: _Optional[_Union[VoteStep, str]] = ..., block_hash: _Optional[bytes] = ..., voter: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class QuorumCertificate(_message.Message):
    __slots__ = ("chain_id", "height", "round", "step", "block_hash", "signatures")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    round: int
    step: VoteStep
    block_hash: bytes
    signatures: _containers.RepeatedCompositeFieldContainer[Signature]
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., round: _Optional[int] = ..., step: _Optional[_Union[VoteStep, str]] = ..., block_hash: _Optional[bytes] = ..., signatures: _Optional[_Iterable[_Union[Signature, _Mapping]]] = ...) -> None: ...

class BlockHeader(_message.Message):
    __slots__ = ("chain_id", "height", "parent_hash", "tx_root", "timestamp_ms", "proposer", "app_hash", "view", "parent_qc", "pow_target", "pow_nonce", "signature")
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TX_ROOT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    APP_HASH_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    PARENT_QC_FIELD_NUMBER: _ClassVar[int]
    POW_TARGET_FIELD_NUMBER: _ClassVar[int]
    POW_NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    chain_id: str
    height: int
    parent_hash: bytes
    tx_root: bytes
    timestamp_ms: int
    proposer: bytes
    app_hash: bytes
    view: int
    parent_qc: QuorumCertificate
    pow_target: bytes
    pow_nonce: int
    signature: bytes
    def __init__(self, chain_id: _Optional[str] = ..., height: _Optional[int] = ..., parent_hash: _Optional[bytes] = ..., tx_root: _Optional[bytes] = ..., timestamp_ms: _Optional[int] = ..., proposer: _Optional[bytes] = ..., app_hash: _Optional[bytes] = ..., view: _Optional[int] = ..., parent_qc: _Optional[_Union[QuorumCertificate, _Mapping]] = ..., pow_target: _Optional[bytes] = ..., pow_nonce: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class BlockBody(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("header", "body")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    header: BlockHeader
    body: BlockBody
    def __init__(self, header: _Optional[_Union[BlockHeader, _Mapping]] = ..., body: _Optional[_Union[BlockBody, _Mapping]] = ...) -> None: ...
