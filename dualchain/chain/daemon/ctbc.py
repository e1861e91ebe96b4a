"""A CTBC replica: the committee consensus engine wired to the store, the mempool, the
application it is handed (a ``CommitteeApplication``) and the peers.

``CtbcNode`` holds the logic, in four parts: this module (the consensus loop, proposing, voting
and committing), ``ctbc_intake`` (peers' proposals and votes), ``ctbc_sync`` (fetching and
syncing blocks and blobs) and ``ctbc_evidence`` (evidence, byzantine strategies); the gRPC
servicers (``servicers.py``) only decode requests and call
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
from dataclasses import replace
from typing import Any, TypeVar

from dualchain.chain.app import Committee, CommitteeApplication
from dualchain.chain.app_context import AppFactory
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
from dualchain.chain.daemon.base import ChainNodeBase, now_ms
from dualchain.chain.daemon.config import DaemonConfig
from dualchain.chain.daemon.ctbc_evidence import EvidenceDuties
from dualchain.chain.daemon.ctbc_intake import LOOKAHEAD, PeerIntake
from dualchain.chain.daemon.ctbc_sync import BlockSync
from dualchain.chain.daemon.peers import PeerLink
from dualchain.chain.daemon.votes import VoteRelay
from dualchain.chain.errors import DualchainError, ValidationError
from dualchain.chain.genesis import Genesis
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.proposals import CompactProposal, Proposal
from dualchain.chain.types import Block, QuorumCertificate, TxKind, Vote, VoteStep
from dualchain.chain.uploads import BlobIntake, UploadQuota
from dualchain.chain.validation import build_block, check_block
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import peer_pb2 as peer_pb

log = logging.getLogger(__name__)
T = TypeVar("T")

PROPOSE_POLL_S = 0.025
MAX_PENDING_PROPOSALS = 16
# Proposals and votes from peers waiting for the consensus loop, at most. A peer that sends
# faster than the loop decides waits (its gossip stream stops being read, so HTTP/2 flow control
# backs up into its link's bounded queue, which drops). Our own events (timeouts, our proposal,
# a fetched block, sync) always get in: each comes from one engine action or timer.
MAX_QUEUED_PEER_EVENTS = 256
PEER_EVENTS = ("proposal", "vote")
REGOSSIP_TXS = 256  # pending transactions re-sent to the peers when a leader seems to lack them


class CtbcNode(PeerIntake, BlockSync, EvidenceDuties, ChainNodeBase):
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
