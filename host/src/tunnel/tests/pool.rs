//! Tests of the tunnel pool (`tunnel/pool.rs`).

use super::*;
use crate::registry::ClusterRecord;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A client half of an HTTP/2 connection over an in-memory pipe.
async fn sender() -> SendRequest<Body> {
    let (client, _server) = tokio::io::duplex(64 * 1024);
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(client))
            .await
            .expect("client handshake");
    tokio::spawn(conn);
    sender
}

fn registry(certs: &[Fingerprint]) -> ArcSwap<Registry> {
    let mut reg = Registry::default();
    reg.insert(ClusterRecord {
        name: "eu1".into(),
        region: None,
        zone: None,
        certs: certs.to_vec(),
        registered_at: "2026-01-01T00:00:00Z".into(),
    })
    .expect("record");
    ArcSwap::from_pointee(reg)
}

#[tokio::test]
async fn insert_refuses_a_certificate_the_current_registry_does_not_admit() {
    let (old, new) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
    let registry = registry(&[old, new]);
    let pool = TunnelPool::new();
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let first = pool.insert(
        &registry,
        "eu1",
        peer,
        old,
        sender().await,
        CancellationToken::new(),
    );
    assert!(first.is_some());

    // `old` is retired: the watcher stores the registry, then cuts what it finds.
    let retired = self::registry(&[new]);
    registry.store(retired.load_full());
    assert_eq!(pool.enforce(&registry.load()), 1);
    // A handshake that passed against the old registry reaches the pool only now:
    // refused, not left running until the next registry change.
    let late = pool.insert(
        &registry,
        "eu1",
        peer,
        old,
        sender().await,
        CancellationToken::new(),
    );
    assert_eq!(late, None);
    assert!(pool
        .insert(
            &registry,
            "eu1",
            peer,
            new,
            sender().await,
            CancellationToken::new()
        )
        .is_some());
    assert!(pool
        .insert(
            &registry,
            "other",
            peer,
            new,
            sender().await,
            CancellationToken::new()
        )
        .is_none());
}
