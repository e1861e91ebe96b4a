"""Following CMBC's final blocks: client registrations, join records, group assignments and task
plans; the next plan after this node's anchor."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc

from dualchain.apps.cmbc.payloads import Anchor, ClientRegistration
from dualchain.chain import wire
from dualchain.chain.errors import DualchainError
from dualchain.chain.types import Transaction, TxKind
from dualchain.proto.v1 import chain_pb2 as chain_pb

log = logging.getLogger("dualchain.node")

RETRY_S = 1.0


class CmbcFollower:
    """A part of ``node.server.ServerNode``: its methods use the node's state, set up there."""

    async def _follow_cmbc(self) -> None:
        """Registrations, group assignments and task plans from final CMBC blocks (a reorg can
        never take them back); after this node's anchor is final, the next plan."""
        next_height = 1
        while True:
            try:
                stream = self.cmbc.SubscribeBlocks(chain_pb.SubscribeBlocksRequest(
                    from_height=next_height, final_only=True))
                async for message in stream:
                    block = wire.block_from_proto(message)
                    applied: list[Transaction] = []
                    async with self._planning:
                        try:
                            applied = self.planner.apply_final(block)
                        except DualchainError as exc:  # would mean replicas disagree: loud
                            log.error("final CMBC block %d refused by the planner: %s",
                                      block.height, exc)
                            applied = list(block.transactions)
                    for tx in applied:
                        if tx.kind == TxKind.NODE_JOIN_REQUEST:
                            self._on_join_record(tx)
                        elif tx.kind == TxKind.CLIENT_REGISTER:
                            registration = ClientRegistration.decode(tx.payload)
                            self.clients[tx.sender] = tx.public_key
                            log.info("client %s registered (node %s)", tx.sender.hex()[:16],
                                     registration.node.hex()[:16])
                        elif tx.kind == TxKind.ANCHOR and tx.sender == self.signer.id:
                            version = Anchor.decode(tx.payload).version
                            self._tasks.append(asyncio.create_task(self._publish_plan(version)))
                    self._cmbc_final = block.height
                    self._cmbc_read.set()
                    next_height = block.height + 1
                    self.metrics.clients.set(len(self.clients))
            except grpc.aio.AioRpcError as exc:
                log.warning("CMBC stream broke: %s", exc.details())
                await asyncio.sleep(RETRY_S)

    async def _publish_plan(self, version: int) -> None:
        """Submits the group assignment (if one is due) and task plan after ``version``."""
        if self.planner.sched is None:
            return
        async with self._planning:
            loop = asyncio.get_running_loop()
            try:
                records = await loop.run_in_executor(None, self.planner.records_after, version)
            except DualchainError as exc:
                log.warning("no plan after version %d: %s", version, exc)
                return
        if records is None:
            return
        try:
            if records.assignment is not None:
                await self.records.submit(TxKind.GROUP_ASSIGNMENT,
                                          records.assignment.encode())
            await self.records.submit(TxKind.TASK_PLAN, records.plan.encode())
        except grpc.aio.AioRpcError as exc:
            log.warning("plan after version %d refused: %s", version, exc.details())
            return
        print(json.dumps({
            "event": "plan", "version": version, "basis_height": records.plan.basis_height,
            "regrouped": None if records.assignment is None
            else records.assignment.reason.name.lower(),
            "batches": [b for _, b in records.plan.tasks], "groups": records.makespans,
            "time": time.time(),
        }), flush=True)
