from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("genesis_hash", "node_id", "height", "address", "cumulative_work")
    GENESIS_HASH_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_WORK_FIELD_NUMBER: _ClassVar[int]
    genesis_hash: bytes
    node_id: bytes
    height: int
    address: str
    cumulative_work: bytes
    def __init__(self, genesis_hash: _Optional[bytes] = ..., node_id: _Optional[bytes] = ..., height: _Optional[int] = ..., address: _Optional[str] = ..., cumulative_work: _Optional[bytes] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("hello", "proposal", "vote", "txs", "block", "compact_block", "compact_proposal", "votes")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    VOTE_FIELD_NUMBER: _ClassVar[int]
    TXS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    COMPACT_BLOCK_FIELD_NUMBER: _ClassVar[int]
    COMPACT_PROPOSAL_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    proposal: bytes
    vote: bytes
    txs: TxBatch
    block: bytes
    compact_block: bytes
    compact_proposal: bytes
    votes: VoteBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., proposal: _Optional[bytes] = ..., vote: _Optional[bytes] = ..., txs: _Optional[_Union[TxBatch, _Mapping]] = ..., block: _Optional[bytes] = ..., compact_block: _Optional[bytes] = ..., compact_proposal: _Optional[bytes] = ..., votes: _Optional[_Union[VoteBatch, _Mapping]] = ...) -> None: ...

class VoteBatch(_message.Message):
    __slots__ = ("votes",)
    VOTES_FIELD_NUMBER: _ClassVar[int]
    votes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, votes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class TxBatch(_message.Message):
    __slots__ = ("txs",)
    TXS_FIELD_NUMBER: _ClassVar[int]
    txs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, txs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GossipSummary(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class GetBlocksRequest(_message.Message):
    __slots__ = ("from_height", "max_blocks")
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    from_height: int
    max_blocks: int
    def __init__(self, from_height: _Optional[int] = ..., max_blocks: _Optional[int] = ...) -> None: ...

class GetBlockByHashRequest(_message.Message):
    __slots__ = ("hash",)
    HASH_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    def __init__(self, hash: _Optional[bytes] = ...) -> None: ...

class GetBlockTransactionsRequest(_message.Message):
    __slots__ = ("block_hash", "tx_hashes")
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    TX_HASHES_FIELD_NUMBER: _ClassVar[int]
    block_hash: bytes
    tx_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, block_hash: _Optional[bytes] = ..., tx_hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class CertifiedBlock(_message.Message):
    __slots__ = ("block", "certificate")
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    block: bytes
    certificate: bytes
    def __init__(self, block: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...
