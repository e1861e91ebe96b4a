"""Federated learning on CTBC: signed client updates, model commits and their re-execution.

- A ``SignedUpdate`` is what a client uploads: its id and key, the model version it trained on,
  its sample count, the task it answers and its delta (a ``learning.codec`` blob), signed with
  ML-DSA under ``Domain.MODEL_UPDATE`` over a digest of exactly those fields. Its canonical bytes
  are stored as a blob; the blob's SHA-256 is the update's digest.
- A ``ModelCommit`` is the payload of a MODEL_VERSION transaction: the new version, its parent,
  the SHA-256 of the new model blob and the digests of the updates it includes with their
  weights. The blobs themselves stay off chain (privacy and size: seed 002's digests-on-chain).
- ``ModelCommitChecker`` re-executes a commit: it loads the parent model and every referenced
  update from the blob store, checks each update's signature and bounds, recomputes the aggregate
  with the rule fixed in the genesis (numpy, deterministic) and compares the hash. A committee
  member that does this cannot be made to commit a model one server tampered with.
- With rewards on (genesis ``fl.reward_base`` > 0) a commit also carries the version's reward
  list (tag DCM3): each client's share of the base by its contribution theta
  (``learning.incentive``, ``learning.rewards``). The replica recomputes theta and the list from
  the same updates and refuses a list that does not conserve the base or does not reproduce.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from dualchain.apps.genesis import Genesis, GenesisError
from dualchain.chain.blobs import BlobStore
from dualchain.chain.canonical import Reader, Writer
from dualchain.chain.errors import DecodeError, NotFoundError, ValidationError
from dualchain.chain.genesis import Genesis as EngineGenesis
from dualchain.chain.identity import ID_BYTES, Domain, identity_id
from dualchain.chain.mldsa import Algorithm
from dualchain.chain.types import HASH_BYTES, MAX_CHAIN_ID, MAX_KEY, MAX_SIGNATURE
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.aggregation import (
    StalenessRule,
    Update,
    UpdateRejected,
    aggregate_async,
    canonical_order,
    check_update,
    fedavg,
    load_aggregator,
    plugin_aggregate,
)
from dualchain.learning.codec import CodecError, decode_params, encode_params
from dualchain.learning.contribution import ClusterParams
from dualchain.learning.fair import AGGREGATION_KINDS, aggregate_fair
from dualchain.learning.incentive import pool_incentives, pool_theta, reward_verdict
from dualchain.learning.plugins import PluginError
from dualchain.learning.rewards import RewardList
from dualchain.learning.robust import RobustRule
from dualchain.learning.screening import REASONS, Candidate, Defense, screen, seed_for_key
from dualchain.learning.watermark import WatermarkParams

UPDATE_TAG = b"DCU1"
UPDATE_SIGNED_TAG = b"DCu1"
COMMIT_TAG = b"DCM2"  # DCM1 had no discard set
REWARD_COMMIT_TAG = b"DCM3"  # DCM2 and the version's reward list (rewards on)
MAX_UPDATE_BYTES = 256 * 1024 * 1024
MAX_COMMIT_UPDATES = 4096
MODES = ("fedasync", "fedavg")


class MissingBlobError(ValidationError):
    """A blob a commit names is not in the local store yet (fetch it, then check again)."""

    code = "missing_blob"


@dataclass(frozen=True)
class SignedUpdate:
    chain_id: str
    client: bytes
    public_key: bytes
    base_version: int
    samples: int
    task: int
    params: bytes  # learning.codec encoding of the delta
    signature: bytes = b""

    @cached_property
    def params_hash(self) -> bytes:
        return hashlib.sha256(self.params).digest()

    @cached_property
    def signing_bytes(self) -> bytes:
        w = Writer(UPDATE_SIGNED_TAG).text(self.chain_id).fixed(self.client, ID_BYTES)
        w.u64(self.base_version).u64(self.samples).u64(self.task)
        return w.fixed(self.params_hash, HASH_BYTES).bytes()

    @cached_property
    def encoded(self) -> bytes:
        w = Writer(UPDATE_TAG).text(self.chain_id).fixed(self.client, ID_BYTES)
        w.var(self.public_key).u64(self.base_version).u64(self.samples).u64(self.task)
        return w.var(self.params).var(self.signature).bytes()

    @cached_property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encoded).digest()

    @classmethod
    def decode(cls, data: bytes) -> SignedUpdate:
        r = Reader(data, UPDATE_TAG, "signed update")
        value = cls(
            chain_id=r.text("chain_id", MAX_CHAIN_ID), client=r.fixed(ID_BYTES, "client"),
            public_key=r.var("public_key", MAX_KEY), base_version=r.u64("base_version"),
            samples=r.u64("samples"), task=r.u64("task"),
            params=r.var("params", MAX_UPDATE_BYTES),
            signature=r.var("signature", MAX_SIGNATURE),
        )
        r.finish()
        value.__dict__["encoded"] = bytes(data)
        return value


def sign_update(signer, chain_id: str, base_version: int, samples: int, task: int,
                params: bytes) -> SignedUpdate:
    """A client's signed update (``signer`` is a ``chain.identity.Signer``)."""
    update = SignedUpdate(chain_id, signer.id, signer.public_key, base_version, samples, task,
                          params)
    return SignedUpdate(update.chain_id, update.client, update.public_key, update.base_version,
                        update.samples, update.task, update.params,
                        signer.sign(Domain.MODEL_UPDATE, update.signing_bytes))


