"""`dualchain bench paper --experiment poison`: a poisoning aggregator (seed 003 §V-E, Fig. 11).

Node 0 of a live testbed (``dualchain up``, every role its own process, fedavg rounds) is the
compromised edge server: at the chosen versions it publishes ``w - rho q``, ``q ~ N(0, I)``
(``adversary.node.AggregatorPoison``), taking the turn whoever's it is. Three accuracy curves
against the model version:

- ``dualchain``: the live run. The committee re-executes the commit and refuses it, the refusal
  becomes BAD_MODEL evidence, CTBC excludes the node from committing (``apps/ctbc/exclusion``)
  and the other nodes carry the versions on. Measured from the processes' event lines: the
  poisoned commits the node submitted (``adversary_commit``, with the model's hash), which of
  them became a version (``accepted_poisoned_versions``: a committed version with that hash),
  and when the honest nodes saw the node excluded (``node_excluded``).
- ``no_check``: the same run with the aggregator's model taken as is. Replayed off the testbed
  after it stopped: the commits CTBC applied, in order, each re-aggregated with the chain's own
  rule (``apps.ctbc.fl.aggregate_pool``) from the recorded signed updates (the replica's blob
  store) on top of the replayed previous model, and the node's poison applied at its versions.
  Before the first poisoned version the replay reproduces the committed hashes exactly
  (``replay_matches_chain``). The clients' recorded updates were trained on the honest models,
  so the replay shows the poison's damage with no recovery by training after it: a bound on
  what accepting the model costs, not a rerun.
- ``central``: a single central aggregator (traditional FL, seed 003's fourth baseline): FedAvg
  of the same number of digits clients in one process with real torch training, poisoned at the
  same versions by the same noise; its clients train on from the poisoned model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dualchain.adversary.node import AggregatorPoison
from dualchain.deploy.up import Testbed, UpConfig

Progress = Callable[[str], None]
Event = tuple[str, dict[str, Any]]  # (process name, event line)


def attack_of(versions: Sequence[int], rho: float, seed: int) -> AggregatorPoison:
    return AggregatorPoison(rho=rho, versions=tuple(versions), seed=seed)


def live_summary(history: Iterable[Event], versions: Mapping[int, Mapping[str, Any]],
                 poisoner: str, poisoner_id: str) -> dict[str, Any]:
    """What the processes said: the poisoned attempts, which became versions, the exclusion."""
    history = list(history)
    committed = {v: e["hash"] for v, e in versions.items()}
    attempts: dict[int, dict[str, Any]] = {}
    for name, e in history:
        if e["event"] == "adversary_commit" and name == poisoner:
            a = attempts.setdefault(e["version"], {"version": e["version"], "hashes": set(),
                                                   "ctbc_height": e.get("ctbc_height")})
            a["hashes"].add(e["hash"])
    accepted = sorted(v for v, a in attempts.items() if committed.get(v) in a["hashes"])
    seen = [(name, e) for name, e in history
            if e["event"] == "node_excluded" and name != poisoner and e["node"] == poisoner_id]
    first = min(attempts) if attempts else None
    exclusion = None
    if seen:
        _, e = seen[0]
        exclusion = {"seen_by": seen[0][0], "at_version": e["version"],
                     "ctbc_height": e["ctbc_height"]}
    readmitted = [e["version"] for name, e in history
                  if e["event"] == "node_readmitted" and name != poisoner
                  and e["node"] == poisoner_id]
    return {
        "attempted_versions": sorted(attempts),
        "attempts": [{"version": v, "committed": v in accepted,
                      "ctbc_height": attempts[v]["ctbc_height"]} for v in sorted(attempts)],
        "accepted_poisoned_versions": len(accepted),
        # Versions committed after the first poisoned attempt and before the exclusion (0: the
        # node was excluded before anyone filled the version it tried to poison).
        "excluded_after_versions": (None if exclusion is None or first is None
                                    else max(0, exclusion["at_version"] - (first - 1))),
        "exclusion": exclusion,
        "readmitted_at_versions": readmitted,
        "versions_committed": len(committed),
    }


def replay_no_check(workdir: Path, attack: AggregatorPoison, committed: Mapping[int, str],
                    replica: str = "ctbc-1") -> dict[str, Any]:
    """The committed run replayed with the aggregator's poisoned models taken as is."""
    from dualchain.apps.ctbc.fl import (
        ModelCommit,
        SignedUpdate,
        aggregate_pool,
        decode_delta,
        fl_rules,
    )
    from dualchain.apps.genesis import Genesis
    from dualchain.chain.blobs import BlobStore
    from dualchain.chain.store import BlockStore
    from dualchain.chain.types import TxKind
    from dualchain.learning.codec import decode_params, encode_params

    genesis = Genesis.load(workdir / "ctbc-genesis.json")
    rules = fl_rules(genesis)
    blobs = BlobStore(workdir / "data" / replica / "blobs")
    store = BlockStore(workdir / "data" / replica / "chain.sqlite")
    applied: dict[int, ModelCommit] = {}
    try:
        for height in range(1, store.height() + 1):
            for tx in store.canonical_block(height).transactions:
                if tx.kind != TxKind.MODEL_VERSION:
                    continue
                commit = ModelCommit.decode(tx.payload)
                if committed.get(commit.version) == commit.model_hash.hex():
                    applied.setdefault(commit.version, commit)
    finally:
        store.close()
    assert genesis.fl is not None
    honest = decode_params(blobs.get(bytes.fromhex(genesis.fl.model_hash))).flat
    params = honest.copy()
    models: list[tuple[int, np.ndarray]] = []
    matches = True
    for version in range(1, max(applied, default=0) + 1):
        commit = applied.get(version)
        if commit is None:
            break  # a gap (the run ended mid-way): the replay stops with it
        updates = []
        for digest in commit.digests:
            update = SignedUpdate.decode(blobs.get(digest))
            updates.append((update, decode_delta(update, params.size, rules.max_update_norm)))
        params = aggregate_pool(rules, params, updates, version - 1).params
        if version < min(attack.versions, default=version + 1):
            blob = encode_params(params, decode_params(blobs.get(commit.model_hash)).shapes)
            matches = matches and hashlib.sha256(blob).digest() == commit.model_hash
        params = attack.apply(params, version)
        models.append((version, params.copy()))
    return {"models": models, "replay_matches_chain": matches}


