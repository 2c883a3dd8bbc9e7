//! Native tests of the revocation file: read at init, re-read on change at most once
//! per interval, fail closed when it is missing or broken.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hawser_plugin_sdk::testing::request;
use ring::signature::KeyPair;
use serde_json::{json, Value};

use crate::tests::{at, claims, kid, pair, sign, unauthorized, with, JTI, NOW, RID};
use crate::*;

/// A `revoked.toml` as `hawser credential revoke` writes it.
fn list(ids: &[&str]) -> String {
    let mut text = String::from("# Revoked Hawser credentials.\n");
    for id in ids {
        text.push_str(&format!(
            "\n[[revoked]]\nid = \"{id}\"\nrevoked_at = \"2023-11-14T22:13:20Z\"\nexpires_at = \"2023-12-14T22:13:20Z\"\n"
        ));
    }
    text
}

/// Replaces the file by rename, as the hub does.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The stage config with key `pair(1)` and `extra` keys.
fn config(extra: Value) -> Value {
    let k = pair(1);
    let mut cfg = json!({
        "issuer": "hawser-hub",
        "keys": { kid(&k): STANDARD.encode(k.public_key().as_ref()) },
    });
    for (name, v) in extra.as_object().unwrap() {
        cfg[name] = v.clone();
    }
    cfg
}

fn plugin_at(file: &Path, extra: Value, now: u64) -> Result<JwtCredential, String> {
    let mut cfg = config(json!({"revocations_file": file.display().to_string()}));
    for (name, v) in extra.as_object().unwrap() {
        cfg[name] = v.clone();
    }
    JwtCredential::init_at(&Config::from_json(cfg.to_string()), at(now))
}

fn check_at(p: &JwtCredential, token: &str, now: u64) -> Result<Option<Principal>, Denial> {
    p.check_at(
        &request("/api", &[("authorization", &format!("Bearer {token}"))]),
        at(now),
    )
}

struct Tokens {
    plain: String,
    /// Minted by the refresh endpoint from refresh credential `RID`.
    minted: String,
    other: String,
}

