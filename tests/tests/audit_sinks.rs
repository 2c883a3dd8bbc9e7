//! Audit sinks end to end: a local HTTPS webhook receiver that can answer 503 or
//! drop connections, the spool, back-pressure, fail-closed refusals, and the file
//! log. Every wait is on a condition, bounded in time; ports are ephemeral.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hawser::audit::{
    event_for, AuditError, AuditLog, AuditSettings, Event, EventContext, FileSettings, Level,
    MicroTime, Mode, Policy, Stage, UserInfo, WebhookSettings,
};
use hawser::shutdown::CancellationToken;
use hawser_tests::harness::audit_receiver::{Receiver, DROP_CONNECTIONS, TOKEN, UNAVAILABLE, UP};
use hawser_tests::harness::eventually;

fn event(i: usize) -> Event {
    let ctx = EventContext {
        audit_id: format!("{i:08}"),
        request_uri: format!("/api/v1/namespaces/default/pods/p{i}"),
        verb: "get".into(),
        user: UserInfo {
            username: "hub".into(),
            ..UserInfo::default()
        },
        impersonated_user: Some(UserInfo {
            username: "alice".into(),
            ..UserInfo::default()
        }),
        source_ips: vec!["127.0.0.1".into()],
        user_agent: Some("audit-sinks-test".into()),
        object_ref: None,
        request_received: MicroTime::now(),
        annotations: [("hawser.io/role".to_string(), "hub".to_string())]
            .into_iter()
            .collect(),
    };
    event_for(Stage::ResponseComplete, Level::Metadata, &ctx, None)
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{i:08}")).collect()
}

fn settings(
    mode: Mode,
    queue_size: usize,
    webhook: Option<WebhookSettings>,
    file: Option<FileSettings>,
) -> AuditSettings {
    let policy = Policy::parse(
        Path::new("test"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Metadata}]\n",
    );
    AuditSettings {
        policy: Arc::new(policy.unwrap()),
        mode,
        queue_size,
        failure_grace: Duration::from_secs(60),
        shutdown_flush: Duration::from_millis(500),
        file,
        webhook,
    }
}

fn webhook(r: &Receiver, dir: &Path, spool_max_bytes: u64) -> WebhookSettings {
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    WebhookSettings {
        url: r.url.parse().unwrap(),
        ca_file: r.ca_file.clone(),
        token_file: Some(token_file),
        max_batch_size: 50,
        max_batch_wait: Duration::from_millis(20),
        spool_dir: dir.join("spool"),
        spool_max_bytes,
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(100),
        request_timeout: Duration::from_secs(5),
    }
}

/// Waits until the receiver holds `want` (and the sink has nothing left), then
/// checks nothing arrives twice or out of order.
async fn assert_delivered_once_in_order(r: &Receiver, log: &AuditLog, want: &[String]) {
    let drained = eventually(Duration::from_secs(30), || async {
        let m = &log.metrics()[0];
        (r.ids().len() >= want.len() && m.queued == 0 && m.spool_bytes == 0).then_some(())
    })
    .await;
    let got = r.ids();
    assert!(
        drained.is_some(),
        "only {} of {} events arrived",
        got.len(),
        want.len()
    );
    assert_eq!(got.len(), want.len(), "duplicates arrived");
    assert!(got == want, "events arrived out of order");
    assert_eq!(
        r.count(|s| &s.bad_requests),
        0,
        "malformed or unauthenticated batches"
    );
}

async fn stop(log: &AuditLog, shutdown: &CancellationToken) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), log.drained())
        .await
        .expect("sink tasks did not stop");
}

#[tokio::test]
async fn webhook_outage_spools_and_replays_every_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UNAVAILABLE).await;
    let shutdown = CancellationToken::new();
    let s = settings(
        Mode::Blocking,
        16,
        Some(webhook(&r, dir.path(), 64 << 20)),
        None,
    );
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();

    const N: usize = 2000;
    for i in 0..N / 2 {
        log.record(event(i)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || async {
        (r.count(|s| &s.refused_503) >= 3).then_some(())
    })
    .await
    .is_some());
    // Now refuse connections outright for the second half.
    r.set(DROP_CONNECTIONS);
    for i in N / 2..N {
        log.record(event(i)).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || async {
        (r.count(|s| &s.dropped) >= 3).then_some(())
    })
    .await
    .is_some());
    let m = log.metrics()[0].clone();
    assert!(
        m.spooled > 0 && m.spool_bytes > 0,
        "the spool was not used: {m:?}"
    );
    assert!(
        m.failing_for.is_some() && m.waits == 0 && m.refusals == 0,
        "{m:?}"
    );
    assert!(r.ids().is_empty());

    r.set(UP);
    assert_delivered_once_in_order(&r, &log, &ids(0..N)).await;
    let m = log.metrics()[0].clone();
    assert_eq!((m.recorded, m.delivered, m.lost), (N as u64, N as u64, 0));
    assert!(m.failing_for.is_none());
    stop(&log, &shutdown).await;
}

