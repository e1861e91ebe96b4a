"""Following CTBC: a block that carries a model commit makes the node adopt the newest committed
version (the daemon's application decided whether the commit applied), evaluate it, and anchor it
on CMBC when it was the commit's author; membership changes start the join's last stage; a commit
or a client's re-admission refreshes the node's copy of the chain's client records (standing.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc

from dualchain.apps.cmbc.payloads import Anchor
from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.chain import wire
from dualchain.chain.types import Block, Transaction, TxKind
from dualchain.proto.v1 import chain_pb2 as chain_pb

log = logging.getLogger("dualchain.node")

RETRY_S = 1.0


def commits_in(block: Block) -> list[tuple[Transaction, ModelCommit]]:
    """The model commits of a CTBC block, in block order (applied or refused alike)."""
    return [(tx, ModelCommit.decode(tx.payload)) for tx in block.transactions
            if tx.kind == TxKind.MODEL_VERSION]

def commit_for_version(block: Block, version: int) -> tuple[Transaction, ModelCommit] | None:
    """The first commit of ``version`` in ``block``, or None if the block has none."""
    return next(((tx, c) for tx, c in commits_in(block) if c.version == version), None)


class CtbcFollower:
    """A part of ``node.server.ServerNode``: its methods use the node's state, set up there."""

    async def _follow_ctbc(self, next_height: int) -> None:
        while True:
            try:
                stream = self.ctbc.SubscribeBlocks(
                    chain_pb.SubscribeBlocksRequest(from_height=next_height))
                async for message in stream:
                    block = wire.block_from_proto(message)
                    self._ctbc_height = block.height
                    next_height = block.height + 1
                    if any(tx.kind == TxKind.MODEL_VERSION for tx in block.transactions):
                        await self._on_commit_block(block)
                    elif any(tx.kind in (TxKind.CLIENT_READMIT, TxKind.EVIDENCE)
                             for tx in block.transactions):
                        status = await self.ctbc.GetStatus(
                            chain_pb.GetStatusRequest(), timeout=30)
                        self._refresh_standing(status)
                        self._note_excluded(status)
                    if any(tx.kind == TxKind.VALIDATOR_REGISTER for tx in block.transactions):
                        self._tasks.append(asyncio.create_task(self._admit_joiners(block)))
            except grpc.aio.AioRpcError as exc:
                log.warning("CTBC stream broke: %s", exc.details())
                await asyncio.sleep(RETRY_S)
            except Exception:  # a bug must not end following for good: go on after this block
                log.exception("following CTBC failed at height %d", next_height - 1)
                await asyncio.sleep(RETRY_S)

    async def _on_commit_block(self, block: Block) -> None:
        status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
        # Before the version is adopted: the next aggregation must leave out whom it excluded.
        self._refresh_standing(status)
        self._note_excluded(status)
        if status.model_version <= self.version:
            return  # the commit did not apply (stale or refused)
        found = commit_for_version(block, status.model_version)
        if found is None:
            # The replica is already past this block: its latest version was committed in a
            # later block, which brings us to it. The updates this block's commits name are
            # done with either way.
            self.pool.remove([digest for _, commit in commits_in(block)
                              for digest in commit.digests])
            return
        commit_tx, commit = found
        digests = [d for d, _ in commit.updates]
        groups: dict[int, float] = {}
        last = None  # the included update received last (bench paper fig8's critical task)
        for digest in digests:
            arrival = self._arrivals.pop(digest, None)
            if arrival is not None:
                group = self.planner.group_of(arrival.client)
                groups[group] = max(groups.get(group, 0.0), arrival.completion_s)
                last = arrival if last is None or arrival.at > last.at else last
        self._last_c_groups = groups
        self._last_update = None if last is None else {
            "client": last.client.hex(), "task": last.task, "arrived": round(last.at, 3)}
        self.pool.remove(commit.digests)  # the discarded ones are done with too
        self.metrics.updates_included.inc(len(digests))
        await self._adopt(status.model_version, bytes(status.model_hash), block.height,
                          status.model_height, len(digests),
                          sum(amount for _, amount in commit.rewards or ()))
        if commit_tx.sender == self.signer.id:
            await self._anchor(commit, block.height)

    def _refresh_standing(self, status: chain_pb.ChainStatus) -> None:
        """Takes the chain's client records, prints what changed, and drops the pooled updates
        of excluded clients (a commit naming one would be refused)."""
        for event in self.standing.update(status.clients):
            print(json.dumps(event), flush=True)
        self._drop_excluded()

    def _drop_excluded(self) -> None:
        self.pool.remove([digest for digest, (update, _) in self.pool.pooled().items()
                          if self.standing.excluded(update.client)])

    def _note_excluded(self, status: chain_pb.ChainStatus) -> None:
        """Takes the validators CTBC excludes from committing (its application decided, on
        applied evidence) out of the aggregation turn, with an event line for each change."""
        now = {bytes(v) for v in status.excluded}
        for node, event in ([(n, "node_excluded") for n in sorted(now - self.excluded_nodes)]
                            + [(n, "node_readmitted")
                               for n in sorted(self.excluded_nodes - now)]):
            log.warning("%s: %s at CTBC height %d", event, node.hex()[:16], status.height)
            print(json.dumps({"event": event, "node": node.hex(), "ctbc_height": status.height,
                              "version": self.version, "time": time.time()}), flush=True)
        self.excluded_nodes = now

    async def _anchor(self, commit: ModelCommit, ctbc_height: int) -> None:
        payload = Anchor(commit.version, commit.model_hash, ctbc_height).encode()
        try:
            await self.records.submit(TxKind.ANCHOR, payload)
        except grpc.aio.AioRpcError as exc:
            log.warning("anchor of version %d refused: %s", commit.version, exc.details())
