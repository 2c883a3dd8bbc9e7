use super::*;

fn line(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"auditID":"{i:06}","pad":"{}"}}"#,
        "x".repeat(80)
    ))
}

fn settings(dir: &Path, max_bytes: u64, max_backups: u32) -> FileSettings {
    FileSettings {
        path: dir.join("logs/audit.log"),
        max_bytes,
        max_backups,
    }
}

fn ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["auditID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn rotates_by_size_keeping_order_across_backups() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 2000, 50);
    let mut sink = FileSink::open(s.clone()).unwrap();
    let events: Vec<Bytes> = (0..200).map(line).collect();
    for batch in events.chunks(7) {
        sink.write_batch(batch).map_err(|(_, e)| e).unwrap();
    }
    sink.sync().unwrap();
    let mut backups: Vec<PathBuf> = (1..=50)
        .map(|i| backup(&s.path, i))
        .filter(|p| p.exists())
        .collect();
    assert!(backups.len() > 5, "rotation expected");
    // Every file stays under the bound; the newest backup is .1.
    let mut all = Vec::new();
    backups.reverse();
    backups.push(s.path.clone());
    for p in &backups {
        assert!(
            std::fs::metadata(p).unwrap().len() <= 2000,
            "{} too big",
            p.display()
        );
        all.extend(ids(p));
    }
    let want: Vec<String> = (0..200).map(|i| format!("{i:06}")).collect();
    assert_eq!(all, want);
}

#[test]
fn keeps_at_most_max_backups() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 500, 2);
    let mut sink = FileSink::open(s.clone()).unwrap();
    for i in 0..100 {
        sink.write_batch(&[line(i)]).map_err(|(_, e)| e).unwrap();
    }
    assert!(backup(&s.path, 1).exists() && backup(&s.path, 2).exists());
    assert!(!backup(&s.path, 3).exists());
    assert_eq!(ids(&s.path).last().map(String::as_str), Some("000099"));

    let none = settings(&dir.path().join("b"), 500, 0);
    let mut sink = FileSink::open(none.clone()).unwrap();
    for i in 0..20 {
        sink.write_batch(&[line(i)]).map_err(|(_, e)| e).unwrap();
    }
    assert!(!backup(&none.path, 1).exists());
    assert!(std::fs::metadata(&none.path).unwrap().len() <= 500);
}

#[test]
fn appends_to_an_existing_log_and_reports_progress_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 1 << 20, 1);
    FileSink::open(s.clone())
        .unwrap()
        .write_batch(&[line(0)])
        .map_err(|(_, e)| e)
        .unwrap();
    let mut sink = FileSink::open(s.clone()).unwrap();
    sink.write_batch(&[line(1), line(2)])
        .map_err(|(_, e)| e)
        .unwrap();
    assert_eq!(ids(&s.path), ["000000", "000001", "000002"]);

    // A rotation that cannot rename (the directory is gone) fails after the
    // events before it were written, and says how many.
    let small = settings(&dir.path().join("c"), 300, 1);
    let mut sink = FileSink::open(small.clone()).unwrap();
    sink.write_batch(&[line(0)]).map_err(|(_, e)| e).unwrap();
    std::fs::remove_dir_all(dir.path().join("c")).unwrap();
    let (written, err) = sink.write_batch(&[line(1), line(2), line(3)]).unwrap_err();
    // Line 1 fitted and was written; line 2 needed a rotation, which failed.
    assert_eq!(written, 1);
    assert!(err.to_string().contains("audit.log"), "{err}");
}

#[test]
fn a_rotation_whose_reopen_failed_is_not_repeated_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 2000, 3);
    let mut sink = FileSink::open(s.clone()).unwrap();
    // 18 lines of 110 bytes: the next line would need a rotation.
    let events: Vec<Bytes> = (0..18).map(line).collect();
    sink.write_batch(&events).map_err(|(_, e)| e).unwrap();
    assert!(!backup(&s.path, 1).exists());
    // As after `rotate` renamed the live file but could not open a new one (for
    // example out of file descriptors): no file open, the old size remembered.
    sink.file = None;
    std::fs::rename(&s.path, backup(&s.path, 1)).unwrap();
    let before = std::fs::read_to_string(backup(&s.path, 1)).unwrap();

    let more: Vec<Bytes> = (100..102).map(line).collect();
    sink.write_batch(&more).map_err(|(_, e)| e).unwrap();
    assert_eq!(ids(&s.path), ["000100", "000101"]);
    assert_eq!(std::fs::read_to_string(backup(&s.path, 1)).unwrap(), before);
    assert!(!backup(&s.path, 2).exists(), "backups were shifted again");
}
