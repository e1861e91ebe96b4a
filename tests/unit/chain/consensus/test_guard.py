"""The vote guard: persisted before handed out, never two signatures for one position, and the
lock survives a restart. Real files in tmp_path."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dualchain.chain.consensus.committee import LockState
from dualchain.chain.consensus.guard import PROPOSAL_STEP, STATE_FORMAT, VoteGuard
from dualchain.chain.errors import StoreError
from dualchain.chain.types import VoteStep
from tests.unit.chain.consensus.simulation import block_on, genesis

PREVOTE, PRECOMMIT = int(VoteStep.PREVOTE), int(VoteStep.PRECOMMIT)
H = 5
BLOCK_A = b"\xaa" * 32
BLOCK_B = b"\xbb" * 32


def blocks() -> tuple:
    root = genesis()
    return block_on(root, 0, 1), block_on(root, 1, 2), block_on(root, 2, 3)


class Signatures:
    """A make_signature factory that counts its calls and hands out distinct signatures."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        return f"sig-{self.calls}".encode()


def state(directory: Path) -> dict:
    return json.loads((directory / "vote-guard.json").read_text())


def names(directory: Path, signature: bytes) -> bool:
    path = directory / "vote-guard.json"
    return path.exists() and state(directory)["last"]["signature"] == signature.hex()


def test_signature_is_persisted_before_it_is_returned(tmp_path: Path) -> None:
    guard = VoteGuard(tmp_path)
    seen_inside: list[bool] = []

    def make(signature: bytes):
        def inner() -> bytes:
            seen_inside.append(names(tmp_path, signature))
            return signature
        return inner

    first = guard.sign(H, 0, PREVOTE, BLOCK_A, LockState(), make(b"first"))
    assert first == b"first"
    assert names(tmp_path, b"first")
    last = state(tmp_path)["last"]
    assert (last["height"], last["round"], last["step"], last["block_hash"]) == (
        H, 0, PREVOTE, BLOCK_A.hex())

    second = guard.sign(H, 0, PRECOMMIT, BLOCK_A, LockState(), make(b"second"))
    assert second == b"second"
    assert seen_inside == [False, False]  # not on disk while being made ...
    assert names(tmp_path, b"second")  # ... on disk once handed out
    assert not list(tmp_path.glob(".*.tmp"))


def test_same_message_returns_the_same_signature_without_signing_again(tmp_path: Path) -> None:
    guard, make = VoteGuard(tmp_path), Signatures()
    first = guard.sign(H, 1, PREVOTE, BLOCK_A, LockState(), make)
    again = guard.sign(H, 1, PREVOTE, BLOCK_A, LockState(), make)
    assert first == again == b"sig-1"
    assert make.calls == 1


def test_another_block_at_the_same_position_is_refused(tmp_path: Path) -> None:
    guard, make = VoteGuard(tmp_path), Signatures()
    guard.sign(H, 1, PRECOMMIT, BLOCK_A, LockState(), make)
    before = (tmp_path / "vote-guard.json").read_bytes()
    assert guard.sign(H, 1, PRECOMMIT, BLOCK_B, LockState(), make) is None
    assert guard.sign(H, 1, PRECOMMIT, bytes(32), LockState(), make) is None  # nil too
    assert make.calls == 1
    assert (tmp_path / "vote-guard.json").read_bytes() == before


@pytest.mark.parametrize("position", [
    (H, 3, PREVOTE),  # earlier step
    (H, 3, PROPOSAL_STEP),
    (H, 2, PRECOMMIT),  # earlier round
    (H - 1, 9, PRECOMMIT),  # earlier height
])
def test_an_earlier_position_is_refused(tmp_path: Path, position: tuple[int, int, int]) -> None:
    guard, make = VoteGuard(tmp_path), Signatures()
    guard.sign(H, 3, PRECOMMIT, BLOCK_A, LockState(), make)
    assert guard.sign(*position, BLOCK_A, LockState(), make) is None
    assert make.calls == 1
    assert guard.last is not None and (guard.last.height, guard.last.round) == (H, 3)


