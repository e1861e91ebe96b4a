"""What a client does beyond honest training: its PN watermark and, when configured as an
adversary, its attack (``"watermark"`` and ``"attack"`` in its config; docs/threat-model.md).

``ClientAdversary`` is the one object the worker asks, at four points of a task:

- ``skips(version)``: lazy, free-riding and dropped-out clients do not train;
- ``data_for(version, data)``: the training set (label flip and backdoor poison it);
- ``transform(delta, version)``: the trained delta the attack uploads instead (sign flip,
  scaling, noise), or for a skipped task ``skipped_delta`` (a lazy copy, zeros, nothing);
- ``mark(delta, version)``: every upload, honest or not, gets the client's own PN sequence
  (seed 004 Algorithm 2 line 4) before it is signed, when the chain's defense has a watermark.
  The seed is the one every verifier derives from the client's registered key
  (``learning.screening.seed_for_key``).

A lazy client copies what it has seen: the updates the latest model commit on CTBC names, read
from a CTBC daemon (``"ctbc"`` in its config) like any observer of the chain can (the digests are
on chain, ``GetBlob`` serves the blobs).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import grpc
import numpy as np

from dualchain.adversary.client import (
    AttackConfigError,
    AttackContext,
    ClientAttack,
    attack_rng,
    make_client_attack,
)
from dualchain.apps.ctbc.fl import ModelCommit, SignedUpdate
from dualchain.chain import wire
from dualchain.chain.daemon.config import ConfigError
from dualchain.chain.errors import DecodeError
from dualchain.chain.types import TxKind
from dualchain.learning.codec import CodecError, decode_params
from dualchain.learning.screening import seed_for_key
from dualchain.learning.watermark import WatermarkParams, embed
from dualchain.proto.v1 import chain_pb2 as chain_pb
from dualchain.proto.v1 import chain_pb2_grpc as chain_grpc

log = logging.getLogger("dualchain.client")

Seen = Sequence[tuple[bytes, np.ndarray]]
MAX_SEEN = 8  # updates of the latest commit a lazy client fetches


def parse_attack(value: Any) -> ClientAttack:
    """The config's ``attack`` table (absent: honest); a bad one is a one-line ConfigError."""
    try:
        return make_client_attack(value if value is not None else {"kind": "none"})
    except AttackConfigError as exc:
        raise ConfigError(f"config key 'attack': {exc}") from None


def parse_watermark(value: Any) -> WatermarkParams | None:
    """The config's ``watermark`` table {length, snr_db, threshold} or null (no mark)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"length", "snr_db", "threshold"}:
        raise ConfigError("config key 'watermark' must be null or {length, snr_db, threshold}")
    try:
        return WatermarkParams(**value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'watermark': {exc}") from None


class ClientAdversary:
    def __init__(self, attack: ClientAttack, watermark: WatermarkParams | None, seed: int,
                 client_id: bytes, public_key: bytes,
                 seen: Callable[[], Awaitable[Seen]] | None = None) -> None:
        self.attack = attack
        self.watermark = watermark
        self.seed = seed
        self.client_id = client_id
        self.pn_seed = seed_for_key(public_key)
        self._seen = seen
        self._poisoned: Any = None  # the poisoned training set, made once it is needed

    def _ctx(self, version: int, size: int, seen: Seen = ()) -> AttackContext:
        return AttackContext(version, size, attack_rng(self.seed, version, self.client_id), seen)

    def skips(self, version: int) -> bool:
        return self.attack.skips_training(version)

    def data_for(self, version: int, data: Any) -> Any:
        """``data`` (a worker ``ClientData``), or its poisoned copy once the attack is active."""
        if not self.attack.active(version) or self.attack.kind not in ("label_flip", "backdoor"):
            return data
        if self._poisoned is None:
            rng = attack_rng(self.seed, 0, self.client_id)
            x, y = self.attack.poison_data(data.x, data.y, data.num_classes, version, rng)
            self._poisoned = replace(data, x=x, y=y)
        return self._poisoned

    def transform(self, delta: np.ndarray, version: int) -> np.ndarray:
        out = self.attack.transform(delta, self._ctx(version, delta.size))
        return delta if out is None else out

    async def skipped_delta(self, version: int, size: int) -> np.ndarray | None:
        """What a client that skipped training uploads for ``version`` (None: nothing)."""
        seen: Seen = ()
        if self.attack.kind == "lazy" and self._seen is not None:
            seen = [(c, d) for c, d in await self._seen() if c != self.client_id]
        return self.attack.transform(None, self._ctx(version, size, seen))

    def mark(self, delta: np.ndarray, version: int) -> np.ndarray:
        if self.watermark is None or not np.any(delta):
            return delta  # an all-zero update has no power to carry a mark (it gets none)
        return embed(delta, self.pn_seed, version, self.watermark)


async def latest_commit_updates(stub: chain_grpc.ChainServiceStub,
                                timeout: float = 10.0) -> list[tuple[bytes, np.ndarray]]:
    """(client id, delta) of the updates the latest model commit on CTBC names."""
    try:
        status = await stub.GetStatus(chain_pb.GetStatusRequest(), timeout=timeout)
        if status.model_height == 0:
            return []
        reply = await stub.GetBlock(chain_pb.GetBlockRequest(height=status.model_height),
                                    timeout=timeout)
        block = wire.block_from_proto(reply.block)
        out = []
        for tx in block.transactions:
            if tx.kind != TxKind.MODEL_VERSION:
                continue
            for digest, _ in ModelCommit.decode(tx.payload).updates[:MAX_SEEN]:
                chunks = stub.GetBlob(chain_pb.GetBlobRequest(hash=digest), timeout=timeout)
                update = SignedUpdate.decode(b"".join([c.data async for c in chunks]))
                out.append((update.client, decode_params(update.params).flat))
        return out
    except (grpc.aio.AioRpcError, DecodeError, CodecError) as exc:
        log.info("lazy client: nothing to copy from CTBC now: %s", exc)
        return []
