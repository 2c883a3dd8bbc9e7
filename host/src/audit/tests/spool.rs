use super::*;

fn line(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"auditID":"{i:06}","pad":"{}"}}"#,
        "x".repeat(40)
    ))
}

fn ids(events: &[(Bytes, u64)]) -> Vec<String> {
    events
        .iter()
        .map(|(b, _)| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["auditID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn append_all(spool: &Spool, range: std::ops::Range<usize>) {
    let mut st = spool.lock().await;
    st.active = true;
    for i in range {
        assert!(spool.append(&mut st, &line(i)).is_ok(), "append {i}");
    }
}

/// Replays the whole spool as the sink task does, returning the ids in order.
async fn drain(spool: &Spool) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match spool.next(|| true).await.unwrap() {
            Next::Segment(seg) => {
                let replay = spool.read(&seg).await.unwrap();
                out.extend(ids(&replay.events));
                spool.finish(&seg).await.unwrap();
            }
            Next::Empty => return out,
            Next::QueueFirst => unreachable!(),
        }
    }
    panic!("spool never drained");
}

#[tokio::test]
async fn writes_segments_and_replays_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 * 1024).unwrap();
    append_all(&spool, 0..500).await;
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 3, "small segments expected, got {segments}");
    let want: Vec<String> = (0..500).map(|i| format!("{i:06}")).collect();
    assert_eq!(drain(&spool).await, want);
    assert_eq!(spool.bytes(), 0);
    assert!(
        !spool.lock().await.active,
        "an empty spool hands back to the queue"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn queue_goes_first() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1024 * 1024).unwrap();
    append_all(&spool, 0..3).await;
    assert!(matches!(
        spool.next(|| false).await.unwrap(),
        Next::QueueFirst
    ));
    assert!(spool.lock().await.active);
}

#[tokio::test]
async fn bounded_by_max_bytes_and_room_returns_after_replay() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 8 * 1024).unwrap();
    let mut st = spool.lock().await;
    let mut accepted = 0;
    while accepted < 10_000 {
        match spool.append(&mut st, &line(accepted)) {
            Ok(()) => accepted += 1,
            Err(AppendError::Full) => break,
            Err(AppendError::Io(e)) => panic!("{e}"),
        }
    }
    assert!(
        accepted > 50 && spool.bytes() <= 8 * 1024,
        "{accepted} events, {} bytes",
        spool.bytes()
    );
    drop(st);
    assert_eq!(drain(&spool).await.len(), accepted);
    let mut st = spool.lock().await;
    assert!(spool.append(&mut st, &line(0)).is_ok());
}

#[tokio::test]
async fn restart_resumes_from_the_committed_position_and_rescues_older_events_first() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(dir.path(), 1024 * 1024).unwrap();
        append_all(&spool, 10..20).await;
        // Deliver the first four events of the first segment, then "crash".
        let Next::Segment(seg) = spool.next(|| true).await.unwrap() else {
            panic!("no segment")
        };
        let replay = spool.read(&seg).await.unwrap();
        spool.commit(&seg, replay.events[3].1).await.unwrap();
        // Shutdown: events 0..10 were still in the memory queue (older).
        let older: Vec<Bytes> = (0..10).map(line).collect();
        spool.close(&older).await.unwrap();
        let mut st = spool.lock().await;
        assert!(matches!(
            spool.append(&mut st, &line(99)),
            Err(AppendError::Io(AuditError::Closed))
        ));
    }
    let spool = Spool::open(dir.path(), 1024 * 1024).unwrap();
    assert!(
        spool.lock().await.active,
        "leftovers keep new events behind them"
    );
    let want: Vec<String> = (0..10).chain(14..20).map(|i| format!("{i:06}")).collect();
    assert_eq!(drain(&spool).await, want);
}

#[tokio::test]
async fn torn_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!(
        "{}\n{{\"auditID\":\"000001\"",
        String::from_utf8(line(0).to_vec()).unwrap()
    );
    std::fs::write(dir.path().join("7.jsonl"), body).unwrap();
    let spool = Spool::open(dir.path(), 1024 * 1024).unwrap();
    let Next::Segment(seg) = spool.next(|| true).await.unwrap() else {
        panic!("no segment")
    };
    let replay = spool.read(&seg).await.unwrap();
    assert_eq!(ids(&replay.events), ["000000"]);
    assert_eq!(replay.corrupt, 1);
}

#[tokio::test]
async fn stale_position_files_never_skip_events_of_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    // Left by a crash: the position of a delivered, deleted segment 0, and a
    // half-written position file.
    std::fs::write(dir.path().join("0.pos"), "120").unwrap();
    std::fs::write(dir.path().join("1.pos.tmp"), "1").unwrap();
    let spool = Spool::open(dir.path(), 64 * 1024).unwrap();
    assert!(!dir.path().join("0.pos").exists());
    assert!(!dir.path().join("1.pos.tmp").exists());
    append_all(&spool, 0..10).await;
    let want: Vec<String> = (0..10).map(|i| format!("{i:06}")).collect();
    assert_eq!(
        drain(&spool).await,
        want,
        "segment 0 replayed from its start"
    );
}

#[tokio::test]
async fn a_committed_position_is_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 64 * 1024).unwrap();
    append_all(&spool, 0..10).await;
    let Next::Segment(seg) = spool.next(|| true).await.unwrap() else {
        panic!("a segment to replay");
    };
    let replay = spool.read(&seg).await.unwrap();
    spool.commit(&seg, replay.events[3].1).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(pos_path(&seg)).unwrap(),
        replay.events[3].1.to_string()
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let again = spool.read(&seg).await.unwrap();
    assert_eq!(
        ids(&again.events).first().map(String::as_str),
        Some("000004")
    );
}
