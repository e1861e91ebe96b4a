"""Identities, public identity JSON, key files and parameter-set names."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from dualchain.chain.errors import KeyFileError
from dualchain.chain.identity import (
    ID_BYTES,
    PublicIdentity,
    Signer,
    identity_id,
    load_key_file,
    load_public_file,
    write_public_file,
)
from dualchain.chain.mldsa import DEFAULT_ALGORITHM, Algorithm

KEY_FORMAT = "dualchain-mldsa-seed/1"
SEED = hashlib.sha256(b"identity test seed").digest()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(SEED, Algorithm.ML_DSA_44)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Algorithm), ids=lambda a: a.label)
def test_id_is_sha256_of_public_key(algorithm: Algorithm) -> None:
    signer = Signer(SEED, algorithm)
    assert signer.id == hashlib.sha256(signer.public_key).digest()
    assert len(signer.id) == ID_BYTES
    assert signer.public.id == signer.id == identity_id(signer.public_key)
    assert signer.public == PublicIdentity(algorithm, signer.public_key)


def test_default_algorithm_and_determinism() -> None:
    a, b = Signer(SEED), Signer(SEED)
    assert a.algorithm is DEFAULT_ALGORITHM
    assert a.id == b.id
    assert Signer.generate(Algorithm.ML_DSA_44).id != Signer.generate(Algorithm.ML_DSA_44).id


def test_signer_rejects_bad_seed_length() -> None:
    with pytest.raises(KeyFileError):
        Signer(bytes(31))


def test_public_identity_rejects_wrong_key_length(signer: Signer) -> None:
    with pytest.raises(ValueError):
        PublicIdentity(Algorithm.ML_DSA_65, signer.public_key)


# --- key files ----------------------------------------------------------------------------------


def test_save_creates_mode_0600(signer: Signer, tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    old = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        signer.save(path)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert SEED.hex() in path.read_text()


def test_load_key_file_round_trip(signer: Signer, tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    signer.save(path)
    loaded = load_key_file(path)
    assert loaded.id == signer.id
    assert loaded.algorithm is signer.algorithm
    assert loaded.public_key == signer.public_key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_load_refuses_readable_by_others(signer: Signer, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    signer.save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        load_key_file(path)
    assert f"{mode:04o}" in info.value.reason
    assert info.value.code == "key_file"


def test_save_refuses_to_overwrite(signer: Signer, tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    signer.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="exists"):
        Signer(hashlib.sha256(b"another").digest(), Algorithm.ML_DSA_44).save(path)
    assert path.read_bytes() == before


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key_file(tmp_path / "absent.key")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"format": "something-else", "algorithm": "ML-DSA-44", "seed": "00" * 32}),
        json.dumps({"format": KEY_FORMAT, "algorithm": "ML-DSA-44"}),
        json.dumps({"format": KEY_FORMAT, "algorithm": "ML-DSA-5", "seed": "00" * 32}),
        json.dumps({"format": KEY_FORMAT, "algorithm": "ML-DSA-44", "seed": "zz"}),
        json.dumps({"format": KEY_FORMAT, "algorithm": "ML-DSA-44", "seed": "00"}),
    ],
    ids=["not-json", "not-object", "format", "no-seed", "algorithm", "seed-hex", "seed-length"],
)
def test_load_malformed_file(tmp_path: Path, body: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(body)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_key_file(path)


# --- public identities --------------------------------------------------------------------------


def test_public_identity_json_round_trip(signer: Signer) -> None:
    data = json.loads(json.dumps(signer.public.to_json()))
    assert data["id"] == signer.id.hex()
    assert data["algorithm"] == "ML-DSA-44"
    restored = PublicIdentity.from_json(data)
    assert restored == signer.public
    assert restored.id == signer.id
    del data["id"]  # the id is optional; it is recomputed
    assert PublicIdentity.from_json(data) == signer.public


def test_public_identity_rejects_mismatched_id(signer: Signer) -> None:
    data = signer.public.to_json()
    data["id"] = hashlib.sha256(b"someone else").hexdigest()
    with pytest.raises(KeyFileError, match="id"):
        PublicIdentity.from_json(data)


@pytest.mark.parametrize("field", ["format", "algorithm", "public_key"])
def test_public_identity_rejects_bad_fields(signer: Signer, field: str) -> None:
    data = signer.public.to_json()
    data[field] = "ML-DSA-5" if field == "algorithm" else "bogus"
    with pytest.raises(KeyFileError):
        PublicIdentity.from_json(data)


def test_public_file_round_trip(signer: Signer, tmp_path: Path) -> None:
    path = tmp_path / "node.pub"
    write_public_file(path, signer.public)
    assert load_public_file(path) == signer.public
    path.write_text("[1, 2]")
    with pytest.raises(KeyFileError):
        load_public_file(path)
    with pytest.raises(KeyFileError):
        load_public_file(tmp_path / "absent.pub")


# --- parameter-set names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ML-DSA-65", Algorithm.ML_DSA_65),
        ("ml-dsa-65", Algorithm.ML_DSA_65),
        ("mldsa44", Algorithm.ML_DSA_44),
        ("87", Algorithm.ML_DSA_87),
    ],
)
def test_algorithm_parse_accepts(name: str, expected: Algorithm) -> None:
    assert Algorithm.parse(name) is expected


@pytest.mark.parametrize("name", ["ML-DSA-5", "ML-DSA-66", "", "mldsa", "ML-DSA-655"])
def test_algorithm_parse_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="unknown ML-DSA parameter set"):
        Algorithm.parse(name)


def test_algorithm_sizes() -> None:
    sizes = {a.label: (a.public_key_bytes, a.signature_bytes) for a in Algorithm}
    assert sizes == {
        "ML-DSA-44": (1312, 2420),
        "ML-DSA-65": (1952, 3309),
        "ML-DSA-87": (2592, 4627),
    }
