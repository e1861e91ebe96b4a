"""Tests of the mempool: refusals, selection, removal, eviction, reinjection, expiry, invariants."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualchain.chain.errors import MempoolError
from dualchain.chain.identity import Domain, Signer
from dualchain.chain.mempool import Mempool, MempoolConfig
from dualchain.chain.types import Transaction, TxKind

CHAIN = "test-chain"


@pytest.fixture(scope="module")
def signers() -> list[Signer]:
    return [Signer.generate() for _ in range(4)]


def signed(signer: Signer, nonce: int, payload: bytes = b"", ts: int = 1_000) -> Transaction:
    tx = Transaction(CHAIN, TxKind.MEMO, signer.id, signer.public_key, nonce, ts, payload)
    return tx.with_signature(signer.sign(Domain.TRANSACTION, tx.signing_bytes))


def sender_id(i: int) -> bytes:
    return hashlib.sha256(b"sender-%d" % i).digest()


def unsigned(sender: bytes, nonce: int, payload: bytes = b"") -> Transaction:
    """Unsigned: the mempool does not verify signatures, and these are cheap to make."""
    return Transaction(CHAIN, TxKind.MEMO, sender, b"", nonce, 1_000, payload)


def nonces_of(nonces: dict[bytes, int]) -> Callable[[bytes], int]:
    return lambda sender: nonces.get(sender, 0)


def refusal(pool: Mempool, tx: Transaction, next_nonce: int, now_ms: int = 0) -> str:
    with pytest.raises(MempoolError) as info:
        pool.add(tx, next_nonce, now_ms)
    assert info.value.reason
    return info.value.code


# -- admission and refusals ------------------------------------------------------------------


def test_add_and_queries(signers: list[Signer]) -> None:
    a, b = signers[0], signers[1]
    pool = Mempool()
    txs = [signed(a, 2), signed(a, 0), signed(b, 0), signed(a, 1)]
    for tx in txs:
        pool.add(tx, 0, 0)
    assert len(pool) == 4
    assert pool.senders() == 2
    assert pool.size_bytes == sum(tx.size for tx in txs)
    assert [tx.nonce for tx in pool.pending(a.id)] == [0, 1, 2]
    assert pool.pending(signers[2].id) == []
    assert txs[0].hash in pool
    assert pool.get(txs[2].hash) == txs[2]
    assert pool.get(b"\x00" * 32) is None
    assert b"\x00" * 32 not in pool


def test_refusal_codes(signers: list[Signer]) -> None:
    a, b = signers[0], signers[1]
    pool = Mempool(MempoolConfig(max_per_sender=3, max_nonce_gap=5, max_bytes=20_000))
    first = signed(a, 5)
    pool.add(first, 5, 0)
    before = (len(pool), pool.size_bytes)

    assert refusal(pool, first, 5) == "duplicate"
    assert refusal(pool, signed(a, 4), 5) == "stale_nonce"
    assert refusal(pool, signed(a, 5, b"other"), 5) == "nonce_taken"
    assert refusal(pool, signed(a, 11), 5) == "nonce_gap"
    pool.add(signed(a, 10), 5, 0)  # exactly max_nonce_gap above: allowed
    pool.add(signed(a, 6), 5, 0)
    assert refusal(pool, signed(a, 7), 5) == "sender_full"
    assert refusal(pool, signed(b, 0, bytes(20_000)), 0) == "oversized"

    assert pool.get(first.hash) == first
    assert len(pool) == before[0] + 2
    assert pool.senders() == 1


def test_duplicate_checked_before_nonce_rules(signers: list[Signer]) -> None:
    pool = Mempool()
    tx = signed(signers[0], 0)
    pool.add(tx, 0, 0)
    assert refusal(pool, tx, 0) == "duplicate"


def test_add_accepts_exactly_the_bounds() -> None:
    s = sender_id(0)
    tx = unsigned(s, 0, b"x" * 100)
    pool = Mempool(MempoolConfig(max_txs=1, max_bytes=tx.size))
    pool.add(tx, 0, 0)
    assert len(pool) == 1 and pool.size_bytes == tx.size


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        MempoolConfig(max_txs=0)
    with pytest.raises(ValueError):
        MempoolConfig(max_nonce_gap=-1)


# -- selection -------------------------------------------------------------------------------


def test_select_only_contiguous_executable_nonces(signers: list[Signer]) -> None:
    a, b = signers[0], signers[1]
    pool = Mempool()
    for n in (3, 4, 6):  # 5 missing: 6 is not executable
        pool.add(signed(a, n), 3, 0)
    pool.add(signed(b, 1), 0, 0)  # b's next nonce is 0: nothing executable
    selected = pool.select(nonces_of({a.id: 3, b.id: 0}), 100, 10**9)
    assert [(tx.sender, tx.nonce) for tx in selected] == [(a.id, 3), (a.id, 4)]
    assert len(pool) == 4  # select removes nothing


def test_select_skips_pending_below_next_nonce() -> None:
    s = sender_id(0)
    pool = Mempool()
    for n in range(4):
        pool.add(unsigned(s, n), 0, 0)
    # The chain advanced to 2 without remove_committed being called yet.
    assert [tx.nonce for tx in pool.select(nonces_of({s: 2}), 100, 10**9)] == [2, 3]


def test_select_round_robin_in_first_arrival_order() -> None:
    a, b, c = sender_id(1), sender_id(2), sender_id(3)
    pool = Mempool()
    # Arrival order of first pending tx: b, then c, then a.
    pool.add(unsigned(b, 0), 0, 0)
    pool.add(unsigned(c, 0), 0, 1)
    for n in range(3):
        pool.add(unsigned(a, n), 0, 2)
    for n in range(1, 3):
        pool.add(unsigned(b, n), 0, 3)
    pool.add(unsigned(c, 1), 0, 4)
    selected = pool.select(nonces_of({}), 100, 10**9)
    assert [(tx.sender, tx.nonce) for tx in selected] == [
        (b, 0), (c, 0), (a, 0),
        (b, 1), (c, 1), (a, 1),
        (b, 2), (a, 2),
    ]  # fmt: skip


def test_select_fair_under_max_txs() -> None:
    big, small = sender_id(1), sender_id(2)
    pool = Mempool()
    for n in range(50):
        pool.add(unsigned(big, n), 0, 0)
    pool.add(unsigned(small, 0), 0, 1)
    selected = pool.select(nonces_of({}), 4, 10**9)
    assert len(selected) == 4
    assert [(tx.sender, tx.nonce) for tx in selected] == [
        (big, 0), (small, 0), (big, 1), (big, 2)
    ]  # fmt: skip
    assert pool.select(nonces_of({}), 0, 10**9) == []


def test_select_respects_max_bytes_and_stops_the_sender_run() -> None:
    a, b = sender_id(1), sender_id(2)
    pool = Mempool()
    small = [unsigned(a, 0, b"s"), unsigned(a, 1, b"x" * 500), unsigned(a, 2, b"s")]
    others = [unsigned(b, n, b"t") for n in range(3)]
    for tx in small:
        pool.add(tx, 0, 0)
    for tx in others:
        pool.add(tx, 0, 1)
    budget = small[0].size + sum(tx.size for tx in others)
    selected = pool.select(nonces_of({}), 100, budget)
    # a's nonce 1 does not fit: skipped, and a's nonce 2 is then not executable.
    assert selected == [small[0], others[0], others[1], others[2]]
    assert sum(tx.size for tx in selected) <= budget
    assert pool.select(nonces_of({}), 100, small[0].size - 1) == []


# -- removal after commit --------------------------------------------------------------------


def test_remove_committed_drops_included_and_stale(signers: list[Signer]) -> None:
    a, b = signers[0], signers[1]
    pool = Mempool()
    a_txs = [signed(a, n) for n in range(4)]
    b_txs = [signed(b, n) for n in range(2)]
    for tx in a_txs + b_txs:
        pool.add(tx, 0, 0)
    # A competing block included a different a-transaction with nonce 1 (never seen here).
    foreign = signed(a, 1, b"competing")
    chain = {a.id: 2, b.id: 1}
    pool.remove_committed([a_txs[0], foreign, b_txs[0]], nonces_of(chain))
    assert [tx.nonce for tx in pool.pending(a.id)] == [2, 3]
    assert pool.pending(b.id) == [b_txs[1]]
    assert a_txs[1].hash not in pool
    assert len(pool) == 3
    assert pool.size_bytes == a_txs[2].size + a_txs[3].size + b_txs[1].size

    pool.remove_committed(a_txs[2:] + b_txs[1:], nonces_of({a.id: 4, b.id: 2}))
    assert len(pool) == 0 and pool.size_bytes == 0 and pool.senders() == 0


# -- eviction --------------------------------------------------------------------------------


def test_eviction_takes_biggest_senders_highest_nonce() -> None:
    a, b, c = sender_id(1), sender_id(2), sender_id(3)
    pool = Mempool(MempoolConfig(max_txs=6))
    for n in range(3):
        pool.add(unsigned(a, n), 0, 0)
    for n in range(2):
        pool.add(unsigned(b, n), 0, 0)
    pool.add(unsigned(c, 0), 0, 0)
    incoming = unsigned(c, 1)
    pool.add(incoming, 0, 0)
    assert len(pool) == 6
    assert [tx.nonce for tx in pool.pending(a)] == [0, 1]  # a's top (nonce 2) evicted
    assert [tx.nonce for tx in pool.pending(b)] == [0, 1]
    assert incoming.hash in pool


def test_incoming_sender_loses_ties_as_newest_arrival() -> None:
    a, b, c = sender_id(1), sender_id(2), sender_id(3)
    pool = Mempool(MempoolConfig(max_txs=5))
    pool.add(unsigned(a, 0), 0, 0)
    pool.add(unsigned(b, 0), 0, 0)
    pool.add(unsigned(b, 1), 0, 0)
    pool.add(unsigned(a, 1), 0, 0)  # a and b both have 2; a's newest arrived last
    pool.add(unsigned(c, 0), 0, 0)
    # c: 2 with the incoming tx, tied with a and b, and the incoming tx is the newest arrival,
    # so c is the target and its highest nonce is the incoming one: refused.
    assert refusal(pool, unsigned(c, 5), 0) == "full"
    assert len(pool) == 5
    assert [tx.nonce for tx in pool.pending(c)] == [0]
    assert [tx.nonce for tx in pool.pending(a)] == [0, 1]


def test_eviction_tie_between_other_senders() -> None:
    a, b, c = sender_id(1), sender_id(2), sender_id(3)
    pool = Mempool(MempoolConfig(max_txs=4))
    pool.add(unsigned(a, 0), 0, 0)
    pool.add(unsigned(b, 0), 0, 0)
    pool.add(unsigned(b, 1), 0, 0)
    pool.add(unsigned(a, 1), 0, 0)  # a's newest arrived after b's newest
    pool.add(unsigned(c, 0), 0, 0)
    assert [tx.nonce for tx in pool.pending(a)] == [0]
    assert [tx.nonce for tx in pool.pending(b)] == [0, 1]
    assert len(pool.pending(c)) == 1


def test_eviction_refuses_incoming_when_it_is_the_evictee() -> None:
    a, b = sender_id(1), sender_id(2)
    pool = Mempool(MempoolConfig(max_txs=4))
    for n in range(3):
        pool.add(unsigned(a, n), 0, 0)
    pool.add(unsigned(b, 0), 0, 0)
    snapshot = {tx.hash for s in (a, b) for tx in pool.pending(s)}
    size = pool.size_bytes
    assert refusal(pool, unsigned(a, 3), 0) == "full"
    assert {tx.hash for s in (a, b) for tx in pool.pending(s)} == snapshot
    assert pool.size_bytes == size and len(pool) == 4


def test_eviction_of_own_higher_nonce_to_fill_a_gap() -> None:
    a, b = sender_id(1), sender_id(2)
    pool = Mempool(MempoolConfig(max_txs=4))
    for n in (0, 1, 3):
        pool.add(unsigned(a, n), 0, 0)
    pool.add(unsigned(b, 0), 0, 0)
    pool.add(unsigned(a, 2), 0, 0)  # a is biggest, its top is 3 > 2: evict 3, admit 2
    assert [tx.nonce for tx in pool.pending(a)] == [0, 1, 2]


def test_refusal_after_partial_plan_changes_nothing() -> None:
    a, c, d = sender_id(1), sender_id(2), sender_id(3)
    payload = b"x" * 200
    unit = unsigned(a, 0, payload).size
    pool = Mempool(MempoolConfig(max_bytes=4 * unit + 10))
    for n in range(3):
        pool.add(unsigned(a, n, payload), 0, 0)
    pool.add(unsigned(c, 0, payload), 0, 0)
    before = {tx.hash for s in (a, c) for tx in pool.pending(s)}
    # The incoming tx needs two evictions: first a's nonce 2 (a has 3), then a and c tie at 2
    # and c (the incoming tx's sender) loses the tie, its top being the incoming tx: refused.
    big = unsigned(c, 1, payload * 2)
    assert refusal(pool, big, 0) == "full"
    assert {tx.hash for s in (a, c) for tx in pool.pending(s)} == before
    assert pool.size_bytes == 4 * unit

    # From a third sender the same two evictions both hit a: a's nonces 2 then 1.
    incoming = unsigned(d, 0, payload * 2)
    pool.add(incoming, 0, 0)
    assert [tx.nonce for tx in pool.pending(a)] == [0]
    assert [tx.nonce for tx in pool.pending(c)] == [0]
    assert incoming.hash in pool
    assert pool.size_bytes <= pool.config.max_bytes


def test_byte_bound_eviction(signers: list[Signer]) -> None:
    a, b = signers[0], signers[1]
    probe = signed(a, 0)
    pool = Mempool(MempoolConfig(max_bytes=3 * probe.size + probe.size // 2))
    a_txs = [probe, signed(a, 1), signed(a, 2)]
    for tx in a_txs:
        pool.add(tx, 0, 0)
    incoming = signed(b, 0)
    pool.add(incoming, 0, 0)
    assert pool.pending(a.id) == a_txs[:2]
    assert incoming.hash in pool
    assert pool.size_bytes == sum(tx.size for tx in [*a_txs[:2], incoming])
    assert pool.size_bytes <= pool.config.max_bytes


# -- reorg -----------------------------------------------------------------------------------


def test_reinject_after_reorg(signers: list[Signer]) -> None:
    a, b, c = signers[0], signers[1], signers[2]
    pool = Mempool(MempoolConfig(max_nonce_gap=3))
    chain = {a.id: 0, b.id: 0, c.id: 0}
    block = [signed(a, 0), signed(a, 1), signed(b, 0), signed(c, 0)]
    for tx in block:
        pool.add(tx, 0, 0)
    pending_b = signed(b, 1)
    pool.add(pending_b, 0, 0)
    # The block commits.
    chain.update({a.id: 2, b.id: 1, c.id: 1})
    pool.remove_committed(block, nonces_of(chain))
    assert len(pool) == 1

    # Reorg: the block is disconnected; the new branch holds a different c-tx with nonce 0.
    chain.update({a.id: 0, b.id: 0, c.id: 1})
    # Disconnected txs arrive in any order; b's nonce 0 comes back under the pending nonce 1.
    added = pool.reinject(list(reversed(block)), nonces_of(chain), 5_000)
    assert added == 3  # c's nonce 0 is stale on the new branch: dropped silently
    assert [tx.nonce for tx in pool.pending(a.id)] == [0, 1]
    assert [tx.nonce for tx in pool.pending(b.id)] == [0, 1]
    assert pool.pending(c.id) == []
    # Re-injecting again: all duplicates, nothing added, nothing raised.
    assert pool.reinject(block, nonces_of(chain), 5_000) == 0
    selected = pool.select(nonces_of(chain), 100, 10**9)
    assert {(tx.sender, tx.nonce) for tx in selected} == {
        (a.id, 0), (a.id, 1), (b.id, 0), (b.id, 1)
    }  # fmt: skip


def test_reinject_applies_gap_check_and_eviction() -> None:
    a, b = sender_id(1), sender_id(2)
    pool = Mempool(MempoolConfig(max_txs=3, max_nonce_gap=2))
    for n in range(3):
        pool.add(unsigned(b, n), 0, 0)
    # b is the biggest sender: re-adding a's transaction evicts b's top.
    added = pool.reinject([unsigned(a, 0), unsigned(a, 9)], nonces_of({}), 0)
    assert added == 1  # a's nonce 9 is too far ahead
    assert [tx.nonce for tx in pool.pending(b)] == [0, 1]
    assert [tx.nonce for tx in pool.pending(a)] == [0]


# -- expiry ----------------------------------------------------------------------------------


def test_expire_by_admission_time() -> None:
    s = sender_id(1)
    pool = Mempool(MempoolConfig(ttl_ms=1_000))
    old = unsigned(s, 0)
    mid = unsigned(s, 1)
    new = unsigned(s, 2)
    pool.add(old, 0, 100)
    pool.add(mid, 0, 500)
    pool.add(new, 0, 2_000)
    assert pool.expire(1_100) == []  # exactly ttl old: still live
    assert pool.expire(1_101) == [old]
    assert pool.expire(2_999) == [mid]
    assert pool.pending(s) == [new]
    assert pool.size_bytes == new.size
    assert pool.expire(10_000) == [new]
    assert len(pool) == 0 and pool.senders() == 0


def test_expire_clock_going_backwards_never_expires_early() -> None:
    s = sender_id(1)
    pool = Mempool(MempoolConfig(ttl_ms=1_000))
    first = unsigned(s, 0)
    later = unsigned(s, 1)
    pool.add(first, 0, 5_000)
    pool.add(later, 0, 4_000)  # clock stepped back: treated as admitted at 5_000
    assert pool.expire(5_500) == []
    assert pool.expire(6_001) == [first, later]


# -- invariants under random operations ------------------------------------------------------

SENDERS = [sender_id(i) for i in range(4)]
PROP_CONFIG = MempoolConfig(
    max_txs=8, max_bytes=8 * 240, max_per_sender=4, max_nonce_gap=3, ttl_ms=50
)

add_op = st.tuples(
    st.just("add"),
    st.integers(0, len(SENDERS) - 1),
    st.integers(-1, 5),  # nonce offset from the chain's next nonce
    st.integers(0, 300),  # payload bytes
    st.integers(0, 1),  # payload variant, so equal (sender, nonce) can differ in hash
)
commit_op = st.tuples(st.just("commit"), st.integers(0, 8), st.booleans())
expire_op = st.tuples(st.just("expire"), st.integers(0, 40))
reorg_op = st.tuples(st.just("reorg"))


def check_invariants(pool: Mempool, chain: dict[bytes, int], clock: int) -> None:
    cfg = pool.config
    assert len(pool) <= cfg.max_txs
    assert pool.size_bytes <= cfg.max_bytes
    all_pending = [tx for s in SENDERS for tx in pool.pending(s)]
    assert len(all_pending) == len(pool)
    assert pool.size_bytes == sum(tx.size for tx in all_pending)
    assert pool.senders() == sum(1 for s in SENDERS if pool.pending(s))
    keys = [(tx.sender, tx.nonce) for tx in all_pending]
    assert len(keys) == len(set(keys))
    for s in SENDERS:
        nonces = [tx.nonce for tx in pool.pending(s)]
        assert nonces == sorted(nonces)
        assert len(nonces) <= cfg.max_per_sender
        assert all(n >= chain[s] for n in nonces)
    for tx in all_pending:
        assert tx.hash in pool and pool.get(tx.hash) == tx
    selected = pool.select(nonces_of(chain), 5, 600)
    assert len(selected) <= 5 and sum(tx.size for tx in selected) <= 600
    expected_next = dict(chain)
    for tx in selected:
        assert tx.nonce == expected_next[tx.sender]  # contiguous from the chain's next nonce
        expected_next[tx.sender] += 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(add_op, add_op, commit_op, expire_op, reorg_op), max_size=40))
def test_invariants_hold_under_random_operations(ops: list[tuple]) -> None:
    pool = Mempool(PROP_CONFIG)
    chain = {s: 0 for s in SENDERS}
    last_block: list[Transaction] = []
    saved_chain = dict(chain)
    clock = 0
    for op in ops:
        if op[0] == "add":
            _, i, offset, size, variant = op
            s = SENDERS[i]
            tx = unsigned(s, max(0, chain[s] + offset), bytes([variant]) * size)
            try:
                pool.add(tx, chain[s], clock)
            except MempoolError as exc:
                assert exc.code in {
                    "duplicate", "stale_nonce", "nonce_taken", "nonce_gap",
                    "sender_full", "full",
                }  # fmt: skip
            else:
                assert tx.hash in pool
        elif op[0] == "commit":
            _, count, foreign = op
            block = pool.select(nonces_of(chain), count, 10**9)
            if foreign:
                # A block built elsewhere: one sender's next nonce used by a tx we never saw.
                s = SENDERS[count % len(SENDERS)]
                if all(tx.sender != s for tx in block):
                    block.append(unsigned(s, chain[s], b"foreign"))
            saved_chain = dict(chain)
            for tx in block:
                chain[tx.sender] = tx.nonce + 1
            pool.remove_committed(block, nonces_of(chain))
            last_block = block
            assert all(tx.hash not in pool for tx in block)
        elif op[0] == "expire":
            clock += op[1]
            before = len(pool)
            dropped = pool.expire(clock)
            assert len(pool) == before - len(dropped)
            assert all(tx.hash not in pool for tx in dropped)
        else:  # reorg: undo the last block and put its transactions back
            chain = saved_chain
            pool.reinject(last_block, nonces_of(chain), clock)
            last_block = []
        check_invariants(pool, chain, clock)


def test_oldest_executable_ignores_senders_waiting_on_a_gap() -> None:
    pool = Mempool()
    assert pool.oldest_executable_ms(nonces_of({})) is None
    pool.add(unsigned(sender_id(1), 3), 0, 100)  # nonces 0..2 missing: not executable
    assert pool.oldest_executable_ms(nonces_of({})) is None
    pool.add(unsigned(sender_id(2), 0), 0, 200)
    pool.add(unsigned(sender_id(2), 1), 0, 300)
    pool.add(unsigned(sender_id(3), 5), 5, 400)
    assert pool.oldest_executable_ms(nonces_of({sender_id(3): 5})) == 200
    # Once sender 1's gap is filled its first transaction is the oldest executable one.
    assert pool.oldest_executable_ms(nonces_of({sender_id(1): 3, sender_id(3): 5})) == 100


# -- what GetNonce tells a sender ------------------------------------------------------------


def test_the_admission_window_names_a_nonce_the_pool_admits_and_how_many_more() -> None:
    pool = Mempool(MempoolConfig(max_nonce_gap=4, max_per_sender=6))
    sender = sender_id(1)
    assert pool.admission_window(sender, 10) == (10, 5)  # nonces 10..14 (gap 4)
    for nonce in (10, 11, 13):  # 12 is missing: 13 waits behind a gap
        pool.add(unsigned(sender, nonce), 10, 0)
    nonce, admissible = pool.admission_window(sender, 10)
    assert (nonce, admissible) == (12, 3)  # not 10 + 3 pending = 13, which is taken
    for n in range(nonce, nonce + admissible):
        if n not in (13,):
            pool.add(unsigned(sender, n), 10, 0)
    # The window is used up: one nonce further is refused, as GetNonce now says.
    assert pool.admission_window(sender, 10) == (15, 0)
    assert refusal(pool, unsigned(sender, 15), 10) == "nonce_gap"


def test_the_admission_window_counts_the_per_sender_bound() -> None:
    pool = Mempool(MempoolConfig(max_nonce_gap=64, max_per_sender=3))
    sender = sender_id(2)
    for nonce in range(3):
        pool.add(unsigned(sender, nonce), 0, 0)
    assert pool.admission_window(sender, 0) == (3, 0)
    assert refusal(pool, unsigned(sender, 3), 0) == "sender_full"
    assert pool.admission_window(sender, 2) == (3, 0)  # two committed, still three pending


def test_next_nonce_plus_pending_pointed_past_the_gap_bound() -> None:
    """The old GetNonce answer: committed next nonce + pending count. With 65 pending it named
    nonce 65, which the pool refuses (nonce_gap); the window says there is no room."""
    pool = Mempool()
    sender = sender_id(3)
    for nonce in range(65):
        pool.add(unsigned(sender, nonce), 0, 0)
    assert refusal(pool, unsigned(sender, 0 + len(pool.pending(sender))), 0) == "nonce_gap"
    assert pool.admission_window(sender, 0) == (65, 0)


def test_has_executable_is_false_while_every_sender_waits_on_a_gap() -> None:
    pool = Mempool()
    assert not pool.has_executable(nonces_of({}))
    pool.add(unsigned(sender_id(1), 3), 0, 100)  # nonces 0..2 missing: not executable
    assert not pool.has_executable(nonces_of({}))  # an idle chain makes no block for it
    assert pool.has_executable(nonces_of({sender_id(1): 3}))