@dataclass(frozen=True)
class ModelCommit:
    version: int
    parent_version: int
    model_hash: bytes
    updates: tuple[tuple[bytes, float], ...]  # (update digest, weight), in aggregation order
    # (update digest, reason) the defense left out, in digest order (``learning.screening``)
    discarded: tuple[tuple[bytes, str], ...] = ()
    # (client id, micro-units) sorted by client, with rewards on; None: no list (DCM2)
    rewards: RewardList | None = None

    def encode(self) -> bytes:
        tag = COMMIT_TAG if self.rewards is None else REWARD_COMMIT_TAG
        w = Writer(tag).u64(self.version).u64(self.parent_version)
        w.fixed(self.model_hash, HASH_BYTES).count(len(self.updates))
        for digest, weight in self.updates:
            w.fixed(digest, HASH_BYTES).fixed(np.float32(weight).tobytes(), 4)
        w.count(len(self.discarded))
        for digest, reason in self.discarded:
            w.fixed(digest, HASH_BYTES).text(reason)
        if self.rewards is not None:
            w.count(len(self.rewards))
            for client, amount in self.rewards:
                w.fixed(client, ID_BYTES).u64(amount)
        return w.bytes()

    @property
    def digests(self) -> list[bytes]:
        """Every update the commit names: aggregated or discarded."""
        return [d for d, _ in self.updates] + [d for d, _ in self.discarded]

    @classmethod
    def decode(cls, data: bytes) -> ModelCommit:
        rewarded = bytes(data[:4]) == REWARD_COMMIT_TAG
        r = Reader(data, REWARD_COMMIT_TAG if rewarded else COMMIT_TAG, "model commit")
        version, parent = r.u64("version"), r.u64("parent_version")
        model_hash = r.fixed(HASH_BYTES, "model_hash")
        n = r.count("updates", MAX_COMMIT_UPDATES)
        updates = tuple(
            (r.fixed(HASH_BYTES, "update"),
             float(np.frombuffer(r.fixed(4, "weight"), dtype=np.float32)[0]))
            for _ in range(n))
        discarded = tuple((r.fixed(HASH_BYTES, "discarded"), r.text("reason", 32))
                          for _ in range(r.count("discarded", MAX_COMMIT_UPDATES)))
        rewards = (tuple((r.fixed(ID_BYTES, "reward client"), r.u64("reward amount"))
                         for _ in range(r.count("rewards", MAX_COMMIT_UPDATES)))
                   if rewarded else None)
        r.finish()
        if any(reason not in REASONS for _, reason in discarded):
            raise DecodeError("model commit: unknown discard reason")
        return cls(version, parent, model_hash, updates, discarded, rewards)


