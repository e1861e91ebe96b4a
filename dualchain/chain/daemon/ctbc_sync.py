"""How a CTBC replica catches up: a block a quorum precommitted that it lacks is fetched by hash,
a stalled height has its messages re-sent, committed blocks are synced (each with its commit
certificate) from a peer that is ahead, and blobs are fetched from the peers. Part of
``CtbcNode``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from dualchain.chain.consensus.certificate import check_commit_qc
from dualchain.chain.consensus.committee import FetchBlock
from dualchain.chain.daemon.ctbc_intake import LOOKAHEAD
from dualchain.chain.errors import DecodeError, DualchainError, ValidationError
from dualchain.chain.proposals import CompactProposal, Proposal
from dualchain.chain.types import Block, QuorumCertificate, Vote
from dualchain.chain.uploads import MAX_BLOB_BYTES
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)

SYNC_BATCH = 64
SYNC_CHECK_S = 1.0
REBROADCAST_S = 1.0
# While a height stalls, a replica re-sends its own messages of it after 1, 2, 4, 8, ... checks
# (REBROADCAST_S apart), and from the RELAY_FROM-th on relays every message it holds of it
# (others' votes too). With 16 replicas, re-sending and relaying every held vote to every peer
# each second was a storm of thousands of messages a second that kept a loaded committee from
# ever deciding.
RELAY_FROM = 4
PROBE_EVERY = 8


class BlockSync:
    """Part of ``CtbcNode``: fetching blocks and blobs, re-sending, block sync."""

    # -- fetching and syncing blocks -------------------------------------------------------------

    async def _fetch(self, action: FetchBlock) -> None:
        """Asks the peers in turn for a block a quorum precommitted that we have not seen,
        round after round until it arrives or the height is decided some other way (sync)."""
        delay = 0.1
        while self.engine.height == action.height and self.height < action.height:
            for link in self.links:
                try:
                    reply = await link.stub().GetBlockByHash(
                        peer_pb.GetBlockByHashRequest(hash=action.block_hash), timeout=5
                    )
                    block = Block.decode(reply.block)
                except (grpc.aio.AioRpcError, DecodeError):
                    continue
                if block.hash == action.block_hash:
                    log.info("block %s at height %d fetched from %s", block.hash.hex()[:16],
                             block.height, link.address)
                    await self._events.put(("block", block))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _sync_watch(self) -> None:
        """Watches for a stalled height: re-sends our own messages of it (a peer that restarted
        or reconnected missed them; the engine never asks twice), and starts block sync when a
        peer is known to be ahead: at once when it is past the heights we keep messages for,
        after a stall when it is just one ahead (that is normal for a moment after each commit)."""
        last_height = -1
        stalled_ticks = 0
        while True:
            await asyncio.sleep(min(SYNC_CHECK_S, REBROADCAST_S))
            stalled = self.height == last_height
            last_height = self.height
            stalled_ticks = stalled_ticks + 1 if stalled else 0
            if stalled and stalled_ticks & (stalled_ticks - 1) == 0:  # a power of two
                self._resend_stalled(relay=stalled_ticks >= RELAY_FROM)
            if self.peer_heights:
                peer, height = max(self.peer_heights.items(), key=lambda kv: kv[1])
                if height > self.height + LOOKAHEAD or (stalled and height > self.height):
                    await self._events.put(("sync", peer))
            elif stalled and self.links and (stalled_ticks & (stalled_ticks - 1) == 0
                                             or stalled_ticks % PROBE_EVERY == 0):
                # No peer sends us anything (a replica that is not a validator yet, say of a
                # joining node, or an idle chain): ask the peers in turn whether they are
                # ahead, less often as the stall goes on (every PROBE_EVERY checks at most).
                self._probe = (self._probe + 1) % len(self.links)
                await self._events.put(("sync", self.links[self._probe].address))

    def _resend_stalled(self, relay: bool) -> None:
        resend = self._stalled_height_messages(relay)
        position = (self.engine.height, self.engine.round)
        for link in self.links:
            if not link.idle:  # a peer still busy with our backlog gets nothing more
                continue
            # Votes every time; a proposal (a whole block) once per round and peer.
            again = (link.address, *position) not in self._proposals_resent
            self._proposals_resent.add((link.address, *position))
            for message in resend:
                if again or message.WhichOneof("kind") != "compact_proposal":
                    link.send(message)

    def _stalled_height_messages(self, relay: bool) -> list[peer_pb.PeerMessage]:
        """What we re-send while a height stalls: our votes and the current round's proposal we
        hold for it (a peer that was down missed them, and the engine never asks twice), and
        the votes we signed before a restart (from the vote guard's record). With ``relay``,
        the other replicas' votes too: a replica that missed a round's prevotes can justify
        that round's lock only with them, and their voter may be down."""
        me, now = self.signer.id, self.engine.round
        # Of the proposals only the current round's matters, of the votes the current and the
        # previous round's (a quorum in an older round decided already, or never will).
        held = [m for m in self.engine.known_messages() if m.height == self.engine.height
                and (m.round == now if isinstance(m, Proposal)
                     else m.round >= now - 1 and (relay or m.voter == me))]
        held += [v for v in self._restored_votes if v not in held]
        return [peer_pb.PeerMessage(vote=m.encoded) if isinstance(m, Vote)
                else peer_pb.PeerMessage(compact_proposal=CompactProposal.of(m).encoded)
                for m in held]

    async def _sync(self, peer: str) -> None:
        """Fetches committed blocks from ``peer``, checking each certificate and block."""
        link = next((link for link in self.links if link.address == peer), None)
        if link is None:
            self.peer_heights.pop(peer, None)  # a validator we have no link to
            return
        start = self.height
        try:
            stream = link.stub().GetBlocks(
                peer_pb.GetBlocksRequest(from_height=self.height + 1, max_blocks=SYNC_BATCH),
                timeout=30,
            )
            async for item in stream:
                await self._sync_one(Block.decode(item.block),
                                     QuorumCertificate.decode(item.certificate))
        except (grpc.aio.AioRpcError, DualchainError) as exc:
            log.warning("sync from %s stopped at %d: %s", peer, self.height, exc)
        if self.height > start:
            log.info("synced heights %d..%d from %s", start + 1, self.height, peer)
            await self._enter_height(self.height + 1, self.guard.lock_for(self.height + 1))
        else:
            self.peer_heights.pop(peer, None)  # it gave us nothing: ask the others next time

    async def _sync_one(self, block: Block, certificate: QuorumCertificate) -> None:
        height = self.height + 1
        committee = self.committee(height)
        await self._on_cpu(check_commit_qc, certificate, committee, self.params.algorithm,
                           self.verifier, height, block.hash, self.chain_id)
        if not await self._validate(block):
            raise ValidationError(f"synced block at height {height} is invalid", code="bad_sync")
        await self.in_store(self.store.append, block, 0, certificate.encoded)
        self._apply_committed(block, certificate)

    async def fetch_blobs(self, hashes: Sequence[bytes]) -> None:
        """Fetches the blobs this replica lacks from its peers (each checked against its hash)."""
        assert self.blobs is not None
        for h in dict.fromkeys(hashes):
            if await self._on_cpu(self.blobs.has, h):
                continue
            for link in self.links:
                if link.channel is None:
                    continue
                try:
                    stream = chain_grpc.ChainServiceStub(link.channel).GetBlob(
                        chain_pb.GetBlobRequest(hash=h), timeout=30)
                    chunks = [bytes(chunk.data) async for chunk in stream]
                    await self._on_cpu(self.blobs.put_stream, chunks, h, MAX_BLOB_BYTES)
                    break
                except (grpc.aio.AioRpcError, DualchainError) as exc:
                    log.info("blob %s not fetched from %s: %s", h.hex()[:16], link.address, exc)
