"""An aggregation plug-in named by the genesis (fl.aggregator) is what every committee member
re-executes: a commit of the plug-in's aggregate is accepted, one of the built-in rule's is not."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dualchain.apps.ctbc.fl import (
    ModelCommit,
    ModelCommitChecker,
    SignedUpdate,
    aggregate,
    decode_delta,
    fl_rules,
)
from dualchain.apps.genesis import FlParams, GenesisError
from dualchain.chain.blobs import BlobStore
from dualchain.chain.errors import ValidationError
from dualchain.chain.verifier import SignatureVerifier
from dualchain.learning.codec import decode_params, encode_params
from tests.unit.apps.ctbc.test_fl import SHAPES, setup  # noqa: F401 (a fixture)

RULE = "import numpy as np\ndef triple(g, updates, v):\n    return g + 3 * updates[0].delta\n"


@pytest.fixture
def plugin_genesis(setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    (tmp_path / "committee_rule.py").write_text(RULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    genesis, blobs, base_blob, commit, _ = setup
    return replace(genesis, fl=replace(genesis.fl, aggregator="committee_rule:triple")), \
        blobs, base_blob, commit


def _commit_of(params: np.ndarray, commit: ModelCommit) -> ModelCommit:
    return replace(commit, model_hash=hashlib.sha256(encode_params(params, SHAPES)).digest())


def test_the_committee_re_executes_the_genesis_aggregation_plugin(
        plugin_genesis, verifier: SignatureVerifier) -> None:
    genesis, blobs, base_blob, builtin_commit = plugin_genesis
    rules = fl_rules(genesis)
    parent = hashlib.sha256(base_blob).digest()
    # What the aggregating node computes (node.pool uses the same ``aggregate``).
    base = decode_params(base_blob).flat
    updates = list(_updates(blobs, builtin_commit))
    ours = aggregate(rules, base, updates, 0).params
    first = min(updates, key=lambda p: (p[0].client, p[0].base_version))[1]
    assert np.array_equal(ours, base + 3 * first)
    with pytest.raises(ValidationError) as refused:  # the built-in rule's model: not ours
        ModelCommitChecker(rules, blobs, verifier).check(builtin_commit, parent, 0)
    assert refused.value.code == "model_mismatch"
    ModelCommitChecker(rules, blobs, verifier).check(_commit_of(ours, builtin_commit), parent, 0)


def test_a_genesis_naming_an_unusable_aggregator_is_a_genesis_error(setup) -> None:  # noqa: F811
    genesis = setup[0]
    with pytest.raises(GenesisError, match=r"fl\.aggregator: aggregator 'no_such_mod:rule': "
                                           r"cannot import no_such_mod"):
        fl_rules(replace(genesis, fl=replace(genesis.fl, aggregator="no_such_mod:rule")))
    with pytest.raises(GenesisError, match=r"fl\.model: must be empty or an import path"):
        replace(genesis, fl=FlParams(model_hash="00" * 32, model="not a path"))


def _updates(blobs: BlobStore, commit: ModelCommit):
    for digest, _ in commit.updates:
        update = SignedUpdate.decode(blobs.get(digest))
        yield update, decode_delta(update, 10, 10.0)
