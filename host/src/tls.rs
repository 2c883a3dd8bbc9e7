//! rustls configurations for the tunnel, the front listener and the API server.
//!
//! TLS 1.3 is preferred and 1.2 is the minimum; rustls implements nothing older,
//! so a TLS 1.1 client is refused with a `protocol_version` alert.

use crate::pki::{cluster_of_cert, fingerprint_of_der};
use crate::registry::Registry;
use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

/// ALPN protocol spoken on the tunnel: HTTP/2 with the hub as the client.
pub const TUNNEL_ALPN: &[u8] = b"hawser-tunnel/1";

/// A TLS setup that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM input held nothing usable.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input.
        what: String,
        /// Why it was refused.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file to text.
pub fn read_pem(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Parses every certificate in a PEM text.
pub fn certs_from_pem(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        what: what.into(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn key_from_pem(what: &str, pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            what: what.into(),
            reason: "no private key found".into(),
        })
}

/// A root store holding exactly the given CA certificates.
pub fn roots_from_pem(what: &str, pem: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(what, pem)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The hub's tunnel listener: agents must present a certificate issued by the hub CA,
/// valid now, and registered for the cluster named in it.
pub fn hub_tunnel_server(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    registry: Arc<ArcSwap<Registry>>,
) -> Result<ServerConfig, TlsError> {
    let roots = Arc::new(roots_from_pem("hub CA", ca_pem)?);
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
    let verifier = Arc::new(RegisteredAgentVerifier { inner, registry });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs_from_pem("hub certificate", cert_pem)?,
            key_from_pem("hub key", key_pem)?,
        )?;
    config.alpn_protocols = vec![TUNNEL_ALPN.to_vec()];
    // No session resumption: a resumed session skips the client verifier, so an
    // agent whose certificate was retired or whose cluster was removed could
    // come back on the strength of an earlier handshake.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The hub's front listener (HTTP/2 and HTTP/1.1; upgrades use HTTP/1.1).
pub fn front_server(cert_pem: &str, key_pem: &str) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            certs_from_pem("front certificate", cert_pem)?,
            key_from_pem("front key", key_pem)?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The agent's side of the tunnel: trusts only the pinned hub CA and presents the
/// agent certificate.
pub fn agent_tunnel_client(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots_from_pem("pinned hub CA", ca_pem)?)
        .with_client_auth_cert(
            certs_from_pem("agent certificate", cert_pem)?,
            key_from_pem("agent key", key_pem)?,
        )?;
    config.alpn_protocols = vec![TUNNEL_ALPN.to_vec()];
    Ok(config)
}

/// A client config for the API server, with an optional client certificate from a
/// kubeconfig. ALPN is left to the connector, which offers only HTTP/1.1 (upgrades
/// need it).
pub fn apiserver_client(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots_from_pem("API server CA", ca_pem)?);
    let config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            certs_from_pem("kubeconfig client certificate", cert)?,
            key_from_pem("kubeconfig client key", key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Parses a server name for a TLS client.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::Pem {
        what: format!("server name `{name}`"),
        reason: e.to_string(),
    })
}

/// The x509 whitelist: webpki chain and validity checks, then the registry.
#[derive(Debug)]
struct RegisteredAgentVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<ArcSwap<Registry>>,
}

/// Why a chain-valid agent certificate was still refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotRegistered(String);

impl ClientCertVerifier for RegisteredAgentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let refuse = |msg: String| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(NotRegistered(msg)),
            )))
        };
        let cluster = cluster_of_cert(end_entity).map_err(|e| refuse(e.to_string()))?;
        let fingerprint = fingerprint_of_der(end_entity);
        if !self.registry.load().is_admitted(&cluster, &fingerprint) {
            return Err(refuse(format!(
                "certificate {fingerprint} is not registered for cluster `{cluster}`"
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