def test_later_positions_are_signed_in_order(tmp_path: Path) -> None:
    guard, make = VoteGuard(tmp_path), Signatures()
    positions = [(H, 0, PROPOSAL_STEP), (H, 0, PREVOTE), (H, 0, PRECOMMIT), (H, 1, PREVOTE),
                 (H, 4, PROPOSAL_STEP), (H + 1, 0, PREVOTE)]
    for i, position in enumerate(positions):
        assert guard.sign(*position, BLOCK_A if i % 2 else BLOCK_B, LockState(), make) == (
            f"sig-{i + 1}".encode())


def test_a_new_guard_on_the_same_directory_keeps_refusing(tmp_path: Path) -> None:
    make = Signatures()
    first = VoteGuard(tmp_path).sign(H, 2, PRECOMMIT, BLOCK_A, LockState(round=2), make)
    restarted = VoteGuard(tmp_path)  # the process died and came back
    assert restarted.last is not None and restarted.last.signature == first
    assert restarted.sign(H, 2, PRECOMMIT, BLOCK_B, LockState(), make) is None
    assert restarted.sign(H, 2, PREVOTE, BLOCK_A, LockState(), make) is None
    assert restarted.sign(H, 2, PRECOMMIT, BLOCK_A, LockState(), make) == first
    assert make.calls == 1
    assert restarted.sign(H, 3, PREVOTE, BLOCK_B, LockState(), make) == b"sig-2"


def test_the_lock_survives_a_restart(tmp_path: Path) -> None:
    locked, valid, _ = blocks()
    lock = LockState(round=3, locked_round=1, locked_block=locked, valid_round=2, valid_block=valid)
    VoteGuard(tmp_path).sign(H, 3, PREVOTE, valid.hash, lock, Signatures())
    restarted = VoteGuard(tmp_path)
    assert restarted.lock_for(H) == lock
    assert restarted.lock_for(H).locked_block.encoded == locked.encoded  # type: ignore[union-attr]
    assert restarted.lock_for(H - 1) is None
    assert restarted.lock_for(H + 1) is None


def test_lock_for_in_the_running_guard_and_on_an_empty_directory(tmp_path: Path) -> None:
    assert VoteGuard(tmp_path / "empty").lock_for(0) is None
    locked, _, _ = blocks()
    guard = VoteGuard(tmp_path)
    lock = LockState(round=1, locked_round=1, locked_block=locked, valid_round=1,
                     valid_block=locked)
    guard.sign(H, 1, PRECOMMIT, locked.hash, lock, Signatures())
    assert guard.lock_for(H) == lock
    # the next height starts with no lock; signing there replaces it
    guard.sign(H + 1, 0, PREVOTE, BLOCK_A, LockState(), Signatures())
    assert guard.lock_for(H) is None and guard.lock_for(H + 1) == LockState()
    assert VoteGuard(tmp_path).lock_for(H + 1) == LockState()


def test_block_files_no_longer_named_are_pruned(tmp_path: Path) -> None:
    one, two, three = blocks()
    guard, make = VoteGuard(tmp_path), Signatures()

    def files() -> set[str]:
        return {p.name for p in tmp_path.glob("block-*.bin")}

    guard.sign(H, 0, PRECOMMIT, one.hash, LockState(0, 0, one, 0, one), make)
    assert files() == {f"block-{one.hash.hex()}.bin"}
    guard.sign(H, 1, PRECOMMIT, two.hash, LockState(1, 1, two, 1, three), make)
    assert files() == {f"block-{two.hash.hex()}.bin", f"block-{three.hash.hex()}.bin"}
    (tmp_path / "block-00.bin").write_bytes(b"stale")  # left by a crash, named by nobody
    guard.sign(H + 1, 0, PREVOTE, BLOCK_A, LockState(), make)
    assert files() == set()
    assert VoteGuard(tmp_path).lock_for(H + 1) == LockState()


