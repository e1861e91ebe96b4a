"""A server node's blob uploads to its CTBC replica: the chunks of one signed PutBlob stream."""

from __future__ import annotations

import hashlib

from dualchain.chain.clock import now_ms
from dualchain.chain.identity import Signer
from dualchain.chain.uploads import sign_upload
from dualchain.proto.v1 import chain_pb2 as chain_pb

CHUNK = 1 << 20


def upload_chunks(signer: Signer, chain_id: str, data: bytes,
                  chunk: int = CHUNK) -> list[chain_pb.BlobChunk]:
    """``data`` in chunks; the first names its hash and carries the upload signed by
    ``signer`` (only the chain's validators may store blobs)."""
    digest = hashlib.sha256(data).digest()
    upload = sign_upload(signer, chain_id, digest, len(data), now_ms())
    parts = [data[i : i + chunk] for i in range(0, max(len(data), 1), chunk)]
    first = chain_pb.BlobChunk(data=parts[0], expected_hash=digest, upload=chain_pb.BlobUpload(
        uploader=upload.uploader, size=upload.size, timestamp_ms=upload.timestamp_ms,
        signature=upload.signature))
    return [first, *(chain_pb.BlobChunk(data=p) for p in parts[1:])]
