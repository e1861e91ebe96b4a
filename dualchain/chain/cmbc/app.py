"""The CMBC application: registered clients, their measured states and cross-chain anchors.

Rules (each refusal is a ValidationError with a code):

- ``CLIENT_REGISTER``: the sender (its key is the transaction's key) attaches to a server node;
  sending it again moves the client.
- ``STATE_REPORT``: only from a registered client; the latest report per client is kept.
- ``ANCHOR``: a model version committed on CTBC; a version is anchored once, with one hash.
- ``REWARD``: exactly one per block, its first transaction, sent by the block's miner and bound
  to the block's height and parent; never admitted to the mempool.
- ``MEMO``: opaque bytes, accepted and not stored (benchmarks).

Group assignments and task plans join with the scheduler; until then CMBC refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence

from dualchain.chain.app import ReorgApplication
from dualchain.chain.cmbc.payloads import (
    Anchor,
    ClientRegistration,
    Reward,
    StateReport,
    decode_payload,
)
from dualchain.chain.cmbc.state import JournaledState
from dualchain.chain.errors import DecodeError, ValidationError
from dualchain.chain.types import Block, Transaction, TxKind

CLIENT = b"client/"
STATE = b"state/"
ANCHOR = b"anchor/"


def check_reward(block: Block) -> Transaction:
    """The block's reward transaction, checked against its header (needs no chain state)."""
    header = block.header
    if not block.transactions or block.transactions[0].kind != TxKind.REWARD:
        raise ValidationError("a CMBC block must start with its reward transaction",
                              code="bad_reward")
    reward_tx = block.transactions[0]
    if any(tx.kind == TxKind.REWARD for tx in block.transactions[1:]):
        raise ValidationError("a CMBC block holds one reward transaction", code="bad_reward")
    if reward_tx.sender != header.proposer:
        raise ValidationError("the reward transaction is not from the block's miner",
                              code="bad_reward")
    reward = Reward.decode(reward_tx.payload)
    if (reward.height, reward.parent_hash) != (header.height, header.parent_hash):
        raise ValidationError("the reward transaction names another block position",
                              code="bad_reward")
    return reward_tx


class CmbcApp(ReorgApplication):
    def __init__(self, max_undo: int = 64) -> None:
        self.state = JournaledState(max_undo)

    # -- reads -----------------------------------------------------------------------------------

    def client(self, client_id: bytes) -> tuple[bytes, ClientRegistration] | None:
        """A registered client's public key and registration."""
        raw = self.state.get(CLIENT + client_id)
        if raw is None:
            return None
        key_len = int.from_bytes(raw[:4], "big")
        return raw[4 : 4 + key_len], ClientRegistration.decode(raw[4 + key_len :])

    def latest_report(self, client_id: bytes) -> StateReport | None:
        raw = self.state.get(STATE + client_id)
        return None if raw is None else StateReport.decode(raw)

    def anchor(self, version: int) -> Anchor | None:
        raw = self.state.get(ANCHOR + version.to_bytes(8, "big"))
        return None if raw is None else Anchor.decode(raw)

    # -- Application -----------------------------------------------------------------------------

    def app_hash(self) -> bytes:
        return self.state.digest()

    def check_tx(self, tx: Transaction) -> None:
        if tx.kind == TxKind.REWARD:
            raise ValidationError("reward transactions come only with their block",
                                  code="unsupported_kind")
        self._check(tx)

    def validate_block(self, block: Block) -> None:
        self.apply_block(block)
        self.rollback_block(block)

    def apply_block(self, block: Block) -> bytes:
        check_reward(block)
        self.state.begin()
        try:
            for tx in block.transactions:
                self._apply(tx, self._check(tx))
        except BaseException:
            self.state.abort()
            raise
        self.state.commit()
        return self.app_hash()

    def rollback_block(self, block: Block) -> None:
        self.state.undo_last()

    def executable(self, txs: Sequence[Transaction]) -> list[Transaction]:
        """What of ``txs``, applied in order, the rules accept; changes nothing.

        Each transaction was checked alone when it was admitted, but together they may conflict
        (two anchors of one version with different hashes), and a reorg can take back what one
        relied on. A block template must leave such a transaction out, and every later one of
        its sender (their nonces would skip), or each block mined from it is invalid and the
        chain stalls.
        """
        kept: list[Transaction] = []
        refused: set[bytes] = set()
        self.state.begin()
        try:
            for tx in txs:
                if tx.sender in refused:
                    continue
                try:
                    self._apply(tx, self._check(tx))
                except ValidationError:
                    refused.add(tx.sender)
                    continue
                kept.append(tx)
        finally:
            self.state.abort()
        return kept

    # -- rules -----------------------------------------------------------------------------------

    def _check(self, tx: Transaction) -> object:
        try:
            payload = decode_payload(tx.kind, tx.payload)
        except DecodeError as exc:
            raise ValidationError(f"{tx.kind.name} payload: {exc.reason}",
                                  code="bad_payload") from exc
        if isinstance(payload, StateReport) and self.client(tx.sender) is None:
            raise ValidationError(
                f"state report from unregistered client {tx.sender.hex()[:16]}",
                code="unknown_client")
        if isinstance(payload, Anchor):
            known = self.anchor(payload.version)
            if known is not None and known.model_hash != payload.model_hash:
                raise ValidationError(
                    f"version {payload.version} is already anchored with another hash",
                    code="conflicting_anchor")
        return payload

    def _apply(self, tx: Transaction, payload: object) -> None:
        if isinstance(payload, ClientRegistration):
            key = len(tx.public_key).to_bytes(4, "big") + tx.public_key
            self.state.put(CLIENT + tx.sender, key + payload.encode())
        elif isinstance(payload, StateReport):
            self.state.put(STATE + tx.sender, payload.encode())
        elif isinstance(payload, Anchor) and self.anchor(payload.version) is None:
            self.state.put(ANCHOR + payload.version.to_bytes(8, "big"), payload.encode())