#[tokio::test]
async fn blocking_mode_waits_for_room_instead_of_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UNAVAILABLE).await;
    let shutdown = CancellationToken::new();
    let spool_bytes = 16 * 1024;
    let s = settings(
        Mode::Blocking,
        4,
        Some(webhook(&r, dir.path(), spool_bytes)),
        None,
    );
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();

    const N: usize = 400;
    let progress = Arc::new(AtomicUsize::new(0));
    let recorder = {
        let (log, progress) = (log.clone(), progress.clone());
        tokio::spawn(async move {
            for i in 0..N {
                log.record(event(i)).await?;
                progress.store(i + 1, Ordering::SeqCst);
            }
            Ok::<(), AuditError>(())
        })
    };
    let waiting = eventually(Duration::from_secs(10), || async {
        (log.metrics()[0].waits > 0).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "record never had to wait: {:?}",
        log.metrics()
    );
    // Held up, not dropping: what was accepted fits in queue + batch + spool.
    let accepted = progress.load(Ordering::SeqCst);
    let line = serde_json::to_vec(&event(0)).unwrap().len() + 1;
    assert!(accepted < N && !recorder.is_finished());
    assert!(
        accepted <= 4 + 50 + (spool_bytes as usize / line) + 1,
        "{accepted} accepted"
    );

    r.set(UP);
    let done = tokio::time::timeout(Duration::from_secs(30), recorder)
        .await
        .expect("recorder still blocked");
    done.unwrap().unwrap();
    assert_delivered_once_in_order(&r, &log, &ids(0..N)).await;
    stop(&log, &shutdown).await;
}

#[tokio::test]
async fn fail_closed_refuses_at_once_when_queue_and_spool_are_full() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UNAVAILABLE).await;
    let shutdown = CancellationToken::new();
    let s = settings(
        Mode::FailClosed,
        4,
        Some(webhook(&r, dir.path(), 16 * 1024)),
        None,
    );
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();

    let started = Instant::now();
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 10_000, "the spool bound was never reached");
        match log.record(event(accepted)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(refusal, AuditError::RefusedSpoolFull { .. }),
        "{refusal}"
    );
    assert!(refusal.is_refusal());
    assert_eq!(refusal.status().code, 503);
    assert_eq!(log.metrics()[0].refusals, 1);

    r.set(UP);
    assert_delivered_once_in_order(&r, &log, &ids(0..accepted)).await;
    log.record(event(accepted))
        .await
        .expect("accepts again once the spool drained");
    stop(&log, &shutdown).await;
}

#[tokio::test]
async fn fail_closed_refuses_once_the_sink_fails_longer_than_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), DROP_CONNECTIONS).await;
    let shutdown = CancellationToken::new();
    let mut s = settings(
        Mode::FailClosed,
        1000,
        Some(webhook(&r, dir.path(), 64 << 20)),
        None,
    );
    s.failure_grace = Duration::from_millis(300);
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();

    // Record one event per poll (as `eventually` polls) until the first refusal.
    let started = Instant::now();
    let mut accepted = 0;
    let refusal = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10) && accepted < 500,
            "never refused"
        );
        match log.record(event(accepted)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(refusal, AuditError::RefusedSinkFailing { failing_for, .. } if failing_for > s.failure_grace)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusal took {:?}",
        started.elapsed()
    );

    r.set(UP);
    let back = eventually(Duration::from_secs(10), || async {
        let m = &log.metrics()[0];
        (m.failing_for.is_none() && m.queued == 0).then_some(())
    })
    .await;
    assert!(back.is_some(), "the sink did not recover");
    log.record(event(accepted))
        .await
        .expect("accepts again once the sink recovered");
    assert_delivered_once_in_order(&r, &log, &ids(0..accepted + 1)).await;
    stop(&log, &shutdown).await;
}

#[tokio::test]
async fn shutdown_keeps_undelivered_webhook_events_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), UNAVAILABLE).await;
    let shutdown = CancellationToken::new();
    let s = settings(
        Mode::Blocking,
        16,
        Some(webhook(&r, dir.path(), 64 << 20)),
        None,
    );
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();
    for i in 0..300 {
        log.record(event(i)).await.unwrap();
    }
    stop(&log, &shutdown).await;
    assert!(matches!(
        log.record(event(999)).await,
        Err(AuditError::Closed)
    ));
    assert_eq!(log.metrics()[0].lost, 0);

    r.set(UP);
    let shutdown = CancellationToken::new();
    let log = AuditLog::start(&s, shutdown.clone()).unwrap();
    log.record(event(300)).await.unwrap();
    assert_delivered_once_in_order(&r, &log, &ids(0..301)).await;
    stop(&log, &shutdown).await;
}

#[tokio::test]
async fn file_sink_writes_json_lines_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log/audit.log");
    let file = FileSettings {
        path: path.clone(),
        max_bytes: 16 * 1024,
        max_backups: 100,
    };
    let shutdown = CancellationToken::new();
    let log = AuditLog::start(
        &settings(Mode::Blocking, 8, None, Some(file)),
        shutdown.clone(),
    )
    .unwrap();
    for i in 0..500 {
        log.record(event(i)).await.unwrap();
    }
    stop(&log, &shutdown).await;
    let mut files: Vec<PathBuf> = (1..=100)
        .map(|i| PathBuf::from(format!("{}.{i}", path.display())))
        .filter(|p| p.exists())
        .collect();
    assert!(
        files.len() >= 3,
        "expected rotation, got {} backups",
        files.len()
    );
    files.reverse();
    files.push(path);
    let mut got = Vec::new();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let e: Event = serde_json::from_str(line).unwrap();
            assert_eq!(
                (e.kind.as_str(), e.api_version.as_str()),
                ("Event", "audit.k8s.io/v1")
            );
            got.push(e.audit_id);
        }
    }
    assert!(
        got == ids(0..500),
        "file log out of order or incomplete ({} lines)",
        got.len()
    );
    assert_eq!(log.metrics()[0].delivered, 500);
}