def central_curve(clients: int, rounds: int, batches: int, lr: float, attack: AggregatorPoison,
                  seed: int) -> list[tuple[int, float]]:
    """Accuracy per version of one central FedAvg server, poisoned at ``attack.versions``."""
    from dualchain.bench.attacks import Federation, _key
    from dualchain.learning.aggregation import Update, fedavg

    fed = Federation(clients, seed)
    params = fed.initial.copy()
    curve = []
    for version in range(1, rounds + 1):
        deltas = [fed.train(params, fed.data.train_x[p], fed.data.train_y[p], batches, lr,
                            seed * 100_003 + version * 101 + c)
                  for c, p in enumerate(fed.parts)]
        params = fedavg(params, [Update(_key(c), version - 1, len(fed.parts[c]), d)
                                 for c, d in enumerate(deltas)], version - 1).params
        params = attack.apply(params, version)
        curve.append((version, round(fed.accuracy(params), 4)))
    return curve


def _accuracy_of(models: Sequence[tuple[int, np.ndarray]], dataset: str, seed: int
                 ) -> list[tuple[int, float]]:
    from dualchain.learning.datasets import load_dataset
    from dualchain.learning.models import build_model, set_flat
    from dualchain.learning.training import evaluate

    data = load_dataset(dataset, None, seed=0)
    model = build_model(data.name, data.num_classes, seed)
    out = []
    for version, params in models:
        set_flat(model, params.astype(np.float32))
        out.append((version, round(float(evaluate(model, data.test_x, data.test_y)[0]), 4)))
    return out


def _curve(points: Sequence[tuple[int, float]]) -> dict[str, list]:
    return {"versions": [v for v, _ in points], "accuracy": [a for _, a in points]}


def poison(base: UpConfig, versions: Sequence[int], rho: float, progress: Progress
           ) -> dict[str, Any]:
    attack = attack_of(versions, rho, base.seed)
    config = replace(base, mode="fedavg", node_attacks={"0": {
        "kind": "poison", "versions": list(attack.versions), "rho": rho, "seed": base.seed}})
    with tempfile.TemporaryDirectory(prefix="bench-poison-") as tmp:
        workdir = Path(tmp) / "testbed"
        testbed = Testbed(replace(config, workdir=str(workdir)), progress=progress)
        report = testbed.run()
        genesis = json.loads((workdir / "ctbc-genesis.json").read_text())
        node0 = _node_id(workdir, 0)
        summary = live_summary([(p.name, e) for p, e in testbed.history], testbed.versions,
                               "node-0", node0)
        committed = {v: e["hash"] for v, e in testbed.versions.items()}
        replay = replay_no_check(workdir, attack, committed)
        epoch_length = genesis["consensus"]["epoch_length"]
    progress(f"live: {summary}")
    no_check = _accuracy_of(replay["models"], base.dataset, base.seed)
    central = central_curve(base.clients, base.rounds, base.batches, base.learning_rate, attack,
                            base.seed)
    live = [(r["version"], r["accuracy"]) for r in report["versions"]]
    excl = summary["exclusion"]
    first = summary["attempts"][0]["ctbc_height"] if summary["attempts"] else None
    return {
        "mode": "fedavg", "poison_versions": list(attack.versions), "rho": rho,
        **{k: summary[k] for k in ("accepted_poisoned_versions", "excluded_after_versions",
                                   "attempted_versions", "attempts", "exclusion",
                                   "readmitted_at_versions")},
        "epoch_length_blocks": epoch_length,
        # The exclusion is in force from the block after the evidence; within one epoch when
        # it came fewer than epoch_length blocks after the first attempt.
        "excluded_within_one_epoch": (excl is not None and first is not None
                                      and excl["ctbc_height"] - first < epoch_length),
        "replay_matches_chain": replay["replay_matches_chain"],
        "curves": {"dualchain": _curve(live), "no_check": _curve(no_check),
                   "central": _curve(central)},
        "final_accuracy": {"dualchain": live[-1][1] if live else None,
                           "no_check": no_check[-1][1] if no_check else None,
                           "central": central[-1][1] if central else None},
    }


def _node_id(workdir: Path, i: int) -> str:
    from dualchain.chain.identity import load_key_file

    return load_key_file(workdir / "keys" / f"node-{i}.key").id.hex()


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"curve": name, "version": v, "accuracy": a}
            for name, c in result["curves"].items()
            for v, a in zip(c["versions"], c["accuracy"], strict=True)]


def plot(result: dict[str, Any], ax: Any) -> None:
    styles = {"dualchain": "C0-", "no_check": "C3--", "central": "C2:"}
    for name, c in result["curves"].items():
        ax.plot(c["versions"], c["accuracy"], styles.get(name, "-"), label=name)
    for v in result["poison_versions"]:
        ax.axvline(v, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("model version")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"poisoning aggregator at versions {result['poison_versions']}, "
                 f"rho={result['rho']:g}")
    ax.legend(fontsize=7)
