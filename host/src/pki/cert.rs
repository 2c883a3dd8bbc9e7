//! What the hub and agents read out of certificates and keys: fingerprints (the
//! identity the registry admits), the cluster a certificate was issued for, and a
//! private-key wrapper that keeps keys out of logs.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::{invalid_name, PkiError, CLUSTER_URI_PREFIX};
use crate::registry::validate_cluster_name;

/// A PEM-encoded private key. `Debug` never prints it.
pub struct SecretPem(String);

impl SecretPem {
    /// Wraps a PEM private key.
    pub fn new(pem: String) -> SecretPem {
        SecretPem(pem)
    }
    /// The PEM text, for writing it to its (0600) destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

/// SHA-256 of a DER certificate; the identity the registry admits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

const FP_PREFIX: &str = "sha256:";

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FP_PREFIX)?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Fingerprint, PkiError> {
        let bad = |reason| PkiError::BadFingerprint {
            input: s.to_string(),
            reason,
        };
        let hex = s
            .strip_prefix(FP_PREFIX)
            .ok_or_else(|| bad("expected the prefix \"sha256:\""))?;
        if hex.len() != 64 {
            return Err(bad("expected 64 hex digits after \"sha256:\""));
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| bad("not hex"))?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| bad("not hex"))?;
        }
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The fingerprint of a DER-encoded certificate.
pub fn fingerprint_of_der(der: &[u8]) -> Fingerprint {
    Fingerprint(Sha256::digest(der).into())
}

/// The cluster a certificate was issued for: the name in its
/// `hawser://cluster/<name>` URI SAN (an error if there is none, or several).
pub fn cluster_of_cert(der: &[u8]) -> Result<String, PkiError> {
    let bad = |reason: String| PkiError::BadCert {
        origin: "peer certificate".into(),
        reason,
    };
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(e.to_string()))?;
    let sans = x509
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<String> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|gn| match gn {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(CLUSTER_URI_PREFIX),
            _ => None,
        })
        .map(str::to_string)
        .collect();
    match names.len() {
        0 => Err(PkiError::NoClusterUri),
        1 => {
            let name = names.remove(0);
            validate_cluster_name(&name).map_err(|e| invalid_name(&name, e))?;
            Ok(name)
        }
        _ => Err(PkiError::SeveralClusterUris(names)),
    }
}

/// When a certificate stops being valid (its `notAfter`).
pub fn not_after_of_cert(der: &[u8]) -> Result<std::time::SystemTime, PkiError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::BadCert {
        origin: "peer certificate".into(),
        reason: e.to_string(),
    })?;
    let secs = x509.validity().not_after.timestamp();
    // Before 1970 is already expired; UNIX_EPOCH stands for it.
    let secs = u64::try_from(secs).unwrap_or(0);
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// The DER of the first `CERTIFICATE` block in a PEM text.
pub fn first_cert_der_from_pem(pem: &str) -> Result<Vec<u8>, PkiError> {
    let bad = |reason: String| PkiError::BadCert {
        origin: "PEM text".into(),
        reason,
    };
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(e)) => Err(bad(e.to_string())),
        None => Err(bad("no CERTIFICATE block".into())),
    }
}
