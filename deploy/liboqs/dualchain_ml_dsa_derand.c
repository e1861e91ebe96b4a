// SPDX-License-Identifier: Apache-2.0
//
// Seeded ML-DSA key generation for liboqs releases without it.
//
// dualchain keeps every private key as its 32-byte FIPS 204 seed (xi) and derives the key pair
// from it (ML-DSA.KeyGen_internal). Its liboqs backend (dualchain/chain/mldsa.py) looks up
// OQS_SIG_ml_dsa_{44,65,87}_keypair_derand in liboqs.so; released liboqs has no such symbol
// yet (open-quantum-safe/liboqs#2475 asks for it), so deploy/Dockerfile compiles this file into
// the library. It uses only liboqs's public API: ML-DSA.KeyGen draws xi as one 32-byte
// OQS_randombytes call and derives everything else from it, so answering that one call of the
// calling thread with the seed yields the key pair of the seed. Every other call, and every call
// from another thread, gets the system's randomness. Whether the release at hand really draws
// xi that way is checked when the image is built (deploy/check_liboqs.py compares the public
// keys with pyca/cryptography's for random seeds); a release that drew differently fails the
// build instead of producing keys that do not match their seeds.

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>

#include <oqs/oqs.h>

#define DUALCHAIN_SEED_BYTES 32

typedef OQS_STATUS (*dualchain_keypair_fn)(uint8_t *public_key, uint8_t *secret_key);

static _Thread_local const uint8_t *dualchain_seed;  // the seed this thread's next draw returns
static pthread_mutex_t dualchain_lock = PTHREAD_MUTEX_INITIALIZER;

static void dualchain_system_random(uint8_t *out, size_t bytes) {
    while (bytes > 0) {
        ssize_t got = getrandom(out, bytes, 0);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            abort();  // no randomness: nothing safe to return
        }
        out += got;
        bytes -= (size_t)got;
    }
}

static void dualchain_randombytes(uint8_t *out, size_t bytes) {
    const uint8_t *seed = dualchain_seed;
    if (seed != NULL && bytes == DUALCHAIN_SEED_BYTES) {
        dualchain_seed = NULL;  // the seed answers one draw, of this thread only
        memcpy(out, seed, DUALCHAIN_SEED_BYTES);
        return;
    }
    dualchain_system_random(out, bytes);
}

static OQS_STATUS dualchain_keypair_from_seed(dualchain_keypair_fn keypair, uint8_t *public_key,
                                              uint8_t *secret_key, const uint8_t *seed) {
    if (public_key == NULL || secret_key == NULL || seed == NULL) {
        return OQS_ERROR;
    }
    pthread_mutex_lock(&dualchain_lock);
    // Installed each time: someone may have switched the algorithm since (it stays installed;
    // for every caller but a deriving thread it is the system's randomness).
    OQS_randombytes_custom_algorithm(dualchain_randombytes);
    dualchain_seed = seed;
    OQS_STATUS status = keypair(public_key, secret_key);
    if (dualchain_seed != NULL) {
        status = OQS_ERROR;  // the seed was never drawn: this key pair is not the seed's
    }
    dualchain_seed = NULL;
    pthread_mutex_unlock(&dualchain_lock);
    return status;
}

#if defined(OQS_ENABLE_SIG_ml_dsa_44)
OQS_API OQS_STATUS OQS_SIG_ml_dsa_44_keypair_derand(uint8_t *public_key, uint8_t *secret_key,
                                                    const uint8_t *seed) {
    return dualchain_keypair_from_seed(OQS_SIG_ml_dsa_44_keypair, public_key, secret_key, seed);
}
#endif

#if defined(OQS_ENABLE_SIG_ml_dsa_65)
OQS_API OQS_STATUS OQS_SIG_ml_dsa_65_keypair_derand(uint8_t *public_key, uint8_t *secret_key,
                                                    const uint8_t *seed) {
    return dualchain_keypair_from_seed(OQS_SIG_ml_dsa_65_keypair, public_key, secret_key, seed);
}
#endif

#if defined(OQS_ENABLE_SIG_ml_dsa_87)
OQS_API OQS_STATUS OQS_SIG_ml_dsa_87_keypair_derand(uint8_t *public_key, uint8_t *secret_key,
                                                    const uint8_t *seed) {
    return dualchain_keypair_from_seed(OQS_SIG_ml_dsa_87_keypair, public_key, secret_key, seed);
}
#endif