@dataclass(frozen=True)
class FlRules:
    """The aggregation rules every committee member applies (from the genesis ``fl`` section)."""

    chain_id: str
    algorithm: Algorithm
    mode: str
    rule: StalenessRule
    mixing: float
    max_update_norm: float
    aggregator: str = ""  # a user's rule (genesis fl.aggregator), "" for ``mode``'s
    aggregator_rule: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    defense: Defense = field(default_factory=Defense)
    aggregation: str = "staleness"  # or "fair": seed 002 eq. II.4 (``learning.fair``)
    reward_base: int = 0  # micro-units each version pays by its reward list; 0: no rewards
    reward_weight: str = "theta"  # how the list weighs an update (learning.incentive)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.aggregation not in AGGREGATION_KINDS:
            raise ValueError(f"aggregation {self.aggregation!r} is not one of "
                             f"{', '.join(AGGREGATION_KINDS)}")

    @property
    def needs_theta(self) -> bool:
        return self.reward_base > 0 or self.aggregation == "fair"


def defense_from(params) -> Defense:
    """The detectors a genesis ``defense`` section (``genesis_defense.DefenseParams``) names."""
    if params is None:
        return Defense()
    watermark = (WatermarkParams(params.watermark_length, params.watermark_snr_db,
                                 params.watermark_threshold) if params.watermark_length else None)
    return Defense(
        rule=params.rule, watermark=watermark, watermark_window=params.watermark_window,
        cluster=ClusterParams(params.cluster_metric, params.cluster_eps,
                              params.cluster_min_samples, "discard", params.cluster_anchor,
                              params.cluster_max_norm_ratio),
        robust=RobustRule("median", beta=params.trim_beta, f=params.krum_f,
                          m=params.krum_m or None))


def fl_rules(genesis: EngineGenesis) -> FlRules:
    """The rules of a genesis's ``fl`` section (which it must have)."""
    parsed = Genesis.of(genesis)
    fl = parsed.fl
    if fl is None:
        raise GenesisError("fl: missing (this chain carries no model versions)")
    return FlRules(
        chain_id=genesis.chain_id, algorithm=genesis.algorithm, mode=fl.mode,
        rule=StalenessRule(fl.staleness_rule, fl.staleness_a, fl.staleness_b, fl.max_staleness),
        mixing=fl.mixing, max_update_norm=fl.max_update_norm, aggregator=fl.aggregator,
        aggregator_rule=_aggregator(fl.aggregator), defense=defense_from(parsed.defense),
        aggregation=fl.aggregation, reward_base=fl.reward_base, reward_weight=fl.reward_weight,
    )


def _aggregator(spec: str) -> Callable[..., Any] | None:
    """The genesis's aggregation plug-in, loaded (and tried once) by every process that
    aggregates or re-executes: the committee's replicas and the server nodes."""
    if not spec:
        return None
    try:
        return load_aggregator(spec)
    except PluginError as exc:
        raise GenesisError(f"fl.aggregator: {exc}") from None


def check_update_signature(update: SignedUpdate, rules: FlRules,
                           verifier: SignatureVerifier) -> None:
    if update.chain_id != rules.chain_id:
        raise ValidationError(f"update is for chain {update.chain_id!r}", code="wrong_chain")
    if len(update.public_key) != rules.algorithm.public_key_bytes:
        raise ValidationError("update key has the wrong length", code="bad_key")
    if identity_id(update.public_key) != update.client:
        raise ValidationError("client id is not SHA-256 of the update's key", code="bad_key")
    if not verifier.verify(rules.algorithm, update.public_key, Domain.MODEL_UPDATE,
                           update.signing_bytes, update.signature):
        raise ValidationError("update signature does not verify", code="bad_signature")


def decode_delta(update: SignedUpdate, size: int, max_norm: float) -> np.ndarray:
    """The update's delta, checked for shape, finiteness and norm."""
    try:
        decoded = decode_params(update.params)
    except CodecError as exc:
        raise ValidationError(f"update parameters: {exc}", code="bad_params") from exc
    try:
        check_update(decoded.flat, size, max_norm)
    except UpdateRejected as exc:
        raise ValidationError(exc.reason, code=exc.code) from exc
    return decoded.flat


