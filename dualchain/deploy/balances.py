"""Balances of a testbed's identities, summed over the two chains (``dualchain status``).

CTBC's application holds the clients' rewards (each committed version's reward list), CMBC's the
miners' block rewards; both answer ``GetBalances`` (integer micro-units per 32-byte identity
id). Each chain's figures come from its replica at the greatest height that answers. Accounts
are named by the testbed's key files (``keys/NAME.key``: ``client-0``, ``miner-0``...), others
by their id in hex.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualchain.chain.errors import KeyFileError
from dualchain.chain.identity import load_key_file
from dualchain.chain.rpc import TlsFiles, open_blocking_channel

CHAINS = ("ctbc", "cmbc")


def identity_names(keys: Path) -> dict[bytes, str]:
    """Identity id -> the name of its key file (without ``.key``), for every readable key."""
    names: dict[bytes, str] = {}
    for path in sorted(keys.glob("*.key")):
        with contextlib.suppress(KeyFileError, OSError, ValueError):
            names[load_key_file(path).id] = path.stem
    return names


def chain_balances(processes: Iterable[Mapping[str, Any]], tls: TlsFiles | None
                   ) -> dict[str, tuple[int, dict[bytes, int]]]:
    """Per chain kind, (height, balances) of its highest replica that answers."""
    import grpc

    from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc

    best: dict[str, tuple[int, dict[bytes, int]]] = {}
    for p in processes:
        if p["role"] not in CHAINS:
            continue
        with contextlib.suppress(grpc.RpcError), open_blocking_channel(p["address"], tls) as ch:
            reply = chain_pb2_grpc.ChainServiceStub(ch).GetBalances(
                chain_pb2.GetBalancesRequest(), timeout=2)
            if p["role"] not in best or reply.height > best[p["role"]][0]:
                best[p["role"]] = (reply.height, {bytes(b.account): b.amount
                                                  for b in reply.balances})
    return best


def summed(per_chain: Mapping[str, tuple[int, Mapping[bytes, int]]],
           names: Mapping[bytes, str]) -> dict[str, dict[str, int]]:
    """Per identity (by name), its micro-units on each chain and their total."""
    accounts = sorted({a for _, balances in per_chain.values() for a in balances})
    out: dict[str, dict[str, int]] = {}
    for account in accounts:
        parts = {kind: per_chain[kind][1].get(account, 0) for kind in CHAINS
                 if kind in per_chain}
        out[names.get(account, account.hex())] = {"total": sum(parts.values()), **parts}
    return dict(sorted(out.items()))


def balances_at_one_height(addresses: Sequence[str], tls: TlsFiles | None = None,
                           attempts: int = 40) -> tuple[int, int, list[dict[bytes, int]]]:
    """(height, model version, each replica's balances) of the CTBC replicas at ``addresses``,
    read at one height: while the answers straddle a commit, waits for the first replica's next
    block and reads again. RuntimeError when they never line up."""
    from dualchain.proto.v1 import chain_pb2, chain_pb2_grpc

    with contextlib.ExitStack() as stack:
        stubs = [chain_pb2_grpc.ChainServiceStub(stack.enter_context(
            open_blocking_channel(a, tls))) for a in addresses]
        for _ in range(attempts):
            before = stubs[0].GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
            replies = [s.GetBalances(chain_pb2.GetBalancesRequest(), timeout=10) for s in stubs]
            after = stubs[0].GetStatus(chain_pb2.GetStatusRequest(), timeout=10)
            heights = {before.height, after.height, *(r.height for r in replies)}
            if len(heights) == 1:
                return (before.height, before.model_version,
                        [{bytes(b.account): b.amount for b in r.balances} for r in replies])
            stream = stubs[0].SubscribeBlocks(
                chain_pb2.SubscribeBlocksRequest(from_height=max(heights) + 1), timeout=30)
            next(iter(stream))  # the first replica passed every height read; the rest follow
            stream.cancel()
    raise RuntimeError("the CTBC replicas never answered at one height")


def identity_balances(processes: Iterable[Mapping[str, Any]], tls: TlsFiles | None,
                      keys: Path) -> dict[str, dict[str, int]] | None:
    """Each identity's balances summed over the chains (``summed``); None when there are none."""
    per_chain = chain_balances(processes, tls)
    if not any(balances for _, balances in per_chain.values()):
        return None
    return summed(per_chain, identity_names(keys))
