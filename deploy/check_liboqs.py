"""Build-time check of the image's liboqs backend (deploy/Dockerfile runs it with WITH_LIBOQS=1).

For each ML-DSA parameter set and a few random seeds: the key pair liboqs derives from the seed
(the derand symbols of deploy/liboqs/dualchain_ml_dsa_derand.c) has the public key that
pyca/cryptography derives from the same seed, and signatures made by either backend verify with
the other. Exits non-zero (failing the image build) otherwise, so an image never runs a liboqs
that would give a node a different identity than its key file names.
"""

from __future__ import annotations

import os
import sys

from dualchain.chain.mldsa import Algorithm, available_backends, get_backend


def main() -> int:
    problem = available_backends().get("liboqs")
    if problem is not None:
        print(f"liboqs backend unavailable: {problem}", file=sys.stderr)
        return 1
    oqs, reference = get_backend("liboqs"), get_backend("cryptography")
    message, context = b"dualchain image check", b"dualchain/v1/check"
    for algorithm in Algorithm:
        for _ in range(4):
            seed = os.urandom(32)
            ours = oqs.private_key_from_seed(algorithm, seed)
            theirs = reference.private_key_from_seed(algorithm, seed)
            if ours.public_key != theirs.public_key:
                print(f"{algorithm.label}: liboqs derives another key pair from the seed",
                      file=sys.stderr)
                return 1
            pair = ((ours, reference), (theirs, oqs))
            for signer, verifier in pair:
                signature = signer.sign(message, context)
                if not verifier.verify(algorithm, theirs.public_key, signature, message,
                                       context):
                    print(f"{algorithm.label}: a signature does not verify across backends",
                          file=sys.stderr)
                    return 1
        print(f"{algorithm.label}: liboqs keys match their seeds; signatures interoperate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
