"""An update upload is admitted by its first chunk, before the node reads (or buffers) the rest.

A ``SignedUpdate``'s encoding starts with everything but its parameter blob and signature: the
chain id, the client id and key, the base version, sample count and task, and the blob's length.
The first ``UpdateChunk`` carries that start and an ``UpdateHead`` with the blob's SHA-256 and
the update's signature, which is taken over those fields and the hash (``signing_bytes``), not
over the blob. So from one chunk the node checks, cheapest first:

- the start decodes, and the blob has exactly the length of the model's parameter blob (a delta
  has the model's layout), which bounds the whole upload's size;
- the sender is a registered client with exactly this key, not excluded, and the signature
  verifies (``UpdateGate.check_sender``); not too stale, not a replay (``check_slot``);
- the client's in-flight quota: the bytes of its uploads still streaming stay under
  ``quota_bytes`` (four uploads' worth by default: a client uploads one at a time, but its
  retries beside a stalled stream and the relays of its earlier updates may overlap).

A refused upload costs one chunk, and nothing is stored: the node stores an update only after
the whole of it passed the gate. The rest of the stream must then deliver exactly the declared
size, and the assembled update must carry the declared hash and signature
(``check_assembled``): an uploader cannot authenticate with one update's head and deliver another.
"""

from __future__ import annotations

from dataclasses import dataclass

from dualchain.apps.ctbc.fl import MAX_UPDATE_BYTES, UPDATE_TAG, SignedUpdate
from dualchain.chain.canonical import Reader
from dualchain.chain.errors import DecodeError
from dualchain.chain.identity import ID_BYTES
from dualchain.chain.types import HASH_BYTES, MAX_CHAIN_ID, MAX_KEY, MAX_SIGNATURE
from dualchain.node.gate import UpdateGate, UpdateRefused

_LENGTH_BYTES = 4  # a canonical var field's u32 length
QUOTA_UPLOADS = 4  # a client's in-flight quota, in uploads of the model's size


@dataclass(frozen=True, eq=False)
class UploadHead:
    """An upload's authenticated start: the update without its blob, and the stream's size."""

    update: SignedUpdate  # params empty; params_hash and signature from the UpdateHead
    params_len: int  # bytes of the parameter blob
    size: int  # bytes of the whole encoding the stream must deliver

    @property
    def client(self) -> bytes:
        return self.update.client


def parse_head(first: bytes, params_hash: bytes, signature: bytes) -> UploadHead:
    """The update named by a first chunk and its head; ``UpdateRefused("malformed")`` if not."""
    if len(params_hash) != HASH_BYTES:
        raise UpdateRefused("malformed", "the first chunk carries no update head (params_hash "
                            f"must be {HASH_BYTES} bytes, got {len(params_hash)})")
    if not 0 < len(signature) <= MAX_SIGNATURE:
        raise UpdateRefused("malformed", f"the update head's signature is {len(signature)} "
                            "bytes")
    try:
        r = Reader(first, UPDATE_TAG, "signed update")
        chain_id = r.text("chain_id", MAX_CHAIN_ID)
        client = r.fixed(ID_BYTES, "client")
        public_key = r.var("public_key", MAX_KEY)
        base, samples, task = r.u64("base_version"), r.u64("samples"), r.u64("task")
        params_len = r.u32("params")
    except DecodeError as exc:
        raise UpdateRefused("malformed", f"first chunk: {exc.reason}") from None
    if params_len > MAX_UPDATE_BYTES:
        raise UpdateRefused("oversized", f"the update's parameters are {params_len} bytes, "
                            f"above the limit of {MAX_UPDATE_BYTES}")
    update = SignedUpdate(chain_id, client, public_key, base, samples, task, b"", signature)
    update.__dict__["params_hash"] = params_hash  # the declared hash: what the signature covers
    size = _start_len(chain_id, public_key) + params_len + _LENGTH_BYTES + len(signature)
    return UploadHead(update, params_len, size)


def _start_len(chain_id: str, public_key: bytes) -> int:
    """Bytes of the encoding before the blob: tag, chain id, client, key, three u64, length."""
    return (4 + _LENGTH_BYTES + len(chain_id.encode("utf-8")) + ID_BYTES + _LENGTH_BYTES
            + len(public_key) + 3 * 8 + _LENGTH_BYTES)


class UploadIntake:
    """Admits uploads by their first chunk and holds each client's in-flight bytes (module
    docstring). Plain logic: the gRPC servicer calls ``open``, ``check_assembled``, ``close``."""

    def __init__(self, gate: UpdateGate, params_bytes: int, quota_bytes: int = 0) -> None:
        if params_bytes < 1:
            raise ValueError(f"the model's parameter blob size must be positive, got "
                             f"{params_bytes}")
        self.gate = gate
        self.params_bytes = params_bytes  # every delta blob has the model blob's length
        self.quota_bytes = quota_bytes or QUOTA_UPLOADS * (params_bytes + 8 * 1024)
        self._inflight: dict[bytes, int] = {}

    def inflight(self, client: bytes) -> int:
        return self._inflight.get(client, 0)

    def open(self, first: bytes, params_hash: bytes, signature: bytes,
             current_version: int) -> UploadHead:
        """Checks an upload's first chunk and reserves its size; ``UpdateRefused`` if it fails
        (nothing reserved). Every head ``open`` returns must be ``close``d."""
        head = parse_head(first, params_hash, signature)
        if head.params_len != self.params_bytes:
            raise UpdateRefused("shape", f"the update's parameter blob is {head.params_len} "
                                "bytes; "
                                f"the model's is {self.params_bytes}")
        if len(first) > head.size:
            raise UpdateRefused("oversized", "the first chunk is longer than the update")
        self.gate.check_sender(head.update)
        self.gate.check_slot(head.update, current_version)
        held = self.inflight(head.client)
        if held + head.size > self.quota_bytes:
            raise UpdateRefused("quota", f"client {head.client.hex()[:16]} has {held} bytes of "
                                f"uploads in flight; its quota is {self.quota_bytes}")
        self._inflight[head.client] = held + head.size
        return head

    def close(self, head: UploadHead) -> None:
        """Releases an upload's reservation, whatever became of it."""
        left = self.inflight(head.client) - head.size
        if left > 0:
            self._inflight[head.client] = left
        else:
            self._inflight.pop(head.client, None)

    @staticmethod
    def check_assembled(head: UploadHead, raw: bytes) -> None:
        """The delivered update is the one the head authenticated: its size, blob hash and
        signature (the gate then checks the whole update as any other)."""
        if len(raw) != head.size:
            raise UpdateRefused("malformed", f"the upload ended after {len(raw)} of the "
                                f"{head.size} bytes its first chunk declared")
        try:
            update = SignedUpdate.decode(raw)
        except DecodeError as exc:
            raise UpdateRefused("malformed", exc.reason) from None
        if update.params_hash != head.update.params_hash or \
                update.signature != head.update.signature:
            raise UpdateRefused("head_mismatch", "the update is not the one its first chunk "
                                "declared (blob hash or signature differ)")
