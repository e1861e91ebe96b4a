"""`dualchain readmit`: an operator lifts a client's exclusion on a testbed's CTBC.

The CTBC state excludes a client after ``defense.exclude_after`` discarded updates
(``apps/ctbc/clients.py``); only a CLIENT_READMIT transaction signed by an operator the genesis
names (``operators``; ``up`` writes the key to ``WORKDIR/keys/operator.key``) lifts it. This signs
one with the operator's key, submits it to a CTBC daemon of the testbed, waits until it is
committed and answers the client's standing the chain then reports. A refusal (not an operator,
a client that is not excluded) comes back as one line from the committee's application.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dualchain.apps.ctbc.clients import ClientReadmit
from dualchain.chain import wire
from dualchain.chain.clock import now_ms
from dualchain.chain.errors import DualchainError
from dualchain.chain.identity import load_key_file
from dualchain.chain.rpc import TlsFiles, open_blocking_channel
from dualchain.chain.types import TxKind
from dualchain.chain.validation import sign_transaction
from dualchain.deploy.certs import OPERATOR

POLL_S = 0.2


class OperatorError(DualchainError):
    """A re-admission that could not be made; the reason is one line."""


def client_id(workdir: Path, spec: str) -> bytes:
    """A client named by its identity id (64 hex digits) or by its key's name (``client-3``)."""
    spec = spec.strip()
    if len(spec) == 64:
        try:
            return bytes.fromhex(spec)
        except ValueError:
            pass
    if spec and all(c.isalnum() or c in "-_" for c in spec):
        key = Path(workdir) / "keys" / f"{spec}.key"
        if key.exists():
            return load_key_file(key).id
    raise OperatorError(f"--client: {spec!r} is neither a 64-hex-digit identity id nor the "
                        f"name of a key in {Path(workdir) / 'keys'}")


def ctbc_addresses(workdir: Path) -> list[str]:
    """The CTBC daemons of the testbed in ``workdir`` (``state.json`` or ``compose.json``)."""
    for name in ("state.json", "compose.json"):
        path = Path(workdir) / name
        if path.exists():
            try:
                processes = json.loads(path.read_text())["processes"]
                return [p["address"] for p in processes if p["role"] == "ctbc"]
            except (ValueError, KeyError, TypeError) as exc:
                raise OperatorError(f"{path} is not a testbed's process list ({exc!r})") from None
    raise OperatorError(f"{workdir} holds no testbed (no state.json or compose.json)")


def readmit(workdir: Path, client: str, key: Path | None = None, ctbc: str | None = None,
            tls: TlsFiles | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """Signs, submits and waits for the re-admission of ``client``; returns its standing."""
    import grpc

    from dualchain.apps.genesis import Genesis
    from dualchain.proto.v1 import chain_pb2 as pb
    from dualchain.proto.v1 import chain_pb2_grpc as pb_grpc

    workdir = Path(workdir)
    genesis_path = workdir / "ctbc-genesis.json"
    if not genesis_path.exists():
        raise OperatorError(f"{workdir} holds no testbed (no ctbc-genesis.json)")
    genesis = Genesis.load(genesis_path)
    target = client_id(workdir, client)
    signer = load_key_file(key if key is not None else workdir / "keys" / f"{OPERATOR}.key")
    addresses = [ctbc] if ctbc else ctbc_addresses(workdir)
    last_error = "no CTBC daemon is named"
    for address in addresses:
        try:
            with open_blocking_channel(address, tls) as channel:
                stub = pb_grpc.ChainServiceStub(channel)
                nonce = stub.GetNonce(pb.GetNonceRequest(sender=signer.id), timeout=5).next_nonce
                tx = sign_transaction(signer, genesis.chain_id, TxKind.CLIENT_READMIT,
                                      ClientReadmit(target).encode(), nonce, now_ms())
                [result] = stub.SubmitTxs(pb.SubmitTxsRequest(txs=[wire.tx_to_proto(tx)]),
                                          timeout=10).results
                if not result.accepted:
                    raise OperatorError(f"refused ({result.code}): {result.reason}")
                height = _wait_committed(stub, tx.hash, timeout_s)
                status = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
        except grpc.RpcError as exc:
            last_error = f"{address}: {exc.code().name} {exc.details()}"
            continue
        row = next((r for r in status.clients if r.client == target), None)
        if row is not None and row.excluded:
            raise OperatorError(f"committed at height {height}, but the client is still excluded "
                                "(the committee refused it in the block)")
        return {"client": target.hex(), "tx": tx.hash.hex(), "height": height,
                "excluded": False,
                "offences": row.offences if row is not None else 0,
                "readmissions": row.readmissions if row is not None else 0}
    raise OperatorError(f"no CTBC daemon answered ({last_error})")


def _wait_committed(stub: Any, tx_hash: bytes, timeout_s: float) -> int:
    from dualchain.proto.v1 import chain_pb2 as pb

    deadline = time.monotonic() + timeout_s
    while True:
        [st] = stub.GetTxStatus(pb.GetTxStatusRequest(tx_hashes=[tx_hash]), timeout=5).statuses
        if st.state == pb.TX_STATE_COMMITTED:
            return st.height
        if st.state == pb.TX_STATE_DROPPED:
            raise OperatorError(f"dropped ({st.code}): {st.reason}")
        if time.monotonic() > deadline:
            raise OperatorError(f"not committed within {timeout_s:g} s (tx {tx_hash.hex()})")
        time.sleep(POLL_S)
