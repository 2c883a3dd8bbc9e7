//! An HTTPS audit webhook receiver on 127.0.0.1:0, as a Kubernetes audit webhook
//! backend would be: it accepts `audit.k8s.io/v1` `EventList` POSTs with a bearer
//! token, and can be switched to answer 503 or to drop connections, to imitate an
//! outage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hawser::audit::Event;
use hawser::shutdown::CancellationToken;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Accept batches.
pub const UP: u8 = 0;
/// Answer every POST with 503.
pub const UNAVAILABLE: u8 = 1;
/// Close every connection without answering.
pub const DROP_CONNECTIONS: u8 = 2;
/// The bearer token the receiver requires.
pub const TOKEN: &str = "audit-s3cret";

/// What the receiver was asked to do and what it saw.
#[derive(Default)]
pub struct State {
    mode: AtomicU8,
    /// auditIDs of accepted events, in arrival order.
    ids: Mutex<Vec<String>>,
    /// Accepted events as they arrived: `(auditID, stage, apiVersion, kind)`.
    events: Mutex<Vec<(String, String, String, String)>>,
    /// Number of events in each accepted POST.
    batches: Mutex<Vec<usize>>,
    /// POSTs answered 503.
    pub refused_503: AtomicU64,
    /// Connections or requests dropped.
    pub dropped: AtomicU64,
    /// POSTs that were not an authenticated `EventList` of audit Events.
    pub bad_requests: AtomicU64,
}

/// An HTTPS audit webhook receiver on 127.0.0.1:0.
pub struct Receiver {
    /// The endpoint to configure as `[audit.webhook] url`.
    pub url: String,
    /// Its CA (self-signed certificate), for `ca_file`.
    pub ca_file: PathBuf,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts a receiver in `mode`, writing its CA into `dir`.
    pub async fn start(dir: &Path, mode: u8) -> Receiver {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca_file = dir.join("receiver-ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key_der)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: AtomicU8::new(mode),
            ..State::default()
        });
        let stop = CancellationToken::new();
        let (st, stopped) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted { Ok((s, _)) => s, Err(_) => continue },
                };
                if st.mode.load(Ordering::SeqCst) == DROP_CONNECTIONS {
                    st.dropped.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                    continue;
                }
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| handle(req, st.clone()));
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Receiver {
            url: format!("https://127.0.0.1:{}/audit", addr.port()),
            ca_file,
            state,
            stop,
        }
    }

    /// Switches the mode.
    pub fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
    }

    /// auditIDs of accepted events, in arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.state.ids.lock().unwrap().clone()
    }

    /// One of the counters.
    pub fn count(&self, counter: fn(&State) -> &AtomicU64) -> u64 {
        counter(&self.state).load(Ordering::SeqCst)
    }

    /// Accepted events as `(auditID, stage, apiVersion, kind)`, in arrival order.
    pub fn events(&self) -> Vec<(String, String, String, String)> {
        self.state.events.lock().unwrap().clone()
    }

    /// The number of events in each accepted POST.
    pub fn batches(&self) -> Vec<usize> {
        self.state.batches.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Answers one POST; in DROP_CONNECTIONS mode an error makes hyper cut a kept-alive
/// connection without answering.
async fn handle(
    req: Request<hyper::body::Incoming>,
    st: Arc<State>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if st.mode.load(Ordering::SeqCst) == DROP_CONNECTIONS {
        st.dropped.fetch_add(1, Ordering::SeqCst);
        return Err(std::io::Error::other("dropping the connection"));
    }
    let reply = |code: u16| {
        Ok(Response::builder()
            .status(code)
            .body(Full::new(Bytes::new()))
            .unwrap())
    };
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        == Some("application/json");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if st.mode.load(Ordering::SeqCst) == UNAVAILABLE {
        st.refused_503.fetch_add(1, Ordering::SeqCst);
        return reply(503);
    }
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !authorized
        || !json
        || list["kind"] != "EventList"
        || list["apiVersion"] != "audit.k8s.io/v1"
    {
        st.bad_requests.fetch_add(1, Ordering::SeqCst);
        return reply(400);
    }
    let items = list["items"].as_array().cloned().unwrap_or_default();
    st.batches.lock().unwrap().push(items.len());
    let mut ids = st.ids.lock().unwrap();
    let mut events = st.events.lock().unwrap();
    for item in items {
        let text = |k: &str| item[k].as_str().unwrap_or_default().to_string();
        let seen = (
            text("auditID"),
            text("stage"),
            text("apiVersion"),
            text("kind"),
        );
        // Each item must read back as a Kubernetes audit Event.
        match serde_json::from_value::<Event>(item) {
            Ok(e) => {
                ids.push(e.audit_id);
                events.push(seen);
            }
            Err(_) => {
                st.bad_requests.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    reply(200)
}
