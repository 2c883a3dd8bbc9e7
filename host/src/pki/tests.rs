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
