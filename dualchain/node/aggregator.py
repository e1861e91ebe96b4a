"""The aggregation turn: which node computes the next version, and its commit.

The aggregator of the next version is the node that leads CTBC's next height after the commit
of the current one: with the server nodes in id order, node ``(h + 1) mod n`` for a commit at
height h (version 0: h = 0), the way the committee's leader rotates by height. Aggregation duty
therefore moves from node to node. When no new version arrives for ``aggregator_timeout_s`` the
next node takes over, and so on (a crashed aggregator costs one timeout). Any node may submit a
commit: CTBC accepts the first valid one for a version and refuses the rest as stale, so a
takeover cannot fork the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace

import grpc

from dualchain.apps.ctbc.fl import ModelCommit
from dualchain.chain.types import TxKind
from dualchain.learning.codec import encode_params
from dualchain.node.attack import attacked_commit
from dualchain.node.pool import build_version

log = logging.getLogger("dualchain.node")

AGGREGATE_POLL_S = 0.1
COMMIT_WAIT_S = 15.0


class Aggregator:
    """A part of ``node.server.ServerNode``: its methods use the node's state, set up there."""

    def is_aggregator(self) -> bool:
        # A node CTBC excludes (misbehaviour on record) loses its turns: the others carry on.
        order = [n for n in self.planner.serving_nodes(self.config.nodes)
                 if n not in self.excluded_nodes]
        if self.signer.id not in order:
            return False
        turns = int((time.monotonic() - self._version_time) // self.config.aggregator_timeout_s)
        return order[(self._commit_height + 1 + turns) % len(order)] == self.signer.id

    async def _aggregate_loop(self) -> None:
        while True:
            await asyncio.sleep(AGGREGATE_POLL_S)
            if self._awaiting is not None:
                version, since = self._awaiting
                if version > self.version and time.monotonic() - since < COMMIT_WAIT_S:
                    continue
                self._awaiting = None
            expected = {c for c in (self.planner.planned_clients()
                                    or self.planner.active_clients(self.clients))
                        if not self.standing.excluded(c)}  # a round waits for no excluded
            # A poisoning adversary takes the turn at its versions (any node may submit).
            turn = self.is_aggregator() or self.config.adversary.takes_turn(self.version + 1)
            if not turn or not self.pool.ready(self.version, expected):
                continue
            log.info("aggregating version %d from %d pooled updates (commit height %d)",
                     self.version + 1, len(self.pool), self._commit_height)
            try:
                await self._propose_version()
            except (grpc.aio.AioRpcError, ValueError) as exc:
                # Stale (another node's commit won) or refused: the next turn decides afresh.
                self._awaiting = None
                log.warning("commit of version %d failed: %s", self.version + 1,
                            exc.details() if isinstance(exc, grpc.aio.AioRpcError) else exc)

    def _build_version(self, base, candidates: list[tuple], pooled: dict, base_version: int
                       ) -> tuple[ModelCommit, bytes] | None:
        """(commit without its model hash, model blob) of the next version; None for an empty
        pool. Runs in a worker thread: it touches only its arguments and fixed configuration."""
        params, commit, digests = build_version(self.rules, base, candidates, base_version)
        if not digests:
            return None
        # An adversary node's model and commit (docs/threat-model.md); honest: unchanged.
        params, commit = attacked_commit(self.config.adversary, self.rules, base, params,
                                         commit, pooled)
        return commit, encode_params(params, self.shapes)

    async def _propose_version(self) -> None:
        assert self.params is not None
        base_version = self.version
        self._drop_excluded()  # the committee refuses a commit naming an excluded client
        # Defense, aggregation and encoding are CPU work (clustering, Krum, the model's bytes):
        # a worker thread takes them over a snapshot of the pool, the event loop stays free.
        built = await asyncio.get_running_loop().run_in_executor(
            None, self._build_version, self.params, self.pool.candidates(base_version),
            self.pool.pooled(), base_version)
        if built is None or self.version != base_version:  # (another node's version came in)
            return
        commit, blob = built
        model_hash = await self._put_blob(blob)
        self._remember(model_hash, blob)
        commit = replace(commit, model_hash=model_hash)
        if self.config.adversary.poisons(commit.version):  # what a bench checks the chain for
            print(json.dumps({"event": "adversary_commit", "kind": self.config.adversary.kind,
                              "version": commit.version, "hash": model_hash.hex(),
                              "ctbc_height": self._ctbc_height, "time": time.time()}),
                  flush=True)
        self._awaiting = (commit.version, time.monotonic())
        await self._submit(self.ctbc, self.ctbc_genesis.chain_id, TxKind.MODEL_VERSION,
                           commit.encode())
        log.info("submitted version %d with %d updates", commit.version, len(commit.digests))
