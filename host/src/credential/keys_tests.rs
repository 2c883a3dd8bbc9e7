use super::*;
use crate::credential::testing::{claims, ISSUER};
use crate::credential::token::{sign, verify, CredentialError, TokenUse};

#[test]
fn first_use_creates_one_active_key_with_a_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    assert_eq!(keys.records().len(), 1);
    assert_eq!(keys.records()[0].state, KeyState::Active);
    let key_path = dir
        .path()
        .join(ISSUER_DIR)
        .join(key_file(keys.signing_key().kid()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // A second call loads the same key.
    let again = IssuerKeys::load_or_create(dir.path()).expect("load");
    assert_eq!(again.signing_key().kid(), keys.signing_key().kid());
    assert!(matches!(
        IssuerKeys::load(&dir.path().join("elsewhere")),
        Err(KeyError::Missing { .. })
    ));
}

#[test]
fn rotation_overlap_verifies_old_and_new_until_retire_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let mut keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let old_kid = keys.signing_key().kid().to_string();
    let mut c = claims(now, TokenUse::Access);
    c.exp += 24 * 3600;
    let old_token = sign(&c, keys.signing_key());

    let overlap = Duration::from_secs(3600);
    let new_kid = keys.rotate_at(overlap, now).expect("rotate");
    assert_ne!(new_kid, old_kid);
    let new_token = sign(&c, keys.signing_key());
    // The hub reloading the manifest sees the same thing as this copy.
    let loaded = IssuerKeys::load(dir.path()).expect("reload");
    assert_eq!(loaded.verifying_keys(), keys.verifying_keys());
    let set = loaded.verifying_keys();

    let during = now + Duration::from_secs(1800);
    assert!(verify(old_token.expose(), set, during, ISSUER).is_ok());
    assert!(verify(new_token.expose(), set, during, ISSUER).is_ok());
    let after = now + overlap + Duration::from_secs(1);
    assert_eq!(
        verify(old_token.expose(), set, after, ISSUER),
        Err(CredentialError::UnknownKey {
            kid: old_kid.clone()
        })
    );
    assert!(verify(new_token.expose(), set, after, ISSUER).is_ok());

    // Only the active key's private half stays on disk.
    assert!(!dir
        .path()
        .join(ISSUER_DIR)
        .join(key_file(&old_kid))
        .exists());
    assert!(dir
        .path()
        .join(ISSUER_DIR)
        .join(key_file(&new_kid))
        .exists());

    // The next rotation after the overlap marks the first key retired.
    keys.rotate_at(overlap, after).expect("rotate again");
    let states: Vec<KeyState> = keys.records().iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        [KeyState::Retired, KeyState::Retiring, KeyState::Active]
    );
    assert_eq!(keys.verifying_keys().len(), 2);
}

#[test]
fn exported_bundle_has_public_keys_only_and_loads_for_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let now = SystemTime::now();
    keys.rotate_at(Duration::from_secs(60), now)
        .expect("rotate");
    keys.rotate_at(Duration::from_secs(60), now + Duration::from_secs(120))
        .expect("rotate");
    let bundle = dir.path().join("trust.toml");
    keys.export_public(&bundle).expect("export");
    let text = std::fs::read_to_string(&bundle).expect("read");
    assert!(!text.contains("retired"));
    assert!(!text.contains("PRIVATE"));
    let loaded = VerifyingKeys::from_file(&bundle).expect("load bundle");
    assert_eq!(&loaded, keys.verifying_keys());
}

#[test]
fn tampered_manifests_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let manifest = IssuerKeys::manifest_path(dir.path());
    let text = std::fs::read_to_string(&manifest).expect("read");
    // A kid that does not belong to its public key.
    let other = crate::credential::testing::key().0;
    let swapped = text.replace(keys.signing_key().kid(), other.kid());
    std::fs::write(&manifest, swapped).expect("write");
    assert!(matches!(
        IssuerKeys::load(dir.path()),
        Err(KeyError::Invalid { .. })
    ));
    // No active key.
    std::fs::write(&manifest, text.replace("\"active\"", "\"retired\"")).expect("write");
    assert!(matches!(
        IssuerKeys::load(dir.path()),
        Err(KeyError::Invalid { .. })
    ));
    assert!(matches!(
        VerifyingKeys::from_file(&manifest),
        Err(KeyError::Invalid { .. })
    ));
    // An unknown field.
    std::fs::write(&manifest, format!("{text}\nsurprise = 1\n")).expect("write");
    assert!(matches!(
        IssuerKeys::load(dir.path()),
        Err(KeyError::Parse { .. })
    ));
}