fn tokens() -> Tokens {
    let k = pair(1);
    Tokens {
        plain: sign(&claims(), &k),
        minted: sign(
            &with(
                with(
                    claims(),
                    "jti",
                    json!("99999999-8888-7777-6666-555555555555"),
                ),
                "rid",
                json!(RID),
            ),
            &k,
        ),
        other: sign(
            &with(
                claims(),
                "jti",
                json!("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
            ),
            &k,
        ),
    }
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revoked.toml");
    (dir, file)
}

#[test]
fn a_fresh_instance_reads_the_file_at_init() {
    let (_dir, file) = setup();
    write(&file, &list(&[&JTI.to_uppercase(), RID]));
    let p = plugin_at(&file, json!({}), NOW).unwrap();
    let t = tokens();
    assert_eq!(check_at(&p, &t.plain, NOW), unauthorized());
    assert_eq!(check_at(&p, &t.minted, NOW), unauthorized());
    assert!(check_at(&p, &t.other, NOW).unwrap().is_some());
}

#[test]
fn a_reused_instance_sees_a_new_revocation_within_the_interval_not_sooner() {
    let (_dir, file) = setup();
    write(&file, &list(&[]));
    let p = plugin_at(&file, json!({"revocations_check_interval": "2s"}), NOW).unwrap();
    let t = tokens();
    assert!(check_at(&p, &t.minted, NOW).unwrap().is_some());
    write(&file, &list(&[RID]));
    // Looked at during init (NOW): the next look is due at NOW + 2s.
    assert!(check_at(&p, &t.minted, NOW + 1).unwrap().is_some());
    assert_eq!(check_at(&p, &t.minted, NOW + 2), unauthorized());
    assert!(check_at(&p, &t.plain, NOW + 2).unwrap().is_some());
    // A clock that went back looks again instead of waiting.
    write(&file, &list(&[RID, JTI]));
    assert_eq!(check_at(&p, &t.plain, NOW), unauthorized());
}

#[test]
fn a_zero_interval_looks_on_every_request() {
    let (_dir, file) = setup();
    write(&file, &list(&[]));
    let p = plugin_at(&file, json!({"revocations_check_interval": "0s"}), NOW).unwrap();
    let t = tokens();
    assert!(check_at(&p, &t.plain, NOW).unwrap().is_some());
    write(&file, &list(&[JTI]));
    assert_eq!(check_at(&p, &t.plain, NOW), unauthorized());
}

#[test]
fn a_missing_file_refuses_everyone_unless_configured_as_empty() {
    let (_dir, file) = setup();
    let t = tokens();
    let strict = plugin_at(&file, json!({"revocations_check_interval": "1s"}), NOW).unwrap();
    assert_eq!(check_at(&strict, &t.other, NOW), unauthorized());
    let lenient = plugin_at(
        &file,
        json!({"revocations_check_interval": "1s", "revocations_if_missing": "none-revoked"}),
        NOW,
    )
    .unwrap();
    assert!(check_at(&lenient, &t.other, NOW).unwrap().is_some());
    // The file appears: both follow it from their next look.
    write(&file, &list(&[JTI]));
    for p in [&strict, &lenient] {
        assert!(check_at(p, &t.other, NOW + 1).unwrap().is_some());
        assert_eq!(check_at(p, &t.plain, NOW + 1), unauthorized());
    }
    // It disappears again: the strict one refuses everyone.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(check_at(&strict, &t.other, NOW + 2), unauthorized());
    assert!(check_at(&lenient, &t.other, NOW + 2).unwrap().is_some());
}

#[test]
fn a_broken_file_keeps_the_last_good_list_and_a_fresh_instance_refuses() {
    let (_dir, file) = setup();
    write(&file, &list(&[JTI]));
    let p = plugin_at(&file, json!({}), NOW).unwrap();
    let t = tokens();
    write(&file, "revoked = 3\n");
    assert_eq!(check_at(&p, &t.plain, NOW + 1), unauthorized());
    assert!(check_at(&p, &t.other, NOW + 1).unwrap().is_some());
    let fresh = plugin_at(&file, json!({}), NOW + 1).unwrap();
    assert_eq!(check_at(&fresh, &t.other, NOW + 1), unauthorized());
    write(&file, &list(&["not-a-uuid"]));
    assert_eq!(check_at(&fresh, &t.other, NOW + 2), unauthorized());
    // Fixed: the next look reads it.
    write(&file, &list(&[]));
    assert!(check_at(&fresh, &t.other, NOW + 3).unwrap().is_some());
    assert!(check_at(&p, &t.plain, NOW + 3).unwrap().is_some());
}

#[test]
fn file_settings_are_validated() {
    let (_dir, file) = setup();
    let refused = [
        (json!({"revocations_file": "revoked.toml"}), "absolute"),
        (json!({"revocations_check_interval": "2h"}), "at most"),
        (json!({"revocations_check_interval": "soon"}), "interval"),
        (json!({"revocations_if_missing": "allow"}), "if_missing"),
    ];
    for (extra, want) in refused {
        let err = plugin_at(&file, extra.clone(), NOW).err().unwrap();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let cfg = config(json!({"revocations_check_interval": "1s"}));
    let err = JwtCredential::init_at(&Config::from_json(cfg.to_string()), at(NOW))
        .err()
        .unwrap();
    assert!(err.contains("need revocations_file"), "{err}");
}

#[test]
fn the_files_the_hub_writes_parse_and_anything_else_is_refused() {
    use crate::revocations::parse;
    // As `RevocationList::save` writes an empty and a full list.
    let empty = "# Revoked Hawser credentials.\n\nrevoked = []\n";
    assert!(parse(empty).unwrap().is_empty());
    let full = parse(&list(&[&JTI.to_uppercase(), RID])).unwrap();
    assert_eq!(
        full.into_iter().collect::<Vec<_>>(),
        [RID.to_string(), JTI.to_string()]
    );
    let ok = format!("[[revoked]] \nid = '{JTI}' # comment\n");
    assert!(parse(&ok).unwrap().contains(JTI));
    for bad in [
        "revoked = 3\n".to_string(),
        "[[revoked]]\nrevoked_at = \"2023-11-14T22:13:20Z\"\n".to_string(),
        format!("[[revoked]]\nid = \"{JTI}\"\nid = \"{RID}\"\n"),
        format!("[[revoked]]\nid = \"{JTI}\"\nreason = \"x\"\n"),
        format!("[[revoked]]\nid = \"{JTI}\" trailing\n"),
        format!("[[revoked]]\nid = \"{JTI}\n"),
        format!("id = \"{JTI}\"\n"),
        "[[revoked]]\nid = \"not-a-uuid\"\n".to_string(),
        "[revoked]\n".to_string(),
    ] {
        assert!(parse(&bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn a_rewrite_with_the_same_size_and_time_is_still_seen() {
    // One entry replaced by another of the same length, and a filesystem whose
    // timestamps did not tick: only the racy-stamp rule notices.
    let (_dir, file) = setup();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(NOW);
    let stamp = |f: &Path| {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_modified(mtime)
            .unwrap()
    };
    write(&file, &list(&[RID]));
    stamp(&file);
    let p = plugin_at(&file, json!({"revocations_check_interval": "1s"}), NOW).unwrap();
    let t = tokens();
    assert!(check_at(&p, &t.plain, NOW).unwrap().is_some());
    let before = std::fs::metadata(&file).unwrap().len();
    write(&file, &list(&[JTI]));
    stamp(&file);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), before, "same size");
    assert_eq!(check_at(&p, &t.plain, NOW + 1), unauthorized());
}
