//! Shared state of the double: the pod store, its watch history and logs, the
//! request record and the audit log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

use super::{DoubleConfig, RecordedRequest, UserInfo};

/// A pod as the double stores it.
#[derive(Clone, Debug)]
pub(crate) struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: u64,
    pub created: SystemTime,
}

/// One change to the pod store, kept for watches that resume from an older
/// resourceVersion.
#[derive(Clone, Debug)]
pub(crate) struct WatchEvent {
    pub kind: String,
    pub pod: Pod,
}

/// A line appended to a pod log.
#[derive(Clone, Debug)]
pub(crate) struct LogLine {
    pub namespace: String,
    pub pod: String,
    /// Shared with the store: log lines can be large.
    pub text: Bytes,
}

/// The in-memory "etcd".
pub(crate) struct Store {
    pub pods: BTreeMap<(String, String), Pod>,
    /// Last resourceVersion handed out; increases on every change.
    pub resource_version: u64,
    /// Every change ever made, in order (the double never compacts).
    pub history: Vec<WatchEvent>,
    pub logs: HashMap<(String, String), Vec<Bytes>>,
}

/// State shared by the server tasks and the [`super::ApiServerDouble`] handle.
pub(crate) struct Shared {
    pub cfg: DoubleConfig,
    pub store: Mutex<Store>,
    /// Live watch events; sent while `store` is locked so that a watcher that
    /// snapshots the history under the same lock misses nothing.
    pub watch_tx: broadcast::Sender<WatchEvent>,
    /// Live log lines, sent while `store` is locked for the same reason.
    pub log_tx: broadcast::Sender<LogLine>,
    recorded: Mutex<Vec<RecordedRequest>>,
    audit: Mutex<Vec<serde_json::Value>>,
    /// Woken whenever a recorded request gets its status.
    recorded_changed: Notify,
    pub shutdown: CancellationToken,
    /// When the double started (the creation time of its namespaces).
    pub started: SystemTime,
}

/// Locks a mutex, ignoring poisoning: a panicking test task must not hide
/// the state from the rest of the test.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn new(cfg: DoubleConfig, shutdown: CancellationToken) -> Shared {
        let (watch_tx, _) = broadcast::channel(1024);
        let (log_tx, _) = broadcast::channel(1024);
        let mut store = Store {
            pods: BTreeMap::new(),
            resource_version: 0,
            history: Vec::new(),
            logs: HashMap::new(),
        };
        for spec in &cfg.pods {
            store.resource_version += 1;
            let pod = new_pod(&spec.namespace, &spec.name, store.resource_version);
            store.history.push(WatchEvent {
                kind: "ADDED".to_string(),
                pod: pod.clone(),
            });
            store
                .pods
                .insert((spec.namespace.clone(), spec.name.clone()), pod);
        }
        Shared {
            cfg,
            store: Mutex::new(store),
            watch_tx,
            log_tx,
            recorded: Mutex::new(Vec::new()),
            audit: Mutex::new(Vec::new()),
            recorded_changed: Notify::new(),
            shutdown,
            started: SystemTime::now(),
        }
    }

    /// Applies a watch event to the store and broadcasts it.
    pub fn emit(&self, kind: &str, namespace: &str, name: &str) -> Instant {
        let mut store = lock(&self.store);
        store.resource_version += 1;
        let rv = store.resource_version;
        let key = (namespace.to_string(), name.to_string());
        let pod = match kind {
            "DELETED" => {
                let mut pod = store
                    .pods
                    .remove(&key)
                    .unwrap_or_else(|| new_pod(namespace, name, rv));
                pod.resource_version = rv;
                pod
            }
            "MODIFIED" => {
                let pod = store
                    .pods
                    .entry(key)
                    .or_insert_with(|| new_pod(namespace, name, rv));
                pod.resource_version = rv;
                pod.clone()
            }
            _ => {
                let pod = new_pod(namespace, name, rv);
                store.pods.insert(key, pod.clone());
                pod
            }
        };
        let event = WatchEvent {
            kind: kind.to_string(),
            pod,
        };
        store.history.push(event.clone());
        let at = Instant::now();
        // No receivers is fine: nobody is watching.
        let _ = self.watch_tx.send(event);
        at
    }

    pub fn append_log(&self, namespace: &str, pod: &str, line: &str) {
        let mut text = line.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let text = Bytes::from(text);
        let mut store = lock(&self.store);
        store
            .logs
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push(text.clone());
        let _ = self.log_tx.send(LogLine {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            text,
        });
    }

    /// Records a new request and returns its index.
    pub fn record(&self, req: RecordedRequest) -> usize {
        let mut recorded = lock(&self.recorded);
        recorded.push(req);
        recorded.len() - 1
    }

    /// Sets the users of a recorded request.
    pub fn record_users(&self, idx: usize, authn: Option<UserInfo>, effective: Option<UserInfo>) {
        if let Some(r) = lock(&self.recorded).get_mut(idx) {
            r.authenticated_user = authn;
            r.user = effective;
        }
    }

    /// Sets the status of a recorded request and wakes `wait_for_request`.
    pub fn record_status(&self, idx: usize, status: u16) {
        if let Some(r) = lock(&self.recorded).get_mut(idx) {
            r.status = status;
        }
        self.recorded_changed.notify_waiters();
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recorded).clone()
    }

    pub fn push_audit(&self, event: serde_json::Value) {
        lock(&self.audit).push(event);
    }

    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        lock(&self.audit).clone()
    }

    pub async fn wait_for_request(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before checking, so a status set between the
            // check and the await still wakes us.
            let notified = self.recorded_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = lock(&self.recorded)
                .iter()
                .find(|r| r.status != 0 && pred(r))
            {
                return Some(found.clone());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

/// A new running pod with a fresh UID.
pub(crate) fn new_pod(namespace: &str, name: &str, rv: u64) -> Pod {
    Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: uuid::Uuid::new_v4().to_string(),
        resource_version: rv,
        created: SystemTime::now(),
    }
}