def aggregate(rules: FlRules, base: np.ndarray, updates: list[tuple[SignedUpdate, np.ndarray]],
              current_version: int, theta: Mapping[bytes, float] | None = None):
    """The chain's rule on ``updates``; the fair rule weighs each by ``theta`` (by update
    digest; computed here over ``updates`` when not given)."""
    inputs = [Update(u.client, u.base_version, u.samples, delta) for u, delta in updates]
    if rules.aggregator_rule is not None:
        return plugin_aggregate(rules.aggregator, rules.aggregator_rule, base, inputs,
                                current_version)
    if rules.aggregation == "fair":
        if theta is None:
            theta = pool_theta(_keyed(updates), rules.defense.cluster)
        digest_of = {id(i): u.digest for i, (u, _) in zip(inputs, updates, strict=True)}
        ordered = canonical_order(inputs, base.size)
        return aggregate_fair(base, ordered, current_version,
                              [theta.get(digest_of[id(i)], 0.0) for i in ordered],
                              rule=rules.rule if rules.mode == "fedasync" else None,
                              mixing=rules.mixing)
    if rules.mode == "fedavg":
        return fedavg(base, inputs, current_version)
    return aggregate_async(base, inputs, current_version, rules.rule, rules.mixing)


def _keyed(updates: list[tuple[SignedUpdate, np.ndarray]]) -> list[Update]:
    """The updates under their digests (``learning.incentive``: one client's two stay apart)."""
    return [Update(u.digest, u.base_version, u.samples, d) for u, d in updates]


@dataclass(frozen=True, eq=False)
class PoolOutcome:
    params: np.ndarray
    updates: tuple[tuple[bytes, float], ...]  # (digest, weight) of what was aggregated
    discarded: tuple[tuple[bytes, str], ...]  # (digest, reason), digest order
    rewards: RewardList | None = None  # the version's reward list, rewards on


def aggregate_pool(rules: FlRules, base: np.ndarray,
                   updates: list[tuple[SignedUpdate, np.ndarray]],
                   current_version: int) -> PoolOutcome:
    """The genesis's defense on the updates the rule admits (``learning.screening``), then the
    aggregate of what it kept: what the aggregator commits and every replica re-executes."""
    def admitted(u: SignedUpdate) -> bool:
        s = current_version - u.base_version
        return s == 0 if rules.mode == "fedavg" else 0 <= s <= rules.rule.max_staleness

    discarded: tuple[tuple[bytes, str], ...] = ()
    robust = None
    weight = 0.0
    if rules.defense.active:
        pool = [Candidate(u.digest, seed_for_key(u.public_key),
                          Update(u.client, u.base_version, u.samples, d))
                for u, d in updates if admitted(u)]
        screening = screen(pool, rules.defense, base)
        discarded, robust, weight = (screening.discarded, screening.params,
                                     screening.selected_weight)
    out = {d for d, _ in discarded}
    kept = [(u, d) for u, d in updates if u.digest not in out]
    theta, rewards = (pool_incentives(_keyed([(u, d) for u, d in updates if admitted(u)]),
                                      {u.digest: u.client for u, _ in updates}, discarded,
                                      rules.defense.cluster, rules.reward_base,
                                      rules.reward_weight)
                      if rules.needs_theta else (None, None))
    if robust is not None:
        return PoolOutcome(robust, tuple((u.digest, weight if admitted(u) else 0.0)
                                         for u, _ in kept), discarded, rewards)
    if not kept:
        return PoolOutcome(base.copy(), (), discarded, rewards)
    result = aggregate(rules, base, kept, current_version, theta)
    weights = dict(result.weights)
    return PoolOutcome(result.params, tuple((u.digest, weights.get(u.client, 0.0))
                                            for u, _ in kept), discarded, rewards)


