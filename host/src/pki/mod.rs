//! The hub's certificate authority.
//!
//! The hub issues every agent's client certificate itself and pins its own CA on
//! the tunnel listener, so an agent is admitted only if its certificate chains to
//! this CA *and* its fingerprint is in the [registry](crate::registry). Keys are
//! ECDSA P-256; the CA key never leaves `state_dir/ca.key` (mode 0600).

use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::files::{create_private_dir, write_atomic};
use crate::registry::validate_cluster_name;

mod cert;

pub use cert::{
    cluster_of_cert, fingerprint_of_der, first_cert_der_from_pem, not_after_of_cert, Fingerprint,
    SecretPem,
};

/// File name of the CA certificate inside the state directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key inside the state directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Prefix of the URI SAN that names the cluster an agent certificate was issued for.
pub const CLUSTER_URI_PREFIX: &str = "hawser://cluster/";
const CA_COMMON_NAME: &str = "Hawser hub CA";
const CA_VALIDITY_DAYS: u32 = 3650;

/// Why a CA operation failed. Messages name the file (when there is one) and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory could not be read.
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A file or directory could not be written.
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The CA has not been created yet.
    #[error("{path}: does not exist (the hub CA is created by `hawser cluster register`)")]
    Missing { path: PathBuf },
    /// Half of a CA is on disk; creating a new one would orphan every issued certificate.
    #[error("{present} exists but {missing} does not; refusing to create a new CA over half of an old one")]
    Incomplete { present: PathBuf, missing: PathBuf },
    /// A certificate could not be parsed or is unsuitable.
    #[error("{origin}: not a usable certificate: {reason}")]
    BadCert { origin: String, reason: String },
    /// A private key could not be parsed.
    #[error("{path}: not a usable private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    /// The CA key on disk does not belong to the CA certificate on disk.
    #[error("{key}: does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// Key generation or signing failed.
    #[error("cannot {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    /// A name to put into a certificate was refused.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// The validity window is empty.
    #[error("invalid validity: not_after {not_after} is not after not_before {not_before}")]
    InvalidValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    /// The certificate has no `hawser://cluster/<name>` URI SAN.
    #[error("certificate carries no {CLUSTER_URI_PREFIX}<name> URI SAN")]
    NoClusterUri,
    /// The certificate names several clusters; it was not issued by this hub.
    #[error("certificate carries several cluster URI SANs {0:?}")]
    SeveralClusterUris(Vec<String>),
    /// A fingerprint string is not `sha256:<64 hex>`.
    #[error("invalid fingerprint {input:?}: {reason}")]
    BadFingerprint { input: String, reason: &'static str },
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From five minutes ago (so a peer whose clock runs slightly behind still
    /// accepts the certificate) until `days` days from now.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A freshly issued certificate and its private key.
#[derive(Debug)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: SecretPem,
    /// Fingerprint of the certificate's DER.
    pub fingerprint: Fingerprint,
}

/// The hub's CA: its certificate and signing key.
pub struct HubCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    not_after: OffsetDateTime,
    key: KeyPair,
}

impl fmt::Debug for HubCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubCa")
            .field("fingerprint", &fingerprint_of_der(&self.cert_der))
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

// === impl HubCa ===

