use super::*;

#[test]
fn token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let f = TokenFile {
        path: path.clone(),
        cached: Mutex::new(None),
    };
    assert_eq!(f.header().unwrap(), "Bearer first");
    // Rotation writes a new file (the kubelet swaps a symlink); size differs here
    // so the change is seen even within one mtime tick.
    std::fs::write(&path, "second-token\n").unwrap();
    assert_eq!(f.header().unwrap(), "Bearer second-token");
    std::fs::write(&path, "\n").unwrap();
    assert!(f.header().unwrap_err().to_string().contains("empty"));
}

#[test]
fn bearer_values_are_sensitive() {
    assert!(bearer("abc").unwrap().is_sensitive());
    assert!(bearer("").is_err());
}

fn kubeconfig(dir: &Path, user: &str) -> KubeconfigSource {
    let ca = base64::engine::general_purpose::STANDARD
        .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n{user}\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    KubeconfigSource {
        path,
        context: None,
    }
}

#[test]
fn kubeconfig_token_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca, client, cred) =
        from_kubeconfig(&kubeconfig(dir.path(), "    token: abc")).unwrap();
    assert_eq!(server, "https://127.0.0.1:6443");
    assert!(ca.contains("BEGIN CERTIFICATE"));
    assert!(client.is_none());
    assert!(matches!(&cred, Credential::Token(v) if v == "Bearer abc"));
    assert_eq!(format!("{cred:?}"), "Token(<redacted>)");

    std::fs::write(dir.path().join("t"), "from-file").unwrap();
    let (_, _, _, cred) = from_kubeconfig(&kubeconfig(dir.path(), "    tokenFile: t")).unwrap();
    assert!(matches!(cred, Credential::TokenFile(_)));

    let err = from_kubeconfig(&kubeconfig(dir.path(), "    exec: {command: x}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exec"), "{err}");
    let err = from_kubeconfig(&kubeconfig(dir.path(), "    username: x"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neither a token nor a client certificate"),
        "{err}"
    );
    let mut src = kubeconfig(dir.path(), "    token: abc");
    src.context = Some("missing".into());
    assert!(from_kubeconfig(&src)
        .unwrap_err()
        .to_string()
        .contains("no entry named `missing`"));
}
