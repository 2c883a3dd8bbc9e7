//! The host imports (`hawser:plugin/host`): logging, the wall clock and signature
//! verification. Compiled natively (for unit tests), logging goes to stderr and
//! verification runs in-process with the same rules as the host.

pub use crate::bindings::hawser::plugin::host::{LogLevel, PublicKey, RsaPublicKey, Timestamp};

/// Writes one line to the host log, tagged with the stage name. The host keeps at most
/// 32 lines per call and truncates each to 1024 bytes.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::hawser::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    std::eprintln!("[{level:?}] {message}");
}

/// Logs at `info`.
pub fn info(message: &str) {
    log(LogLevel::Info, message)
}

/// Logs at `warn`.
pub fn warn(message: &str) {
    log(LogLevel::Warn, message)
}

/// Logs at `error`.
pub fn error(message: &str) {
    log(LogLevel::Error, message)
}

/// Current wall-clock time.
pub fn now() -> Timestamp {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::hawser::plugin::host::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            seconds: d.as_secs(),
            nanoseconds: d.subsec_nanos(),
        }
    }
}

/// Verifies `signature` over `message` with `key` (Ed25519, ES256, RS256 or PS256).
/// False for a bad signature and for a malformed key or signature. In the host, a
/// check that passed before is answered from memory (a hash of the three instead of
/// the public-key arithmetic), so verifying every request's token is cheap; natively
/// (unit tests) it always verifies.
pub fn verify_signature(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::hawser::plugin::host::verify_signature(key, message, signature)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use ring::signature as sig;
        match key {
            PublicKey::Ed25519(k) => sig::UnparsedPublicKey::new(&sig::ED25519, k)
                .verify(message, signature)
                .is_ok(),
            PublicKey::Es256(k) => sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, k)
                .verify(message, signature)
                .is_ok(),
            PublicKey::Rs256(k) => sig::RsaPublicKeyComponents {
                n: &k.modulus,
                e: &k.exponent,
            }
            .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
            .is_ok(),
            PublicKey::Ps256(k) => sig::RsaPublicKeyComponents {
                n: &k.modulus,
                e: &k.exponent,
            }
            .verify(&sig::RSA_PSS_2048_8192_SHA256, message, signature)
            .is_ok(),
        }
    }
}
