"""The gRPC face of a chain daemon: decode, call the node, map typed errors to statuses.

The chain and peer services are the same for both chains; what differs (status fields, the
consensus messages on the gossip stream) is asked of the node. CMBC daemons also serve miners.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from dualchain.chain import wire
from dualchain.chain.daemon.base import ChainNodeBase, now_ms
from dualchain.chain.daemon.cmbc import CmbcNode
from dualchain.chain.daemon.txstatus import tx_statuses
from dualchain.chain.errors import (
    DecodeError,
    DualchainError,
    MempoolError,
    NotFoundError,
    ValidationError,
)
from dualchain.chain.rpc import abort
from dualchain.chain.types import Block, Transaction
from dualchain.chain.uploads import BlobUpload
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import miner_pb2 as miner_pb
from dualchain.proto.v1 import miner_pb2_grpc as miner_grpc
from dualchain.proto.v1 import peer_pb2 as peer_pb
from dualchain.proto.v1 import peer_pb2_grpc as peer_grpc

MAX_SYNC_BLOCKS = 256
RESEND_WINDOW = 1024  # heights a block stream remembers; CMBC reorgs are far shallower
BLOB_CHUNK = 1 << 20
MAX_BALANCE_ACCOUNTS = 1024


class ChainServicer(chain_grpc.ChainServiceServicer):
    def __init__(self, node: ChainNodeBase) -> None:
        self.node = node

    async def SubmitTx(self, request, context):
        try:
            tx = wire.tx_from_proto(request.tx)
            outcome = (await self.node.submit([tx]))[0]
            if outcome.error is not None:
                raise outcome.error
        except DualchainError as exc:
            self.node.metrics.rejected.labels(exc.code).inc()
            await abort(context, exc)
        return chain_pb.SubmitTxResponse(tx_hash=tx.hash)

    async def SubmitTxs(self, request, context):
        # A busy replica turns a whole batch away before decoding it: refusals must cost it
        # less than admissions, or the retries of an overloaded chain's clients eat its CPU.
        busy = self.node.busy_reason()
        if busy is not None:
            self.node.metrics.rejected.labels("busy").inc(len(request.txs))
            await abort(context, MempoolError(busy, code="busy"))
        results: list[chain_pb.TxResult | None] = [None] * len(request.txs)
        decoded: list[tuple[int, Transaction]] = []
        for i, message in enumerate(request.txs):
            try:
                decoded.append((i, wire.tx_from_proto(message)))
            except DecodeError as exc:
                self.node.metrics.rejected.labels(exc.code).inc()
                results[i] = chain_pb.TxResult(accepted=False, code=exc.code, reason=exc.reason)
        outcomes = await self.node.submit([tx for _, tx in decoded])
        for (i, _), outcome in zip(decoded, outcomes, strict=True):
            error = outcome.error
            results[i] = chain_pb.TxResult(
                tx_hash=outcome.tx_hash, accepted=error is None,
                code=error.code if error else "", reason=error.reason if error else "",
            )
        return chain_pb.SubmitTxsResponse(results=results)

    async def GetBlock(self, request, context):
        node = self.node
        try:
            if request.WhichOneof("selector") == "hash":
                if len(request.hash) != 32:
                    raise DecodeError("hash must be 32 bytes")
                block = await node.in_store(node.store.get_block, bytes(request.hash))
                canonical = await node.in_store(node.store.canonical_hash, block.height)
                is_canonical = canonical == block.hash
            elif request.WhichOneof("selector") == "height":
                if request.height > node.height:  # also keeps 2^64-1 away from SQLite
                    raise NotFoundError(f"no block at height {request.height}: the chain is "
                                        f"at {node.height}")
                block = await node.in_store(node.store.canonical_block, request.height)
                is_canonical = True
            else:
                raise DecodeError("give a block hash or a height")
        except DualchainError as exc:
            await abort(context, exc)
        return chain_pb.GetBlockResponse(block=wire.block_to_proto(block), canonical=is_canonical)

    async def GetStatus(self, request, context):
        return self.node.status_message()

    async def GetNonce(self, request, context):
        node = self.node
        if len(request.sender) != 32:
            await abort(context, DecodeError("sender must be a 32-byte identity id"))
        sender = bytes(request.sender)
        await node.load_nonces([sender])
        # What admission will take: after its committed transactions and the run of them
        # already waiting, and how many more (a nonce past that is refused as nonce_gap).
        nonce, admissible = node.mempool.admission_window(sender, node.next_nonce(sender))
        return chain_pb.GetNonceResponse(next_nonce=nonce, admissible=admissible)

    async def GetBalances(self, request, context):
        """The application's balances at its applied height (read on the loop, which applies
        blocks, so they and the height are one state)."""
        if len(request.accounts) > MAX_BALANCE_ACCOUNTS:
            await abort(context, DecodeError(
                f"at most {MAX_BALANCE_ACCOUNTS} accounts, got {len(request.accounts)}"))
        if any(len(a) != 32 for a in request.accounts):
            await abort(context, DecodeError("an account must be a 32-byte identity id"))
        balances = self.node.app.balances()
        accounts = (sorted({bytes(a) for a in request.accounts}) if request.accounts
                    else sorted(balances))
        return chain_pb.GetBalancesResponse(
            balances=[chain_pb.Balance(account=a, amount=balances.get(a, 0)) for a in accounts],
            height=self.node.height)

    async def GetTxStatus(self, request, context):
        try:
            statuses = await tx_statuses(self.node, list(request.tx_hashes))
        except DualchainError as exc:
            await abort(context, exc)
        return chain_pb.GetTxStatusResponse(statuses=statuses)

    async def PutBlob(self, request_iterator, context):
        """Admits the signed upload the first chunk names before keeping any byte; receives at
        most the signed size (see ``uploads.BlobIntake``)."""
        intake = getattr(self.node, "uploads", None)
        if intake is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "no_blobs: this chain keeps no blobs (CTBC with an fl genesis)")
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise DecodeError("PutBlob needs at least one chunk")
        admitted = await intake.admit(bytes(first.expected_hash),
                                      _upload(first, self.node.chain_id), now_ms())
        stored = False
        try:
            chunks, total = [bytes(first.data)], len(first.data)
            async for chunk in request_iterator:
                total += len(chunk.data)
                if total > admitted.upload.size:
                    raise ValidationError(f"more than the {admitted.upload.size} bytes signed",
                                          code="size_mismatch")
                chunks.append(bytes(chunk.data))
            h = await intake.store(admitted, chunks)
            stored = True
        finally:
            intake.close(admitted, stored)
        return chain_pb.PutBlobResponse(hash=h, size=total)

    async def GetBlob(self, request, context) -> AsyncIterator:
        node = self.node
        blobs = getattr(node, "blobs", None)
        if blobs is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                "no_blobs: this chain keeps no blobs")
        try:
            if len(request.hash) != 32:
                raise DecodeError("hash must be 32 bytes")
            data = await node.in_store(blobs.get, bytes(request.hash))
        except DualchainError as exc:
            await abort(context, exc)
        for start in range(0, max(len(data), 1), BLOB_CHUNK):
            yield chain_pb.BlobChunk(data=data[start : start + BLOB_CHUNK])

    async def SubscribeBlocks(self, request, context) -> AsyncIterator:
        """Canonical blocks by height; after a reorg (CMBC) it resends from the fork point."""
        node = self.node
        final = request.final_only
        next_height = request.from_height
        # The hashes this stream sent, by height (the last RESEND_WINDOW of them). After a reorg
        # the stream steps back to the highest height where what it sent is still canonical.
        # Remembering only the last hash is not enough: it assumed the block below it was still
        # the one sent, so a reorg two or more blocks deep skipped blocks of the new branch, and
        # a reorg to a shorter (heavier) chain was not noticed until the chain grew back.
        sent: dict[int, bytes] = {}
        while True:
            seen = node.head_version
            while next_height - 1 in sent and sent[next_height - 1] != await node.in_store(
                    node.store.canonical_hash, next_height - 1):
                next_height -= 1
            while next_height <= (node.final_height if final else node.height):
                try:
                    block = await node.in_store(node.store.canonical_block, next_height)
                except NotFoundError:
                    break  # a reorg to a shorter chain is under way: step back once it is done
                if next_height - 1 in sent and block.header.parent_hash != sent[next_height - 1]:
                    break  # a reorg replaced what was sent: step back once it is done
                yield wire.block_to_proto(block)
                sent[next_height] = block.hash
                sent.pop(next_height - RESEND_WINDOW, None)
                next_height += 1
            await node.wait_for_change(seen)  # at once if the head changed since ``seen``


class PeerServicer(peer_grpc.PeerServiceServicer):
    def __init__(self, node: ChainNodeBase) -> None:
        self.node = node

    async def _check_hello(self, hello: peer_pb.Hello, context) -> None:
        if hello.genesis_hash != self.node.genesis.hash:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"wrong_genesis: peer genesis {bytes(hello.genesis_hash).hex()[:16]} differs "
                f"from ours {self.node.genesis.hash.hex()[:16]}",
            )

    async def Handshake(self, request, context):
        await self._check_hello(request, context)
        return self.node.hello()

    async def Gossip(self, request_iterator, context):
        node = self.node
        received = 0
        # The address the peer's hello claims: unverified, so only a hint of which replica to
        # ask first for what its messages lack, never a name in the log. A refusal is logged
        # by the edge (rate-limited) under the transport address, context.peer().
        claimed = ""
        async for message in request_iterator:
            kind = message.WhichOneof("kind")
            node.metrics.peer_messages.labels(kind or "none").inc()
            node.metrics.peer_bytes.labels(kind or "none").inc(message.ByteSize())
            try:
                if received == 0:
                    if kind != "hello":
                        raise DecodeError("a gossip stream must start with hello")
                    await self._check_hello(message.hello, context)
                    claimed = message.hello.address
                elif kind == "txs":
                    node.on_peer_txs(message.txs.txs)
                elif kind == "hello":
                    raise DecodeError("hello comes once, first")
                else:
                    await node.on_peer_message(message, claimed)
            except DualchainError as exc:
                node.metrics.rejected.labels(f"peer_{exc.code}").inc()
                await abort(context, exc)
            received += 1
        return peer_pb.GossipSummary(received=received)

    async def GetBlocks(self, request, context):
        node = self.node
        last = min(node.height, request.from_height + min(request.max_blocks or 1,
                                                          MAX_SYNC_BLOCKS) - 1)
        for height in range(request.from_height, last + 1):
            block, certificate = await node.in_store(_certified, node, height)
            yield peer_pb.CertifiedBlock(block=block, certificate=certificate or b"")

    async def GetBlockByHash(self, request, context):
        node = self.node
        try:
            if len(request.hash) != 32:
                raise DecodeError("hash must be 32 bytes")
            block = node.known_block(bytes(request.hash))
            if block is not None:
                return peer_pb.CertifiedBlock(block=block.encoded)
            stored: Block = await node.in_store(node.store.get_block, bytes(request.hash))
            certificate = await node.in_store(node.store.get_certificate, stored.hash)
            return peer_pb.CertifiedBlock(block=stored.encoded, certificate=certificate or b"")
        except (NotFoundError, ValidationError, DecodeError) as exc:
            await abort(context, exc)


    async def GetBlockTransactions(self, request, context):
        node = self.node
        try:
            if len(request.block_hash) != 32 or any(len(h) != 32 for h in request.tx_hashes):
                raise DecodeError("hashes must be 32 bytes")
            if len(request.tx_hashes) > node.params.max_block_txs:
                raise DecodeError(f"more than {node.params.max_block_txs} transactions asked")
        except DecodeError as exc:
            await abort(context, exc)
        txs = node.block_transactions(bytes(request.block_hash),
                                      [bytes(h) for h in request.tx_hashes])
        return peer_pb.TxBatch(txs=[tx.encoded for tx in txs])


def _upload(first: chain_pb.BlobChunk, chain_id: str) -> BlobUpload | None:
    if not first.HasField("upload"):
        return None
    u = first.upload
    return BlobUpload(chain_id, bytes(u.uploader), bytes(first.expected_hash), u.size,
                      u.timestamp_ms, bytes(u.signature))


def _certified(node: ChainNodeBase, height: int) -> tuple[bytes, bytes | None]:
    """A canonical block's stored bytes (served undecoded: the peer checks them) and its
    certificate."""
    block = node.store.canonical_block_bytes(height)
    block_hash = node.store.canonical_hash(height)
    assert block_hash is not None
    return block, node.store.get_certificate(block_hash)


class MinerServicer(miner_grpc.MinerServiceServicer):
    def __init__(self, node: CmbcNode) -> None:
        self.node = node

    async def GetBlockTemplate(self, request, context):
        try:
            return await self.node.block_template(bytes(request.miner_public_key),
                                                  request.hashrate_hs,
                                                  bytes(request.reward_account))
        except DualchainError as exc:
            await abort(context, exc)

    async def SubmitBlock(self, request, context):
        try:
            outcome, block = await self.node.submit_solution(
                bytes(request.template_id), bytes(request.header), bytes(request.reward_tx))
        except DualchainError as exc:
            self.node.metrics.rejected.labels(f"block_{exc.code}").inc()
            await abort(context, exc)
        return miner_pb.SubmitBlockResponse(outcome=outcome, block_hash=block.hash,
                                            height=block.height)

    async def WatchTip(self, request, context) -> AsyncIterator:
        node = self.node
        while True:
            seen = node.head_version
            tip, pending = node.mining_tip
            yield miner_pb.TipEvent(head_hash=tip.hash, height=tip.height, pending=pending)
            await node.wait_for_change(seen)
