"""A CTBC replica: the committee consensus engine wired to the store, the mempool, the
application it is handed (a ``CommitteeApplication``) and the peers.

``CtbcNode`` holds the logic; the gRPC servicers (``servicers.py``) only decode requests and call
it. One asyncio task (the consensus loop) owns the engine: every proposal, vote, timeout and
fetched block becomes an event on its queue, so the engine sees one event at a time. Work that
would hold up the event loop runs elsewhere: signature batches on the verifier's thread pool,
block validation on a CPU thread, and every block store call on the store's own thread (SQLite
connections are used from one thread at a time).

Committing a height: the block and its commit certificate are appended to the store in one
SQLite transaction, then applied to the application, removed from the mempool and announced to
subscribers; then the engine enters the next height with the committee the application names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from dualchain.chain.app import AppFactory, Committee, CommitteeApplication
from dualchain.chain.consensus.certificate import check_commit_qc
from dualchain.chain.consensus.committee import (
    Action,
    CastVote,
    CommitteeConsensus,
    Decide,
    Equivocation,
    FetchBlock,
    Propose,
    ScheduleTimeout,
    Step,
    Timeouts,
    WaitForWork,
)
from dualchain.chain.consensus.guard import PROPOSAL_STEP, VoteGuard
from dualchain.chain.daemon.base import ChainNodeBase, TxOutcome, now_ms
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.daemon.votes import VoteRelay
from dualchain.chain.errors import (
    DecodeError,
    DualchainError,
    SignatureError,
    ValidationError,
)
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.types import (
    Block,
    CompactProposal,
    Proposal,
    QuorumCertificate,
    SignedProposal,
    Transaction,
    TxKind,
    Vote,
    VoteStep,
)
from dualchain.chain.uploads import BlobIntake, UploadQuota
from dualchain.chain.validation import (
    build_block,
    check_block,
    sign_transaction,
)
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)
T = TypeVar("T")

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
PROPOSE_POLL_S = 0.025
# Consensus messages this many heights past the one being decided are kept for later (the
# engine buffers the votes, we the proposals): a replica that commits a height a moment after
# its peers then still has their messages for the next one, instead of falling a height behind
# for good and catching up only by block sync.
LOOKAHEAD = 1
MAX_PENDING_PROPOSALS = 16
# Proposals and votes from peers waiting for the consensus loop, at most. A peer that sends
# faster than the loop decides waits (its gossip stream stops being read, so HTTP/2 flow control
# backs up into its link's bounded queue, which drops). Our own events (timeouts, our proposal,
# a fetched block, sync) always get in: each comes from one engine action or timer.
MAX_QUEUED_PEER_EVENTS = 256
PEER_EVENTS = ("proposal", "vote")
REGOSSIP_TXS = 256  # pending transactions re-sent to the peers when a leader seems to lack them
MAX_BLOB_BYTES = 256 * 1024 * 1024


class CtbcNode(ChainNodeBase):
    kind = "ctbc"
    default_max_pending_wait_ms = 1000
    app_type = CommitteeApplication
    app: CommitteeApplication

    def __init__(self, config: DaemonConfig, genesis: Genesis, signer: Signer,
                 make_app: AppFactory) -> None:
        super().__init__(config, genesis, signer, make_app)
        self.blobs = self.app.blobs
        # PutBlob: uploads signed by a current validator, within the quotas of the config.
        self.uploads = None if self.blobs is None else BlobIntake(
            self.blobs, UploadQuota(config.data_dir / "uploads.sqlite", config.blob_quota),
            self.params, self.chain_id, self.verifier, self._validator_key, self.in_store)
        self.guard = VoteGuard(config.data_dir / "consensus")
        c = genesis.consensus
        self.engine = CommitteeConsensus(
            self.chain_id,
            signer.id,
            Timeouts(c.timeout_propose_ms / 1000, c.timeout_prevote_ms / 1000,
                     c.timeout_precommit_ms / 1000, c.timeout_delta_ms / 1000),
            wait_for_work=True,
        )
        self._work_signalled = False  # a "work" event is queued for the waiting height
        # Recent height durations: a collector's bundle is awaited about two of them (at least
        # timeout_propose, at most four) before a vote goes to everybody; a fixed 1 s fired on
        # every height of a loaded 16-replica committee and made it all-to-all plus bundles.
        self._block_time = c.timeout_propose_ms / 1000
        self.relay = VoteRelay(
            signer.id, config.linear_votes, self._fallback_s,
            lambda: (self.engine.height, self.engine.round, self.engine.step),
            self._link_of, self.broadcast)
        self._events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._peer_slots = asyncio.Semaphore(MAX_QUEUED_PEER_EVENTS)  # bounds PEER_EVENTS
        self._last_certificate: QuorumCertificate | None = None
        self._pending_proposals: dict[int, list[Proposal]] = {}
        self._height_started = time.monotonic()
        # Votes we signed before a restart (from the vote guard): the engine of this run never
        # saw them, but a peer may need them. Our other messages are in the engine's record.
        self._restored_votes: list[Vote] = []
        self._seen_proposals: set[tuple[int, int, bytes, bytes]] = set()
        self._proposals_resent: set[tuple[str, int, int]] = set()  # (peer, height, round)
        self._reported: set[tuple[bytes, int, int, int]] = set()
        self.peer_heights: dict[str, int] = {}
        self._probe = 0  # the link a follower asks next
        self.adversary = config.adversary  # honest unless the config names a strategy

    def _validator_key(self, validator_id: bytes) -> bytes | None:
        validator = self.app.validator(validator_id)
        return validator.public_key if validator is not None else None

    def committee(self, height: int) -> Committee:
        return self.app.committee(height)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads the chain (writing genesis on first start) and starts consensus and gossip."""
        await self._open_store()
        await self._replay()
        self._start_common()
        self._link_validators()
        self._tasks += [
            asyncio.create_task(self._consensus_loop(), name="consensus"),
            asyncio.create_task(self._sync_watch(), name="sync-watch"),
        ]
        await self._events.put(("start",))

    async def _replay(self) -> None:
        """Rebuilds the application state from the stored chain (it is not persisted)."""
        height = await self.in_store(self.store.height)
        for h in range(1, height + 1):
            block = await self.in_store(self.store.canonical_block, h)
            self.app.apply_block(block)
            self._head = block.header
        head_hash = self._head.hash
        cert = await self.in_store(self.store.get_certificate, head_hash)
        self._last_certificate = QuorumCertificate.decode(cert) if cert else None
        self.metrics.height.set(self.height)
        log.info("replayed %d blocks; head %s", height, head_hash.hex()[:16])

    # -- peer messages ---------------------------------------------------------------------------

    async def on_peer_proposal(self, data: bytes, peer: str) -> None:
        """A proposal with its whole block (a byzantine leader's, or an older replica's)."""
        if self._first_copy(Proposal.peek(data)):
            await self._peer_event("proposal", Proposal.decode(data))

    async def on_peer_compact_proposal(self, data: bytes, peer: str) -> None:
        """A proposal whose transactions come by hash: rebuilt from the mempool, with what is
        missing asked of the sender (off the gossip stream, which must keep flowing)."""
        signed = CompactProposal.peek(data)
        if not self._first_copy(signed):
            return
        compact = CompactProposal.decode(data)
        txs = [self.mempool.get(h) for h in compact.hashes]
        if any(tx is None for tx in txs):
            self._tasks.append(asyncio.create_task(self._complete(compact, txs, peer)))
            return
        await self._peer_event("proposal", compact.proposal(txs))  # type: ignore[arg-type]

    def _first_copy(self, signed: SignedProposal) -> bool:
        """Whether a proposal is new, authentic and near enough to decide on.

        Proposals are re-sent while a height stalls. The signed part comes first in the
        encoding: it identifies the copy and proves who signed it, so duplicates and forgeries
        are dropped before the rest is decoded.
        """
        seen = (signed.height, signed.round, signed.block_hash, signed.signature)
        if seen in self._seen_proposals:
            return False
        if not self._authentic(signed.chain_id, signed.height, signed.proposer, Domain.PROPOSAL,
                               signed.signing_bytes, signed.signature):
            return False
        if signed.height > self.height + 1 + LOOKAHEAD:
            return False
        self._seen_proposals.add(seen)
        return True

    async def _complete(self, compact: CompactProposal, txs: list[Transaction | None],
                        peer: str) -> None:
        """Fetches a compact proposal's missing transactions, from its sender first, round after
        round until its height is committed (a replica that just restarted may not have its
        links up yet; a proposal for the next height waits like a full one would). A proposal
        that cannot be completed is forgotten, so that a re-sent copy is tried again."""
        signed = compact.signed
        missing = [h for h, tx in zip(compact.hashes, txs, strict=True) if tx is None]
        found: dict[bytes, Transaction] = {}
        links = sorted(self.links, key=lambda link: link.address != peer)  # the sender first
        delay = 0.1
        while self.height < signed.height:
            for link in links:
                try:
                    reply = await link.stub().GetBlockTransactions(
                        peer_pb.GetBlockTransactionsRequest(
                            block_hash=signed.block_hash,
                            tx_hashes=[h for h in missing if h not in found]), timeout=5)
                    found.update((tx.hash, tx) for tx in map(Transaction.decode, reply.txs))
                except (grpc.aio.AioRpcError, DecodeError) as exc:
                    log.info("transactions of proposal %s not fetched from %s: %s",
                             signed.block_hash.hex()[:16], link.address, exc)
                    continue
                if all(h in found for h in missing):
                    full = [tx if tx is not None else found[h]
                            for h, tx in zip(compact.hashes, txs, strict=True)]
                    log.info("proposal %s at %d/%d: fetched %d missing transactions from %s",
                             signed.block_hash.hex()[:16], signed.height, signed.round,
                             len(missing), link.address)
                    await self._peer_event("proposal", compact.proposal(full))
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._seen_proposals.discard(
            (signed.height, signed.round, signed.block_hash, signed.signature))

    def sent_block_transactions(self, block_hash: bytes) -> Mapping[bytes, Transaction]:
        """A block proposed in the height being decided, for a peer completing its compact
        proposal."""
        block = self.engine.block(block_hash)
        return {tx.hash: tx for tx in block.transactions} if block is not None else {}

    async def on_peer_vote(self, data: bytes, peer: str) -> None:
        vote = Vote.decode(data)
        if not self._authentic(vote.chain_id, vote.height, vote.voter, Domain.VOTE,
                               vote.signing_bytes, vote.signature):
            return
        if vote.height == self.height:
            if vote.step == VoteStep.PRECOMMIT:
                self._add_late_precommit(vote)
        elif vote.height <= self.height + 1 + LOOKAHEAD:
            await self._peer_event("vote", vote)

    def _authentic(self, chain_id: str, height: int, signer: bytes, domain: Domain,
                   signing_bytes: bytes, signature: bytes) -> bool:
        """Checks a consensus message's signer and signature; False for old heights.

        Raises for a message that is forged or comes from outside the committee. A message for a
        height beyond the committees we know is checked against the signer's validator key; once
        it verifies, it tells us that this validator has committed up to height - 1, which is
        what block sync acts on (a claim in an unsigned hello would not be evidence of anything).
        The signature is checked right here: the CPU threads may be busy validating a block, and
        a consensus message must not queue behind that.
        """
        if chain_id != self.chain_id:
            raise ValidationError(f"consensus message for chain {chain_id!r}",
                                  code="wrong_chain")
        if height < self.height:
            return False
        try:
            key = self.committee(height).keys.get(signer)
        except ValidationError:  # beyond the committees we know: any validator's key
            validator = self.app.validator(signer)
            key = validator.public_key if validator is not None else None
        if key is None:
            raise ValidationError("consensus message from a non-member", code="not_a_member")
        if not self.verifier.verify(self.params.algorithm, key, domain, signing_bytes,
                                    signature):
            raise SignatureError(f"{domain.name.lower()} signature does not verify")
        validator = self.app.validator(signer)
        if validator is not None and height - 1 > self.peer_heights.get(validator.address, -1):
            self.peer_heights[validator.address] = height - 1
        return True

    # -- the consensus loop ----------------------------------------------------------------------

    async def _peer_event(self, kind: str, message: Any) -> None:
        """Queues a peer's proposal or vote, waiting while MAX_QUEUED_PEER_EVENTS are queued."""
        await self._peer_slots.acquire()
        self._events.put_nowait((kind, message))

    async def _consensus_loop(self) -> None:
        while True:
            event = await self._events.get()
            if event[0] in PEER_EVENTS:
                self._peer_slots.release()
            try:
                await self._handle(event)
            except DualchainError as exc:
                log.warning("event %s refused: %s", event[0], exc.reason)
            except Exception:
                log.exception("event %s failed", event[0])

    async def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "start":
            height = self.height + 1
            await self._enter_height(height, self.guard.lock_for(height))
            # Votes we signed for this height before a restart may never have left the
            # process: keep them for re-sending while the height stalls.
            self._restored_votes = [
                Vote(self.chain_id, s.height, s.round, VoteStep(s.step), s.block_hash,
                     self.signer.id, s.signature)
                for s in self.guard.history if s.height == height and s.step != PROPOSAL_STEP
            ]
        elif kind == "proposal":
            await self._handle_proposal(event[1])
        elif kind == "vote":
            vote: Vote = event[1]
            if vote.height == self.engine.height:
                self.relay.collect(vote, self.committee(vote.height))
            await self._run(self.engine.on_vote(vote))
        elif kind == "timeout":
            _, height, round_, step = event
            if (step == Step.PROPOSE and self.engine.step == Step.PROPOSE
                    and (height, round_) == (self.engine.height, self.engine.round)):
                self._regossip_pending()
            await self._run(self.engine.on_timeout(height, round_, step))
        elif kind == "work":
            self._work_signalled = False
            if event[1] == self.engine.height:
                await self._run(self.engine.on_work())
        elif kind == "own_proposal":
            await self._run(self.engine.on_proposal(event[1], True))
        elif kind == "block":
            block: Block = event[1]
            valid = await self._validate(block)
            await self._run(self.engine.on_block(block, valid))
        elif kind == "sync":
            await self._sync(event[1])

    async def _handle_proposal(self, proposal: Proposal) -> None:
        if proposal.height > self.height + 1 + LOOKAHEAD:
            return  # far ahead: block sync brings us there
        if proposal.height == self.height + 1 and self.engine.height == proposal.height:
            valid = await self._validate(proposal.block)
            await self._run(self.engine.on_proposal(proposal, valid))
        elif proposal.height > self.engine.height:
            pending = self._pending_proposals.setdefault(proposal.height, [])
            if len(pending) < MAX_PENDING_PROPOSALS:
                pending.append(proposal)

    async def _validate(self, block: Block) -> bool:
        """Full validation of a block for the height being decided: ledger rules and app rules."""
        if block.height != self.height + 1:
            return False
        committee = self.committee(block.height)
        try:
            if self.blobs is not None:
                await self.fetch_blobs([h for tx in block.transactions
                                        for h in self.app.blobs_for(tx)])
            if block.header.app_hash != self.app.app_hash():
                raise ValidationError("app hash differs from ours", code="bad_app_hash")
            await self.load_nonces(tx.sender for tx in block.transactions)
            # The mempool holds only transactions this replica checked (shape, signature): a
            # proposal rebuilt from it is not checked twice.
            await self._on_cpu(
                check_block, block, self._head, self.params, self.verifier, now_ms(),
                self.next_nonce, committee.keys.get, self.mempool.__contains__,
            )
            await self._on_cpu(self.app.validate_block, block)
        except DualchainError as exc:
            log.warning("block %s at height %d is invalid: %s", block.hash.hex()[:16],
                        block.height, exc.reason)
            self.metrics.rejected.labels(f"block_{exc.code}").inc()
            return False
        return True

    async def _run(self, actions: list[Action]) -> None:
        """Carries out the engine's actions, feeding back our own votes."""
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, CastVote):
                queue += await self._cast_vote(action)
            elif isinstance(action, ScheduleTimeout):
                asyncio.get_running_loop().call_later(
                    action.delay, self._events.put_nowait,
                    ("timeout", action.height, action.round, action.step),
                )
                if action.step == 0 and action.round > 0:
                    self.metrics.view_changes.inc()
                self.metrics.round.set(action.round)
            elif isinstance(action, WaitForWork):
                self._work_signalled = False
                if self._has_work():
                    queue += self.engine.on_work()
                elif self.genesis.consensus.empty_blocks_interval_ms > 0:
                    asyncio.get_running_loop().call_later(
                        self.genesis.consensus.empty_blocks_interval_ms / 1000,
                        self._events.put_nowait, ("work", action.height))
            elif isinstance(action, Propose):
                self._tasks.append(asyncio.create_task(self._propose(action)))
            elif isinstance(action, Decide):
                await self._commit(action)
                return  # the engine moved on: later actions belong to the finished height
            elif isinstance(action, Equivocation):
                await self._report(action)
            elif isinstance(action, FetchBlock):
                self._tasks.append(asyncio.create_task(self._fetch(action)))

    def _has_work(self) -> bool:
        return self.mempool.has_executable(lambda sender: self._nonces.get(sender, 0))

    def _on_admitted(self) -> None:
        """New transactions are pending: a height waiting for work starts its round."""
        if self.engine.waiting and not self._work_signalled:
            self._work_signalled = True
            self._events.put_nowait(("work", self.engine.height))

    def _regossip_pending(self) -> None:
        """Our propose timeout fired with no proposal: the leader may lack the transactions
        that woke us (it restarted, or their gossip was dropped), so it gets them again."""
        txs = self.mempool.select(lambda sender: self._nonces.get(sender, 0), REGOSSIP_TXS,
                                  self.params.max_block_bytes)
        if txs:
            self.broadcast(peer_pb.PeerMessage(txs=peer_pb.TxBatch(txs=[tx.encoded
                                                                        for tx in txs])))

    async def _cast_vote(self, action: CastVote) -> list[Action]:
        vote = Vote(self.chain_id, action.height, action.round, action.step, action.block_hash,
                    self.signer.id)
        lock = self.engine.lock_state()
        signature = await self._on_cpu(
            self.guard.sign, action.height, action.round, int(action.step), action.block_hash,
            lock, lambda: self.signer.sign(Domain.VOTE, vote.signing_bytes),
        )
        if signature is None:
            log.warning("vote guard refused %s at %d/%d", action.step.name, action.height,
                        action.round)
            return []
        vote = Vote(vote.chain_id, vote.height, vote.round, vote.step, vote.block_hash,
                    vote.voter, signature)
        committee = self.committee(vote.height)
        self.relay.send_own(vote, committee)
        self.relay.collect(vote, committee)
        twin = self.adversary.twin_vote(action.block_hash)
        if twin is not None:
            self._equivocate_vote(vote, twin)
        return self.engine.on_vote(vote)

    async def _propose(self, action: Propose) -> None:
        """Builds (or re-proposes) the block of a round we lead, after the block interval."""
        if action.block is None:
            # Wait up to the block interval to batch transactions, less when a large batch is
            # already waiting: a full mempool should not pay the interval as latency.
            deadline = time.monotonic() + self.genesis.consensus.block_interval_ms / 1000
            enough = max(1, self.params.max_block_txs // 4)
            while time.monotonic() < deadline and len(self.mempool) < enough:
                await asyncio.sleep(min(PROPOSE_POLL_S, deadline - time.monotonic()))
        if (self.engine.height, self.engine.round) != (action.height, action.round):
            return
        block = action.block or self._build_block(action.round)
        proposal = Proposal(self.chain_id, action.height, action.round, action.valid_round,
                            block, self.signer.id)
        signature = await self._on_cpu(
            self.guard.sign, action.height, action.round, PROPOSAL_STEP, block.hash,
            self.engine.lock_state(),
            lambda: self.signer.sign(Domain.PROPOSAL, proposal.signing_bytes),
        )
        if signature is None:
            return
        proposal = Proposal(proposal.chain_id, proposal.height, proposal.round,
                            proposal.valid_round, block, proposal.proposer, signature)
        if self.adversary.splits_proposals:
            await self._equivocate_proposal(proposal)
        else:
            self.broadcast(peer_pb.PeerMessage(
                compact_proposal=CompactProposal.of(proposal).encoded))
        await self._events.put(("own_proposal", proposal))

    def _build_block(self, round_: int, salt: bytes = b"") -> Block:
        txs = self.mempool.select(self.next_nonce, self.params.max_block_txs,
                                  self.params.max_block_bytes - 64 * 1024)
        log.debug("building block %d/%d: %d txs selected of %d pending", self._head.height + 1,
                 round_, len(txs), len(self.mempool))
        if salt:
            txs = txs[: len(txs) // 2]
        timestamp = max(now_ms(), self._head.timestamp_ms)
        return build_block(
            self.signer, self._head, txs, self.chain_id, timestamp + len(salt),
            view=round_, parent_qc=self._last_certificate, app_hash=self.app.app_hash(),
        )

    async def _commit(self, decision: Decide) -> None:
        block = decision.block
        await self.in_store(self.store.append, block, 0, decision.certificate.encoded)
        self._apply_committed(block, decision.certificate)
        await self._enter_height(block.height + 1, None)

    def _apply_committed(self, block: Block, certificate: QuorumCertificate) -> None:
        self.app.apply_block(block)
        self._head = block.header
        self._last_certificate = certificate
        now = time.monotonic()
        for tx in block.transactions:
            self._nonces[tx.sender] = tx.nonce + 1
        self.mempool.remove_committed(block.transactions, self.next_nonce)
        self._observe_committed(block.transactions)
        if any(tx.kind == TxKind.VALIDATOR_REGISTER for tx in block.transactions):
            self._link_validators()
        self.metrics.height.set(block.height)
        self.metrics.txs_committed.inc(len(block.transactions))
        self.metrics.mempool_size.set(len(self.mempool))
        self.metrics.block_time.observe(now - self._height_started)
        limit = 4 * self.genesis.consensus.timeout_propose_ms / 1000
        self._block_time = 0.8 * self._block_time + 0.2 * min(now - self._height_started, limit)
        self._height_started = now
        self._notify_grown()

    def _fallback_s(self) -> float:
        propose = self.genesis.consensus.timeout_propose_ms / 1000
        return min(max(propose, 2 * self._block_time), 4 * propose)

    def _link_of(self, member: bytes) -> PeerLink | None:
        """Our link to a validator (None: unknown, or we have none)."""
        validator = self.app.validator(member)
        if validator is None:
            return None
        return next((link for link in self.links if link.address == validator.address), None)

    def _link_validators(self) -> None:
        """Links to every validator the chain added (a server node that joined): the config's
        peers are the genesis set, and the committee's messages must reach the newcomer."""
        linked = {link.address for link in self.links} | {self.config.listen}
        for validator in self.app.validators():
            if validator.id != self.signer.id and validator.address not in linked:
                link = PeerLink(validator.address, self.hello, self.max_message, self.config.tls)
                self.links.append(link)
                link.start()
                linked.add(validator.address)
                log.info("linked to validator %s at %s", validator.id.hex()[:16],
                         validator.address)

    def _add_late_precommit(self, vote: Vote) -> None:
        """A precommit for the block we just committed that arrived after the quorum: it joins
        the certificate the next block carries, so its voter is credited (reputation)."""
        cert = self._last_certificate
        if (cert is None or vote.step != VoteStep.PRECOMMIT or vote.round != cert.round
                or vote.block_hash != cert.block_hash
                or any(voter == vote.voter for voter, _ in cert.signatures)):
            return
        self._last_certificate = replace(
            cert, signatures=tuple(sorted((*cert.signatures, (vote.voter, vote.signature)))))

    async def _enter_height(self, height: int, lock: Any) -> None:
        self._height_started = time.monotonic()
        self._restored_votes = []
        self._seen_proposals = {p for p in self._seen_proposals if p[0] > height - 1}
        self._proposals_resent = set()
        actions = self.engine.start_height(height, self.committee(height), lock)
        await self._run(actions)
        for proposal in self._pending_proposals.pop(height, []):
            await self._handle_proposal(proposal)
        self._pending_proposals = {h: p for h, p in self._pending_proposals.items() if h > height}

    # -- equivocation evidence -------------------------------------------------------------------

    async def _report(self, action: Equivocation) -> None:
        self.metrics.equivocations.inc()
        first, second = action.first, action.second
        step = int(first.step) if isinstance(first, Vote) else PROPOSAL_STEP
        key = (action.offender, first.height, first.round, step)
        if key in self._reported:
            return
        self._reported.add(key)
        tx, outcome = await self._submit_evidence(self.app.equivocation_evidence(first, second))
        log.warning("equivocation by %s at %d/%d: evidence %s (%s)", action.offender.hex()[:16],
                    first.height, first.round, tx.hash.hex()[:16],
                    outcome.error.reason if outcome.error else "admitted")

    async def _submit_evidence(self, payload: bytes) -> tuple[Transaction, TxOutcome]:
        await self.load_nonces([self.signer.id])
        nonce, _ = self.mempool.admission_window(self.signer.id, self.next_nonce(self.signer.id))
        tx = sign_transaction(self.signer, self.chain_id, TxKind.EVIDENCE, payload, nonce,
                              now_ms())
        return tx, (await self.submit([tx]))[0]

    # -- model versions (FL) ---------------------------------------------------------------------

    async def submit(self, txs: Sequence[Transaction], gossip: bool = True) -> list[TxOutcome]:
        """Admission, after fetching the blobs a transaction reads (a model commit's) and the
        application's precheck; a refusal the application takes as proof of misbehaviour (a
        model that is not the aggregate of its updates) becomes evidence against the signer."""
        if self.blobs is not None:
            reads = [(tx, self.app.blobs_for(tx)) for tx in txs]
            await self.fetch_blobs([h for _, hashes in reads for h in hashes])
            for tx, hashes in reads:  # e.g. an aggregate's re-execution, off the event loop
                if hashes:
                    await self._on_cpu(self.app.precheck, tx)
        outcomes = await super().submit(txs, gossip)
        for tx, outcome in zip(txs, outcomes, strict=True):
            evidence = (self.app.refusal_evidence(tx, outcome.error)
                        if outcome.error is not None else None)
            if evidence is not None:
                assert outcome.error is not None
                ev_tx, ev_outcome = await self._submit_evidence(evidence)
                log.warning("evidence against %s: %s; evidence %s (%s)",
                            tx.sender.hex()[:16], outcome.error.reason, ev_tx.hash.hex()[:16],
                            ev_outcome.error.reason if ev_outcome.error else "admitted")
        return outcomes

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

    def _equivocate_vote(self, vote: Vote, twin_hash: bytes) -> None:
        """A byzantine strategy's: also vote for another block, signed, to every peer."""
        twin = Vote(vote.chain_id, vote.height, vote.round, vote.step, twin_hash, vote.voter)
        twin = Vote(twin.chain_id, twin.height, twin.round, twin.step, twin.block_hash,
                    twin.voter, self.signer.sign(Domain.VOTE, twin.signing_bytes))
        self.broadcast(peer_pb.PeerMessage(vote=twin.encoded))

    async def _equivocate_proposal(self, proposal: Proposal) -> None:
        """A byzantine strategy's: half the peers get one block first, half another, both
        signed."""
        other_block = self._build_block(proposal.round, salt=b"x")
        other = Proposal(proposal.chain_id, proposal.height, proposal.round, proposal.valid_round,
                         other_block, proposal.proposer)
        other = Proposal(other.chain_id, other.height, other.round, other.valid_round,
                         other_block, other.proposer,
                         self.signer.sign(Domain.PROPOSAL, other.signing_bytes))
        for i, link in enumerate(self.links):
            first, second = (proposal, other) if i % 2 == 0 else (other, proposal)
            link.send(peer_pb.PeerMessage(proposal=first.encoded))
            link.send(peer_pb.PeerMessage(proposal=second.encoded))

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

    # -- reads for the services ------------------------------------------------------------------

    def known_block(self, block_hash: bytes) -> Block | None:
        """A block of the height being decided that the engine holds (for GetBlockByHash)."""
        return self.engine.block(block_hash)

    def status_message(self) -> chain_pb.ChainStatus:
        committee = self.committee(self.engine.height) if self.engine.committee else None
        return chain_pb.ChainStatus(
            chain_id=self.chain_id,
            kind=self.kind,
            genesis_hash=self.genesis.hash,
            height=self.height,
            head_hash=self._head.hash,
            final_height=self.height,
            final_hash=self._head.hash,
            view=self.engine.round,
            leader=committee.proposer(self.engine.height, self.engine.round) if committee
            else b"",
            committee=list(committee.members) if committee else [],
            validators=[v.id for v in self.app.validators()],
            mempool_size=len(self.mempool),
            peers=[chain_pb.PeerInfo(address=link.address, connected=link.connected,
                                     height=max(self.peer_heights.get(link.address, -1), 0))
                   for link in self.links],
            **self.app.status_fields(),
        )

    async def on_peer_message(self, message: peer_pb.PeerMessage, peer: str) -> None:
        kind = message.WhichOneof("kind")
        if kind == "compact_proposal":
            await self.on_peer_compact_proposal(message.compact_proposal, peer)
        elif kind == "proposal":
            await self.on_peer_proposal(message.proposal, peer)
        elif kind == "vote":
            await self.on_peer_vote(message.vote, peer)
        elif kind == "votes":  # a collector's bundle: each vote checked as if sent alone
            for vote in message.votes.votes:
                await self.on_peer_vote(vote, peer)
        else:
            raise DecodeError(f"unexpected gossip message {kind!r} on CTBC")