def test_a_failed_signature_changes_nothing(tmp_path: Path) -> None:
    guard = VoteGuard(tmp_path)
    guard.sign(H, 0, PREVOTE, BLOCK_A, LockState(), lambda: b"one")
    before = (tmp_path / "vote-guard.json").read_bytes()

    def broken() -> bytes:
        raise RuntimeError("HSM unplugged")

    with pytest.raises(RuntimeError):
        guard.sign(H, 0, PRECOMMIT, BLOCK_A, LockState(), broken)
    assert (tmp_path / "vote-guard.json").read_bytes() == before
    assert guard.sign(H, 0, PRECOMMIT, BLOCK_B, LockState(), lambda: b"two") == b"two"


def _valid_state(tmp_path: Path) -> dict:
    locked, _, _ = blocks()
    VoteGuard(tmp_path).sign(H, 1, PRECOMMIT, locked.hash, LockState(1, 1, locked, 1, locked),
                             lambda: b"sig")
    return state(tmp_path)


def _set(data: dict, dotted: str, value: object) -> dict:
    *path, key = dotted.split(".")
    target = data
    for part in path:
        target = target[part]
    target[key] = value
    return data


@pytest.mark.parametrize("corrupt", [
    pytest.param(lambda d, p: p.write_bytes(b""), id="empty"),
    pytest.param(lambda d, p: p.write_bytes(p.read_bytes()[:40]), id="truncated"),
    pytest.param(lambda d, p: p.write_bytes(b"\xff\xfe\x00garbage"), id="binary"),
    pytest.param(lambda d, p: p.write_text("[1, 2]"), id="json-list"),
    pytest.param(lambda d, p: p.write_text("null"), id="json-null"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "format", "x/9"))), id="format"),
    pytest.param(lambda d, p: p.write_text(json.dumps({"format": STATE_FORMAT})), id="no-last"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "last.height", "5"))),
                 id="height-string"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "last.round", None))),
                 id="round-null"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "lock.locked_round", True))),
                 id="bool-round"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "last.signature", "zz"))),
                 id="bad-hex"),
    pytest.param(lambda d, p: p.write_text(json.dumps(_set(d, "lock", [1]))), id="lock-list"),
    pytest.param(lambda d, p: [f.unlink() for f in p.parent.glob("block-*.bin")],
                 id="block-file-missing"),
    pytest.param(lambda d, p: [f.write_bytes(b"DCB1junk") for f in p.parent.glob("block-*.bin")],
                 id="block-file-corrupt"),
    pytest.param(lambda d, p: [f.write_bytes(blocks()[2].encoded)
                               for f in p.parent.glob("block-*.bin")],
                 id="block-file-holds-another-block"),
])
def test_a_corrupted_state_raises_store_error(tmp_path: Path, corrupt) -> None:
    data = _valid_state(tmp_path)
    corrupt(data, tmp_path / "vote-guard.json")
    with pytest.raises(StoreError):
        VoteGuard(tmp_path)


def test_signing_from_two_threads_at_once_keeps_one_record(tmp_path: Path) -> None:
    """The daemon signs votes and proposals on two threads; both must get through (the state
    file's temporary copy was shared: one rename failed) and each position is signed once."""
    guard = VoteGuard(tmp_path)
    errors: list[BaseException] = []
    signed: dict[tuple[int, int, int], set[bytes]] = {}

    def sign(step: int) -> None:
        try:
            for height in range(1, 41):
                result = guard.sign(height, 0, step, bytes([step]) * 32, LockState(),
                                    lambda h=height: b"sig-%d-%d" % (h, step))
                if result is not None:
                    signed.setdefault((height, 0, step), set()).add(result)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sign, args=(step,)) for step in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert all(len(values) == 1 for values in signed.values())