def discard_verdict(want: tuple[tuple[bytes, str], ...],
                    claimed: tuple[tuple[bytes, str], ...]) -> str | None:
    """None when the commit's discard set is the defense's; else what differs, in one line."""
    if tuple(sorted(claimed)) == want:
        return None
    mine, theirs = dict(want), dict(claimed)
    kept = [d.hex()[:16] for d in mine if d not in theirs]
    wrong = [d.hex()[:16] for d in theirs if d not in mine]
    reason = [d.hex()[:16] for d in mine if d in theirs and mine[d] != theirs[d]]
    return (f"the discard set does not reproduce: flagged but kept {kept or 'none'}, "
            f"discarded without cause {wrong or 'none'}, other reason {reason or 'none'}")


class ModelCommitChecker:
    """Re-executes model commits against the blob store; remembers the last verdicts."""

    def __init__(self, rules: FlRules, blobs: BlobStore, verifier: SignatureVerifier) -> None:
        self.rules = rules
        self.blobs = blobs
        self.verifier = verifier
        # commit key -> (the verdict, None if it holds; the client of each named update)
        self._verdicts: OrderedDict[bytes, tuple[str | None, dict[bytes, bytes]]] = OrderedDict()

    def _blob(self, h: bytes) -> bytes:
        try:
            return self.blobs.get(h)
        except NotFoundError as exc:
            raise MissingBlobError(f"blob {h.hex()[:16]} is not here yet") from exc

    def check(self, commit: ModelCommit, parent_hash: bytes,
              latest_version: int) -> dict[bytes, tuple[bytes, int]]:
        """Raises ValidationError unless ``commit`` is exactly the aggregate it claims; returns
        (client, base version) of each update it names, by digest."""
        if commit.version != latest_version + 1 or commit.parent_version != latest_version:
            raise ValidationError(
                f"commit of version {commit.version} on {commit.parent_version}; the chain is at "
                f"version {latest_version}", code="stale_version")
        key = hashlib.sha256(commit.encode() + parent_hash).digest()
        if key in self._verdicts:
            verdict, clients = self._verdicts[key]
            if verdict is not None:
                raise ValidationError(verdict, code="model_mismatch")
            return clients
        try:
            base = decode_params(self._blob(parent_hash))
        except CodecError as exc:
            raise ValidationError(f"parent model: {exc}", code="bad_params") from exc
        if not commit.updates and not commit.discarded:
            raise ValidationError("a commit needs at least one update", code="empty_commit")
        if len(set(commit.digests)) != len(commit.digests):
            raise ValidationError("a commit names an update twice", code="bad_update")
        updates: list[tuple[SignedUpdate, np.ndarray]] = []
        for digest in commit.digests:
            try:
                update = SignedUpdate.decode(self._blob(digest))
            except DecodeError as exc:
                raise ValidationError(f"update {digest.hex()[:16]}: {exc.reason}",
                                      code="bad_update") from exc
            check_update_signature(update, self.rules, self.verifier)
            if update.base_version > latest_version:
                raise ValidationError("update trained on a future version", code="bad_update")
            updates.append((update, decode_delta(update, base.flat.size,
                                                 self.rules.max_update_norm)))
        try:
            result = aggregate_pool(self.rules, base.flat, updates, latest_version)
        except ValueError as exc:
            raise ValidationError(f"aggregation failed: {exc}", code="bad_update") from exc
        blob = encode_params(result.params, base.shapes)
        model_hash = hashlib.sha256(blob).digest()
        verdict = (discard_verdict(result.discarded, commit.discarded)
                   or reward_verdict(self.rules.reward_base, result.rewards, commit.rewards))
        if verdict is None and model_hash == commit.model_hash:
            self.blobs.put(blob)  # every replica then holds the model it verified
        if verdict is None and model_hash != commit.model_hash:
            verdict = (f"version {commit.version}: the aggregate of the referenced updates hashes "
                       f"to {model_hash.hex()[:16]}, the commit claims "
                       f"{commit.model_hash.hex()[:16]}")
        clients = {u.digest: (u.client, u.base_version) for u, _ in updates}
        self._verdicts[key] = (verdict, clients)
        while len(self._verdicts) > 64:
            self._verdicts.popitem(last=False)
        if verdict is not None:
            raise ValidationError(verdict, code="model_mismatch")
        return clients
