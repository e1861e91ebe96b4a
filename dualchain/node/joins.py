"""The two-stage join of a node into a running testbed (seed 000 §3.1).

With ``join`` set a node puts a NodeJoinRequest on CMBC; each committee member, once that request
is final, votes the joiner in as a CTBC validator (VALIDATOR_REGISTER naming the request); when
CTBC has applied the change the nodes record a NodeAdmission on CMBC. Only then does the joiner
hand out tasks, take aggregation turns and get a group in the next assignment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import grpc

from dualchain.apps.cmbc.payloads import NodeAdmission, NodeJoinRequest, decode_payload
from dualchain.apps.ctbc.payloads import ValidatorRegister
from dualchain.chain.errors import DecodeError
from dualchain.chain.identity import identity_id
from dualchain.chain.rpc import channel_options, open_channel
from dualchain.chain.types import Block, Transaction, TxKind
from dualchain.proto.v1 import chain_pb2 as chain_pb

log = logging.getLogger("dualchain.node")


class Joins:
    """A part of ``node.server.ServerNode``: its methods use the node's state, set up there."""

    def _on_join_record(self, tx: Transaction) -> None:
        """A final join record: a request from another node gets our CTBC vote; an admission
        adds the node (a relay channel to it) or, when it is this node, lets it serve."""
        record = decode_payload(tx.kind, tx.payload)
        if isinstance(record, NodeJoinRequest) and tx.sender != self.signer.id:
            self._tasks.append(asyncio.create_task(self._vote_join(tx, record)))
        elif isinstance(record, NodeAdmission) and record.node == self.signer.id:
            if not self._announced_admission:
                self._announced_admission = True
                print(json.dumps({"event": "join", "stage": "admitted",
                                  "ctbc_height": self.planner.final.admitted_at(record.node),
                                  "time": time.time()}), flush=True)
        elif isinstance(record, NodeAdmission) and record.node not in self._peers:
            joined = self.planner.final.join_request(record.node)
            if joined is not None:
                self._peers[record.node] = open_channel(
                    joined[2].node_address, self.config.tls, channel_options())
                log.info("node %s joined (%s)", record.node.hex()[:16], joined[2].node_address)

    async def _vote_join(self, tx: Transaction, request: NodeJoinRequest) -> None:
        """Stage 2: as a committee member, votes the joiner in as a CTBC validator (if this
        node's ``admit`` list names it: a request alone admits nobody)."""
        if self.planner.final.admitted_at(tx.sender) is not None:
            return  # (re-read after a restart)
        admit = self.config.admit
        if admit is not None and tx.sender not in admit:
            log.warning("join request from %s: not in this node's admit list, no vote",
                        tx.sender.hex()[:16])
            return
        try:
            status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
            if tx.sender in status.validators or self.signer.id not in status.committee:
                return
            change = ValidatorRegister(tx.public_key, request.ctbc_address, tx.hash)
            await self._submit(self.ctbc, self.ctbc_genesis.chain_id, TxKind.VALIDATOR_REGISTER,
                               change.encode())
            log.info("voted node %s in as a validator", tx.sender.hex()[:16])
        except grpc.aio.AioRpcError as exc:
            log.info("vote for node %s: %s", tx.sender.hex()[:16], exc.details())

    async def _admit_joiners(self, block: Block) -> None:
        """Stage 3: once CTBC applied a join's membership change, records it on CMBC."""
        joiners = []
        for tx in block.transactions:
            if tx.kind == TxKind.VALIDATOR_REGISTER:
                try:  # a refused transaction stays in a CTBC block, malformed or not
                    change = ValidatorRegister.decode(tx.payload)
                except DecodeError:
                    continue
                if change.join_request != bytes(32):
                    joiners.append(identity_id(change.public_key))
        final = self.planner.final
        if not joiners or not final.is_server_node(self.signer.id):
            return
        try:
            status = await self.ctbc.GetStatus(chain_pb.GetStatusRequest(), timeout=30)
            for joiner in joiners:
                if joiner in status.validators and final.pending(joiner):
                    await self.records.submit(TxKind.NODE_JOIN_REQUEST,
                                              NodeAdmission(joiner, block.height).encode())
                    log.info("recorded the admission of node %s", joiner.hex()[:16])
        except (grpc.aio.AioRpcError, DecodeError) as exc:
            log.info("admission at CTBC height %d: %s", block.height, exc)
