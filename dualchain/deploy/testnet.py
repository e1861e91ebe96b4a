"""Generates the files of a local testnet: keys, one genesis, one config per replica.

    dualchain testnet --nodes 4 --dir runs/ctbc
    dualchain testnet --kind cmbc --nodes 3 --miners 2 --dir runs/cmbc

writes ``keys/node-I.key`` (mode 0600), ``genesis.json`` (CTBC: naming every node as a
validator; CMBC: with the proof-of-work parameters), and ``node-I.json`` daemon configs
listening on consecutive ports of 127.0.0.1 with every other node as a peer; for CMBC also
``keys/miner-J.key``. Start a replica with
``dualchain chain --kind ctbc --config runs/ctbc/node-0.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from dualchain.chain.app import Validator
from dualchain.chain.clock import now_ms
from dualchain.chain.consensus.pow import PowParams
from dualchain.chain.genesis import ConsensusParams, Genesis, LedgerLimits
from dualchain.chain.identity import Signer
from dualchain.chain.mldsa import DEFAULT_ALGORITHM, Algorithm


@dataclass(frozen=True)
class TestnetPlan:
    nodes: int = 4
    algorithm: Algorithm = DEFAULT_ALGORITHM
    host: str = "127.0.0.1"
    base_port: int = 7000
    metrics_base_port: int = 0  # 0: no metrics endpoints
    committee_size: int | None = None  # None: every node
    consensus: ConsensusParams = field(default_factory=ConsensusParams)
    limits: LedgerLimits = field(default_factory=LedgerLimits)
    chain_id: str = "ctbc-local"
    ports: tuple[int, ...] | None = None  # explicit ports instead of base_port + i
    kind: str = "ctbc"
    pow: PowParams = field(default_factory=PowParams)  # CMBC only
    miners: int = 0  # CMBC: miner keys to write


def make_testnet(directory: Path, plan: TestnetPlan) -> list[Path]:
    """Writes the testnet files; returns the config path of each node."""
    if plan.nodes < 1:
        raise ValueError("a testnet needs at least one node")
    directory = Path(directory)
    (directory / "keys").mkdir(parents=True, mode=0o700, exist_ok=True)
    ports = plan.ports or tuple(plan.base_port + i for i in range(plan.nodes))
    addresses = [f"{plan.host}:{port}" for port in ports[: plan.nodes]]
    validators = []
    for i, address in enumerate(addresses):
        signer = Signer.generate(plan.algorithm)
        signer.save(directory / "keys" / f"node-{i}.key")
        validators.append(Validator(signer.id, signer.public_key, address))
    for j in range(plan.miners):
        Signer.generate(plan.algorithm).save(directory / "keys" / f"miner-{j}.key")
    consensus = replace(plan.consensus, committee_size=plan.committee_size or plan.nodes)
    genesis = Genesis(
        chain_id=plan.chain_id,
        kind=plan.kind,
        algorithm=plan.algorithm,
        genesis_time_ms=now_ms(),
        # Proof of work needs no validator set: anyone with hash power may mine.
        validators=tuple(validators) if plan.kind == "ctbc" else (),
        consensus=consensus,
        limits=plan.limits,
        pow=plan.pow,
    )
    genesis.save(directory / "genesis.json")
    configs = []
    for i, address in enumerate(addresses):
        config = {
            "kind": plan.kind,
            "genesis": "genesis.json",
            "key": f"keys/node-{i}.key",
            "data_dir": f"data/node-{i}",
            "listen": address,
            "peers": [a for a in addresses if a != address],
            "metrics_port": plan.metrics_base_port + i if plan.metrics_base_port else 0,
        }
        path = directory / f"node-{i}.json"
        path.write_text(json.dumps(config, indent=2) + "\n")
        configs.append(path)
    return configs
