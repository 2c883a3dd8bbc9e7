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
use std::str::FromStr;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::registry::{create_private_dir, validate_cluster_name, write_atomic};

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
            key_pem: SecretPem(key.serialize_pem()),
            fingerprint: fingerprint_of_der(cert.der()),
        })
    }
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
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{CertificateError, RootCertStore};
    use std::sync::Arc;

    fn roots(ca: &HubCa) -> (Arc<RootCertStore>, Arc<rustls::crypto::CryptoProvider>) {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.cert_der().to_vec()))
            .expect("CA root");
        (
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
    }

    fn leaf(cert_pem: &str) -> CertificateDer<'static> {
        CertificateDer::from(first_cert_der_from_pem(cert_pem).expect("cert PEM"))
    }

    fn verify(ca: &HubCa, cert_pem: &str) -> Result<(), rustls::Error> {
        let (roots, provider) = roots(ca);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("verifier");
        verifier
            .verify_client_cert(&leaf(cert_pem), &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn ca_is_created_once_then_reloaded_identical() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = HubCa::load_or_create(&state).unwrap();
        let second = HubCa::load_or_create(&state).unwrap();
        assert_eq!(first.cert_pem(), second.cert_pem());
        assert_eq!(first.key.serialize_pem(), second.key.serialize_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&state.join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&state), 0o700);
        }
        let (_, x509) = x509_parser::parse_x509_certificate(first.cert_der()).unwrap();
        assert!(x509.is_ca());
        assert!(x509.subject().to_string().contains(CA_COMMON_NAME));
        assert!(!format!("{first:?}").contains("PRIVATE"));
    }

    #[test]
    fn load_refuses_missing_or_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let err = HubCa::load(dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::Missing { .. }), "{err}");
        HubCa::load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = HubCa::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn agent_cert_verifies_and_names_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(dir.path()).unwrap();
        let issued = ca.issue_agent("eu1", Validity::days_from_now(30)).unwrap();
        verify(&ca, &issued.cert_pem).expect("agent cert chains to the hub CA");
        let der = first_cert_der_from_pem(&issued.cert_pem).unwrap();
        assert_eq!(cluster_of_cert(&der).unwrap(), "eu1");
        assert_eq!(fingerprint_of_der(&der), issued.fingerprint);
        assert_eq!(format!("{:?}", issued.key_pem), "SecretPem(<redacted>)");
        assert!(issued.key_pem.expose().contains("PRIVATE KEY"));
        // Two certificates for the same cluster differ (fresh key and serial).
        let again = ca.issue_agent("eu1", Validity::days_from_now(30)).unwrap();
        assert_ne!(again.fingerprint, issued.fingerprint);
    }

    #[test]
    fn foreign_and_expired_certs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(&dir.path().join("a")).unwrap();
        let other = HubCa::load_or_create(&dir.path().join("b")).unwrap();
        let foreign = other
            .issue_agent("eu1", Validity::days_from_now(30))
            .unwrap();
        assert!(verify(&ca, &foreign.cert_pem).is_err());

        let now = OffsetDateTime::now_utc();
        let past = Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        };
        let expired = ca.issue_agent("eu1", past).unwrap();
        match verify(&ca, &expired.cert_pem) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {}
            other => panic!("expected an expired-certificate error, got {other:?}"),
        }
        let empty = Validity {
            not_before: now,
            not_after: now,
        };
        assert!(matches!(
            ca.issue_agent("eu1", empty),
            Err(PkiError::InvalidValidity { .. })
        ));
        assert!(matches!(
            ca.issue_agent("EU/1", past),
            Err(PkiError::InvalidName { .. })
        ));
    }

    #[test]
    fn server_cert_carries_dns_and_ip_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HubCa::load_or_create(dir.path()).unwrap();
        let names = vec!["hub.example.com".to_string(), "127.0.0.1".to_string()];
        let issued = ca
            .issue_server(&names, Validity::days_from_now(30))
            .unwrap();
        let (roots, provider) = roots(&ca);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        for name in ["hub.example.com", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf(&issued.cert_pem), &[], &name, &[], UnixTime::now())
                .unwrap();
        }
        let other = ServerName::try_from("evil.example.com").unwrap();
        assert!(verifier
            .verify_server_cert(&leaf(&issued.cert_pem), &[], &other, &[], UnixTime::now())
            .is_err());
        // A server certificate is no agent identity.
        assert!(verify(&ca, &issued.cert_pem).is_err());
        let der = first_cert_der_from_pem(&issued.cert_pem).unwrap();
        assert!(matches!(cluster_of_cert(&der), Err(PkiError::NoClusterUri)));
        assert!(ca.issue_server(&[], Validity::days_from_now(1)).is_err());
        assert!(ca
            .issue_server(&["bad name".into()], Validity::days_from_now(1))
            .is_err());
    }

    #[test]
    fn fingerprint_round_trips_as_hex() {
        let fp = Fingerprint(std::array::from_fn(|i| (i * 7) as u8));
        let text = fp.to_string();
        assert!(text.starts_with("sha256:") && text.len() == 7 + 64);
        assert_eq!(text, text.to_lowercase());
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        for bad in [
            "",
            "sha256:",
            "md5:00",
            &text[..70],
            &text.replace('0', "g"),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} accepted");
        }
    }
}
