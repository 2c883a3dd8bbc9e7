//! Signature checks for plugins (`host.verify-signature`), remembering the ones that
//! passed.
//!
//! A credential stage verifies the token of every request, and clients send one token
//! many times (kubectl keeps an exec credential until it expires), so the same key,
//! message and signature come back again and again, at the hub and again at the agent.
//! Whether a signature is valid depends on those three alone, so a check that passed
//! once passes every time: the process remembers the SHA-256 of each passing triple
//! and answers a repeat with that hash instead of the public-key arithmetic (an Ed25519
//! check costs tens of microseconds, hashing a token about one).
//!
//! Only passes are remembered. A failed check is done again each time, so a flood of
//! bad signatures cannot push good ones out. What a plugin could learn from the cache
//! (by timing its own calls) is whether a triple it already holds passed lately; the
//! answer itself is the same either way. The memory is bounded: two generations of at
//! most [`CAPACITY`] / 2 digests; when the newer fills up, the older is dropped, and a
//! hit in the older one moves the digest to the newer, so tokens in use stay.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ring::digest::{Context, SHA256};

use super::bindings::host::{PublicKey, RsaPublicKey};

/// Passing checks remembered at most: 4096 digests of 32 bytes, with the sets'
/// overhead well under a megabyte.
pub(crate) const CAPACITY: usize = 4096;

type Digest = [u8; 32];

/// The checks of one process, shared by every stage and instance.
#[derive(Default)]
pub(crate) struct SignatureChecks {
    passed: Mutex<Generations>,
    counts: Counts,
}

#[derive(Default)]
struct Generations {
    newer: HashSet<Digest>,
    older: HashSet<Digest>,
}

#[derive(Default)]
struct Counts {
    remembered: AtomicU64,
    verified: AtomicU64,
    failed: AtomicU64,
}

/// How the checks so far went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureCounts {
    /// Passed, answered from a check that passed before.
    pub remembered: u64,
    /// Passed, verified now.
    pub verified: u64,
    /// Failed (bad signature, or malformed key or signature).
    pub failed: u64,
}

impl SignatureChecks {
    /// Whether `signature` over `message` verifies with `key`.
    pub(crate) fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
        let digest = digest(key, message, signature);
        if self.lock().remembers(&digest) {
            self.counts.remembered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if verify(key, message, signature) {
            self.lock().insert(digest);
            self.counts.verified.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The counts so far.
    pub(crate) fn counts(&self) -> SignatureCounts {
        let c = &self.counts;
        SignatureCounts {
            remembered: c.remembered.load(Ordering::Relaxed),
            verified: c.verified.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // The sets hold plain digests; one left half-updated by a panic is still sound.
        self.passed.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.newer.len() + g.older.len()
    }
}

impl Generations {
    /// Whether `d` passed before; a hit in the older generation moves to the newer.
    fn remembers(&mut self, d: &Digest) -> bool {
        if self.newer.contains(d) {
            return true;
        }
        if self.older.remove(d) {
            self.insert(*d);
            return true;
        }
        false
    }

    fn insert(&mut self, d: Digest) {
        if self.newer.len() >= CAPACITY / 2 {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(d);
    }
}

/// SHA-256 over the scheme, the key, the message and the signature, each
/// length-prefixed so no two different triples hash the same input.
fn digest(key: &PublicKey, message: &[u8], signature: &[u8]) -> Digest {
    let mut h = Context::new(&SHA256);
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    match key {
        PublicKey::Ed25519(k) => {
            part(b"ed25519");
            part(k);
        }
        PublicKey::Es256(k) => {
            part(b"es256");
            part(k);
        }
        PublicKey::Rs256(k) => {
            part(b"rs256");
            part(&k.modulus);
            part(&k.exponent);
        }
        PublicKey::Ps256(k) => {
            part(b"ps256");
            part(&k.modulus);
            part(&k.exponent);
        }
    }
    part(message);
    part(signature);
    let mut out = [0u8; 32];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// Checks `signature` over `message` with `key`; false for a malformed key or signature.
fn verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    use ring::signature as sig;
    let rsa = |k: &RsaPublicKey, scheme: &sig::RsaParameters| {
        sig::RsaPublicKeyComponents {
            n: &k.modulus,
            e: &k.exponent,
        }
        .verify(scheme, message, signature)
        .is_ok()
    };
    match key {
        PublicKey::Ed25519(k) => sig::UnparsedPublicKey::new(&sig::ED25519, k)
            .verify(message, signature)
            .is_ok(),
        PublicKey::Es256(k) => sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, k)
            .verify(message, signature)
            .is_ok(),
        PublicKey::Rs256(k) => rsa(k, &sig::RSA_PKCS1_2048_8192_SHA256),
        PublicKey::Ps256(k) => rsa(k, &sig::RSA_PSS_2048_8192_SHA256),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key_pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn public(k: &Ed25519KeyPair) -> PublicKey {
        PublicKey::Ed25519(k.public_key().as_ref().to_vec())
    }

    #[test]
    fn a_passing_check_is_remembered_and_a_failing_one_never() {
        let checks = SignatureChecks::default();
        let k = key_pair();
        let sig = k.sign(b"token").as_ref().to_vec();
        assert!(checks.verify(&public(&k), b"token", &sig));
        assert!(checks.verify(&public(&k), b"token", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!checks.verify(&public(&k), b"token", &bad));
        assert!(!checks.verify(&public(&k), b"token", &bad));
        // Another message, key or scheme with the same signature is not a hit.
        assert!(!checks.verify(&public(&k), b"tokeN", &sig));
        assert!(!checks.verify(&public(&key_pair()), b"token", &sig));
        let k_bytes = k.public_key().as_ref().to_vec();
        assert!(!checks.verify(&PublicKey::Es256(k_bytes), b"token", &sig));
        assert_eq!(
            checks.counts(),
            SignatureCounts {
                remembered: 1,
                verified: 1,
                failed: 5
            }
        );
        assert_eq!(checks.len(), 1);
    }

    #[test]
    fn memory_is_bounded_and_digests_in_use_stay() {
        let checks = SignatureChecks::default();
        let k = key_pair();
        let signed = |i: usize| {
            let m = format!("token-{i}").into_bytes();
            let s = k.sign(&m).as_ref().to_vec();
            (m, s)
        };
        let (m0, s0) = signed(0);
        assert!(checks.verify(&public(&k), &m0, &s0));
        for i in 1..2 * CAPACITY {
            let (m, s) = signed(i);
            assert!(checks.verify(&public(&k), &m, &s));
            // Token 0 stays in use throughout.
            if i % 1000 == 0 {
                assert!(checks.verify(&public(&k), &m0, &s0));
            }
            assert!(checks.len() <= CAPACITY);
        }
        let before = checks.counts();
        assert!(checks.verify(&public(&k), &m0, &s0));
        assert_eq!(checks.counts().remembered, before.remembered + 1);
        // Token 1, unused since, was dropped and is verified again.
        let (m1, s1) = signed(1);
        assert!(checks.verify(&public(&k), &m1, &s1));
        assert_eq!(checks.counts().verified, before.verified + 1);
    }
}