impl HubCa {
    /// Loads `state_dir/ca.crt` and `ca.key`, or creates them (ECDSA P-256, ten
    /// years, CN "Hawser hub CA") on first use. Creates `state_dir` (0700) if
    /// missing; the key file is written 0600.
    pub fn load_or_create(state_dir: &Path) -> Result<HubCa, PkiError> {
        let (cert_path, key_path) = (state_dir.join(CA_CERT_FILE), state_dir.join(CA_KEY_FILE));
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => HubCa::load(state_dir),
            (false, false) => HubCa::create(state_dir),
            (true, false) => Err(PkiError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(PkiError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Loads an existing CA; an error if either file is absent.
    pub fn load(state_dir: &Path) -> Result<HubCa, PkiError> {
        let cert_path = state_dir.join(CA_CERT_FILE);
        let key_path = state_dir.join(CA_KEY_FILE);
        let cert_pem = read_existing(&cert_path)?;
        let key_text = read_existing(&key_path)?;
        warn_if_key_readable_by_others(&key_path);
        let origin = cert_path.display().to_string();
        let cert_der = first_cert_der_from_pem(&cert_pem).map_err(|e| relabel(e, &origin))?;
        let bad = |reason: String| PkiError::BadCert {
            origin: origin.clone(),
            reason,
        };
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| bad(e.to_string()))?;
        if !x509.is_ca() {
            return Err(bad(
                "not a CA certificate (basicConstraints CA:FALSE)".into()
            ));
        }
        let not_after = x509.validity().not_after.to_datetime();
        let key = KeyPair::from_pem(&key_text).map_err(|e| PkiError::BadKey {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        // A swapped key would sign certificates nobody can verify; catch it at load.
        if key.public_key_raw() != &x509.public_key().subject_public_key.data[..] {
            return Err(PkiError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        drop(x509);
        Ok(HubCa {
            cert_pem,
            cert_der,
            not_after,
            key,
        })
    }

    fn create(state_dir: &Path) -> Result<HubCa, PkiError> {
        create_private_dir(state_dir).map_err(write_err(state_dir))?;
        let key = generate_key()?;
        let validity = Validity::days_from_now(CA_VALIDITY_DAYS);
        let mut params = base_params(CA_COMMON_NAME, validity);
        // Path length 0: this CA signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(generate_err("self-sign the hub CA"))?;
        let key_path = state_dir.join(CA_KEY_FILE);
        let cert_path = state_dir.join(CA_CERT_FILE);
        // Key first: a crash in between leaves a key without a certificate, which
        // load_or_create reports instead of silently replacing.
        write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(write_err(&key_path))?;
        write_atomic(&cert_path, cert.pem().as_bytes(), 0o644).map_err(write_err(&cert_path))?;
        let ca = HubCa::load(state_dir)?;
        tracing::info!(dir = %state_dir.display(), fingerprint = %fingerprint_of_der(&ca.cert_der), "created hub CA");
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// An agent client certificate: CN = `cluster`, URI SAN
    /// `hawser://cluster/<cluster>`, EKU clientAuth, not a CA, random serial.
    pub fn issue_agent(&self, cluster: &str, validity: Validity) -> Result<IssuedCert, PkiError> {
        validate_cluster_name(cluster).map_err(|e| invalid_name(cluster, e))?;
        let mut params = base_params(cluster, validity);
        let uri = format!("{CLUSTER_URI_PREFIX}{cluster}");
        params.subject_alt_names = vec![SanType::URI(ia5(&uri)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, "issue the agent certificate")
    }

    /// A server certificate for the hub's listeners: each name becomes an IP
    /// address SAN if it parses as one, a DNS name SAN otherwise. EKU serverAuth.
    pub fn issue_server(
        &self,
        names: &[String],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let Some(first) = names.first() else {
            return Err(invalid_name(
                "",
                "a server certificate needs at least one name",
            ));
        };
        let mut params = base_params(first, validity);
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    check_dns_name(name)?;
                    SanType::DnsName(ia5(name)?)
                }
            };
            params.subject_alt_names.push(san);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "issue the server certificate")
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        what: &'static str,
    ) -> Result<IssuedCert, PkiError> {
        if params.not_after <= params.not_before {
            return Err(PkiError::InvalidValidity {
                not_before: params.not_before,
                not_after: params.not_after,
            });
        }
        // Validators reject a leaf that outlives its issuer; cap it rather than fail.
        if params.not_after > self.not_after {
            tracing::warn!(ca_not_after = %self.not_after, "certificate validity capped at the CA's expiry");
            params.not_after = self.not_after;
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), &self.key)
            .map_err(generate_err(what))?;
        let key = generate_key()?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate_err(what))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: SecretPem::new(key.serialize_pem()),
            fingerprint: fingerprint_of_der(cert.der()),
        })
    }
}

// === helpers ===

fn exists(path: &Path) -> Result<bool, PkiError> {
    let path = path.to_path_buf();
    path.try_exists()
        .map_err(|source| PkiError::Read { path, source })
}

fn read_existing(path: &Path) -> Result<String, PkiError> {
    let path = path.to_path_buf();
    fs::read_to_string(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PkiError::Missing { path },
        _ => PkiError::Read { path, source },
    })
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> PkiError {
    let path = path.to_path_buf();
    |source| PkiError::Write { path, source }
}

fn generate_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn invalid_name(name: &str, reason: impl ToString) -> PkiError {
    PkiError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

fn warn_if_key_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "CA key is readable by group or others; chmod 600 it");
        }
    }
}

fn relabel(e: PkiError, origin: &str) -> PkiError {
    match e {
        PkiError::BadCert { reason, .. } => PkiError::BadCert {
            origin: origin.to_string(),
            reason,
        },
        other => other,
    }
}

fn generate_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err("generate a P-256 key"))
}

fn base_params(common_name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    // 126 random bits: unique per certificate, positive, within RFC 5280's 20 octets.
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x01;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.use_authority_key_identifier_extension = true;
    params
}

fn ia5(s: &str) -> Result<Ia5String, PkiError> {
    Ia5String::try_from(s).map_err(|e| invalid_name(s, e))
}

/// Host names for the server certificate: letters, digits and '-' per label,
/// optionally a leading "*." wildcard.
fn check_dns_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason: &str| invalid_name(name, reason);
    let host = name.strip_prefix("*.").unwrap_or(name);
    if host.is_empty() || name.len() > 253 {
        return Err(bad("a DNS name must have 1 to 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each DNS label must have 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("DNS labels may contain only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a DNS label must not start or end with '-'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
