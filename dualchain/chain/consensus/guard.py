"""The vote guard: a replica never signs two different messages for one height, round and step.

Before a signature for a proposal or vote is handed out, the guard writes what was signed (the
message's position and block, and the signature itself), and the lock the replica holds at that
moment, to a file that is fsynced and atomically replaced. Only then is the signature returned; a
crash in between leaves a signature that never left the process. After a crash the file tells the
replica:

- the last (height, round, step) it signed and for which block: asking again for the same gives
  back the same signature; asking for a different block, or for an earlier (height, round, step),
  is refused;
- its lock and valid block, so the consensus state machine restarts the height without
  forgetting what it precommitted to.

The blocks of the lock are written to their own files before the state file that names them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dualchain.chain.consensus.committee import LockState
from dualchain.chain.durable import fsync_dir
from dualchain.chain.errors import DecodeError, StoreError
from dualchain.chain.types import Block

STATE_FORMAT = "dualchain-vote-guard/1"

# Order of the messages a replica signs within one round.
PROPOSAL_STEP = 0


@dataclass(frozen=True)
class Signed:
    height: int
    round: int
    step: int
    block_hash: bytes
    signature: bytes


def _int(mapping: dict, key: str) -> int:
    value = mapping[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} is {value!r}, not an integer")
    return value


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _record(signed: Signed) -> dict[str, object]:
    return {"height": signed.height, "round": signed.round, "step": signed.step,
            "block_hash": signed.block_hash.hex(), "signature": signed.signature.hex()}


class VoteGuard:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._state_path = self.directory / "vote-guard.json"
        self.last: Signed | None = None
        self.history: list[Signed] = []  # everything signed at the last signed height
        self._lock_height = -1
        self._lock = LockState()
        # The daemon signs votes and proposals on a pool of two threads: one check-and-record
        # at a time (two at once also raced on the one temporary file: a chaos run's replica
        # lost a vote to FileNotFoundError right after a SIGCONT).
        self._signing = threading.Lock()
        if self._state_path.exists():
            self._load()

    def _block_path(self, block_hash: bytes) -> Path:
        return self.directory / f"block-{block_hash.hex()}.bin"

    def _load(self) -> None:
        try:
            data = json.loads(self._state_path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            last, lock = data["last"], data["lock"]
            if not isinstance(last, dict) or not isinstance(lock, dict):
                raise ValueError("last or lock is not an object")
            self.last = Signed(_int(last, "height"), _int(last, "round"), _int(last, "step"),
                               bytes.fromhex(last["block_hash"]), bytes.fromhex(last["signature"]))
            self._lock_height = self.last.height
            history = data.get("history", [])
            if not isinstance(history, list):
                raise ValueError("history is not a list")
            self.history = [
                Signed(_int(h, "height"), _int(h, "round"), _int(h, "step"),
                       bytes.fromhex(h["block_hash"]), bytes.fromhex(h["signature"]))
                for h in history
            ]
            self._lock = LockState(
                round=_int(lock, "round"),
                locked_round=_int(lock, "locked_round"),
                locked_block=self._read_block(lock["locked_block"]),
                valid_round=_int(lock, "valid_round"),
                valid_block=self._read_block(lock["valid_block"]),
            )
        except (OSError, ValueError, KeyError, TypeError, DecodeError) as exc:
            raise StoreError(f"vote guard state {self._state_path} is unreadable: {exc}") from exc

    def _read_block(self, block_hex: str | None) -> Block | None:
        if block_hex is None:
            return None
        block = Block.decode(self._block_path(bytes.fromhex(block_hex)).read_bytes())
        if block.hash.hex() != block_hex:
            raise ValueError(f"locked block file {block_hex} holds another block")
        return block

    def lock_for(self, height: int) -> LockState | None:
        """The lock recorded for ``height``, if the last signed message was at that height."""
        return self._lock if self._lock_height == height else None

    def sign(
        self,
        height: int,
        round_: int,
        step: int,
        block_hash: bytes,
        lock: LockState,
        make_signature: Callable[[], bytes],
    ) -> bytes | None:
        """The signature for this message, or None if signing it could equivocate.

        A message signed before at this height is answered from the record (the same bytes
        again, so it can be re-sent after a restart). Safe to call from several threads.
        """
        with self._signing:
            return self._sign(height, round_, step, block_hash, lock, make_signature)

    def _sign(self, height: int, round_: int, step: int, block_hash: bytes, lock: LockState,
              make_signature: Callable[[], bytes]) -> bytes | None:
        last = self.last
        position = (height, round_, step)
        for earlier in self.history:
            if (earlier.height, earlier.round, earlier.step) == position:
                return earlier.signature if earlier.block_hash == block_hash else None
        if last is not None:
            last_position = (last.height, last.round, last.step)
            if position == last_position:
                return last.signature if last.block_hash == block_hash else None
            if position < last_position:
                return None
        signature = make_signature()
        signed = Signed(height, round_, step, block_hash, signature)
        history = [*self.history, signed] if last is not None and last.height == height \
            else [signed]
        for block in (lock.locked_block, lock.valid_block):
            if block is not None and not self._block_path(block.hash).exists():
                _write_atomic(self._block_path(block.hash), block.encoded)
        state = {
            "format": STATE_FORMAT,
            "last": _record(signed),
            "history": [_record(h) for h in history],
            "lock": {
                "round": lock.round,
                "locked_round": lock.locked_round,
                "locked_block": lock.locked_block.hash.hex() if lock.locked_block else None,
                "valid_round": lock.valid_round,
                "valid_block": lock.valid_block.hash.hex() if lock.valid_block else None,
            },
        }
        _write_atomic(self._state_path, json.dumps(state).encode())
        self._prune(lock)
        self.last, self.history = signed, history
        self._lock_height, self._lock = height, lock
        return signature

    def _prune(self, lock: LockState) -> None:
        """Deletes block files no longer named by the state file."""
        keep = {self._block_path(b.hash).name for b in (lock.locked_block, lock.valid_block) if b}
        for path in self.directory.glob("block-*.bin"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