#[test]
fn a_prepared_key_verifies_at_once_and_signs_only_after_the_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let mut keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let first = keys.signing_key().kid().to_string();

    let (next, made) = keys.prepare_next_at(now).expect("prepare");
    assert!(made);
    assert_ne!(next, first);
    // It verifies (hub and exported bundle alike) but does not sign yet.
    assert_eq!(keys.signing_key().kid(), first);
    assert_eq!(keys.next_key().map(|k| k.kid.as_str()), Some(next.as_str()));
    let bundle = dir.path().join("trust.toml");
    keys.export_public(&bundle).expect("export");
    let agent = VerifyingKeys::from_file(&bundle).expect("load bundle");
    assert_eq!(agent.len(), 2);
    assert_eq!(&agent, keys.verifying_keys());
    // Preparing again keeps the prepared key.
    assert_eq!(
        keys.prepare_next_at(now).expect("again"),
        (next.clone(), false)
    );
    assert_eq!(
        IssuerKeys::load(dir.path())
            .expect("reload")
            .records()
            .len(),
        2
    );

    // The rotation makes exactly that key sign: a bundle exported before it already
    // verifies what is signed after it.
    let c = claims(now, TokenUse::Access);
    assert_eq!(
        keys.rotate_at(Duration::from_secs(3600), now)
            .expect("rotate"),
        next
    );
    assert_eq!(keys.signing_key().kid(), next);
    assert!(keys.next_key().is_none());
    let token = sign(&c, keys.signing_key());
    assert!(verify(token.expose(), &agent, now, ISSUER).is_ok());
    // The first key retires as in any rotation; its private half is gone.
    let states: Vec<KeyState> = keys.records().iter().map(|r| r.state).collect();
    assert_eq!(states, [KeyState::Retiring, KeyState::Active]);
    assert!(!dir.path().join(ISSUER_DIR).join(key_file(&first)).exists());

    // Without a prepared key a rotation makes a new one, as before.
    let third = keys
        .rotate_at(Duration::from_secs(60), now)
        .expect("rotate");
    assert!(third != next && third != first);
}

#[test]
fn two_next_keys_or_a_next_key_without_its_private_half_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let (next, _) = keys.prepare_next().expect("prepare");
    let manifest = IssuerKeys::manifest_path(dir.path());
    let text = std::fs::read_to_string(&manifest).expect("read");

    let mut records = keys.records().to_vec();
    let (other, _) = SigningKey::generate().expect("generate");
    records.push(KeyRecord {
        kid: other.kid().to_string(),
        public_key: other.public_key(),
        created_at: whole_seconds(SystemTime::now()),
        state: KeyState::Next,
        retire_after: None,
    });
    std::fs::write(&manifest, render(MANIFEST_HEADER, &records)).expect("write");
    match IssuerKeys::load(dir.path()) {
        Err(KeyError::Invalid { reason, .. }) => {
            assert!(reason.contains("at most one key may be next"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    std::fs::write(&manifest, &text).expect("write");
    std::fs::remove_file(dir.path().join(ISSUER_DIR).join(key_file(&next))).expect("rm");
    // The hub still loads (the prepared key only verifies), but the rotation that
    // would make it sign fails and changes nothing.
    let mut keys = IssuerKeys::load(dir.path()).expect("load");
    assert!(matches!(
        keys.rotate(Duration::from_secs(60)),
        Err(KeyError::Read { .. })
    ));
    assert_eq!(std::fs::read_to_string(&manifest).expect("read"), text);
}

#[test]
fn a_withdrawn_key_stops_verifying_and_never_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now();
    let mut keys = IssuerKeys::load_or_create(dir.path()).expect("create");
    let first = keys.signing_key().kid().to_string();
    // Nothing prepared: nothing to withdraw, and the manifest is left alone.
    let manifest = IssuerKeys::manifest_path(dir.path());
    let before = std::fs::read_to_string(&manifest).expect("read");
    assert_eq!(keys.withdraw_next().expect("withdraw"), None);
    assert_eq!(std::fs::read_to_string(&manifest).expect("read"), before);

    let (next, _) = keys.prepare_next_at(now).expect("prepare");
    assert_eq!(keys.verifying_keys().len(), 2);
    assert_eq!(keys.withdraw_next().expect("withdraw"), Some(next.clone()));
    // Retired, its private half gone, the active key unchanged; as the file says.
    assert_eq!(keys.signing_key().kid(), first);
    assert!(keys.next_key().is_none());
    assert_eq!(keys.verifying_keys().len(), 1);
    assert!(!dir.path().join(ISSUER_DIR).join(key_file(&next)).exists());
    let reloaded = IssuerKeys::load(dir.path()).expect("reload");
    let states: Vec<(String, KeyState)> = reloaded
        .records()
        .iter()
        .map(|r| (r.kid.clone(), r.state))
        .collect();
    assert_eq!(
        states,
        [(first.clone(), KeyState::Active), (next, KeyState::Retired)]
    );

    // The next rotation makes a new key, not the withdrawn one.
    let third = keys
        .rotate_at(Duration::from_secs(60), now)
        .expect("rotate");
    assert!(third != first && !reloaded.records().iter().any(|r| r.kid == third));
}
