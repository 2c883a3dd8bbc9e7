use super::*;
use crate::files::now_rfc3339;

fn record(name: &str, fp: u8) -> ClusterRecord {
    ClusterRecord {
        name: name.to_string(),
        region: Some("eu-west".into()),
        zone: None,
        certs: vec![Fingerprint([fp; 32])],
        registered_at: now_rfc3339(),
    }
}

#[test]
fn save_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    assert_eq!(Registry::load(&state).unwrap(), Registry::default());
    let mut reg = Registry::default();
    reg.insert(record("eu1", 1)).unwrap();
    reg.insert(record("us2", 2)).unwrap();
    reg.add_cert("eu1", Fingerprint([3; 32])).unwrap();
    reg.add_cert("eu1", Fingerprint([3; 32])).unwrap();
    reg.save(&state).unwrap();
    let text = std::fs::read_to_string(state.join(CLUSTERS_FILE)).unwrap();
    assert!(
        text.starts_with("# ") && text.contains("hawser cluster"),
        "{text}"
    );
    assert!(text.contains("[[cluster]]"), "{text}");
    let back = Registry::load(&state).unwrap();
    assert_eq!(back, reg);
    assert_eq!(back.get("eu1").unwrap().certs.len(), 2);
    assert!(back.is_admitted("eu1", &Fingerprint([3; 32])));
    assert!(!back.is_admitted("eu1", &Fingerprint([2; 32])));
    assert!(!back.is_admitted("nope", &Fingerprint([1; 32])));
    let names: Vec<_> = back.clusters().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["eu1", "us2"]);
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
}

#[test]
fn duplicates_and_unknown_names_are_refused() {
    let mut reg = Registry::default();
    reg.insert(record("eu1", 1)).unwrap();
    let err = reg.insert(record("eu1", 2)).unwrap_err();
    assert!(matches!(err, RegistryError::Exists { .. }), "{err}");
    assert!(matches!(
        reg.remove("nope"),
        Err(RegistryError::Unknown { .. })
    ));
    assert!(matches!(
        reg.add_cert("nope", Fingerprint([0; 32])),
        Err(RegistryError::Unknown { .. })
    ));
    assert!(reg.insert(record("Bad", 1)).is_err());
    // Retiring: only a listed certificate, never the last one.
    let (one, two) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
    assert!(matches!(
        reg.retire_cert("eu1", &one),
        Err(RegistryError::LastCert { .. })
    ));
    reg.add_cert("eu1", two).unwrap();
    assert!(matches!(
        reg.retire_cert("eu1", &Fingerprint([9; 32])),
        Err(RegistryError::UnknownCert { .. })
    ));
    assert!(matches!(
        reg.retire_cert("nope", &one),
        Err(RegistryError::Unknown { .. })
    ));
    assert_eq!(reg.retire_cert("eu1", &one).unwrap().certs, [two]);
    assert!(!reg.is_admitted("eu1", &one) && reg.is_admitted("eu1", &two));
    assert_eq!(reg.remove("eu1").unwrap().name, "eu1");
    assert!(reg.get("eu1").is_none());
}

#[test]
fn malformed_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CLUSTERS_FILE);
    let cases = [
        "[[cluster]\nname = 1",
        "[[cluster]]\nname = \"eu1\"\ncerts = []\nregistered_at = \"x\"\ncolour = \"red\"\n",
        "[[cluster]]\nname = \"eu1\"\ncerts = [\"sha256:zz\"]\nregistered_at = \"x\"\n",
        "[[cluster]]\nname = \"EU1\"\ncerts = []\nregistered_at = \"x\"\n",
        "[[cluster]]\nname = \"a\"\ncerts = []\nregistered_at = \"x\"\n\
         [[cluster]]\nname = \"a\"\ncerts = []\nregistered_at = \"y\"\n",
    ];
    for text in cases {
        std::fs::write(&path, text).unwrap();
        let err = Registry::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

#[test]
fn cluster_names_are_dns_labels() {
    let long = "a".repeat(64);
    let cases: &[(&str, Option<&str>)] = &[
        ("eu1", None),
        ("a", None),
        ("0", None),
        ("prod-eu-west-1", None),
        (&long[..63], None),
        ("", Some("empty")),
        (&long, Some("at most 63")),
        ("..", Some("'.'")),
        ("a.b", Some("'.'")),
        ("a/b", Some("path separator")),
        ("Eu1", Some("upper-case")),
        ("eu%31", Some("percent")),
        ("eu_1", Some("only a-z")),
        ("eu 1", Some("only a-z")),
        ("-eu", Some("start and end")),
        ("eu-", Some("start and end")),
        ("é", Some("only a-z")),
    ];
    for (name, want) in cases {
        match (validate_cluster_name(name), want) {
            (Ok(()), None) => {}
            (Err(e), Some(why)) => assert!(e.to_string().contains(why), "{name:?}: {e}"),
            (got, _) => panic!("{name:?}: unexpected {got:?}"),
        }
    }
}

#[test]
fn concurrent_locked_updates_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};
    // Every worker asks for the lock at the same moment, and counts who is between
    // load and save: with the lock, never more than one.
    let start = Arc::new(Barrier::new(8));
    let inside = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8u8)
        .map(|i| {
            let (state, start, inside) = (state.clone(), start.clone(), inside.clone());
            std::thread::spawn(move || {
                start.wait();
                let _lock = Registry::lock(&state).unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two writers");
                let mut reg = Registry::load(&state).unwrap();
                reg.insert(record(&format!("c{i}"), i)).unwrap();
                std::thread::yield_now();
                reg.save(&state).unwrap();
                inside.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(Registry::load(&state).unwrap().clusters().count(), 8);
    assert!(!state.join("clusters.toml.lock").exists(), "lock released");
}
