//! Test harness: run the real `hawser` binary as hub and agents, talk to them over
//! real sockets, and wait on conditions instead of sleeping.

pub mod audit_log;
pub mod audit_receiver;
pub mod client;
pub mod identity;
pub mod kubectl;
pub mod procs;
pub mod relay;
pub mod stack;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `hawser` binary built by `cargo build` (the test script builds it first).
pub fn hawser_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HAWSER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/hawser");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hawser` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs the `hawser` CLI with `args`, asserting it succeeds; returns its stdout then
/// its stderr.
pub fn hawser_cli(args: &[&str]) -> String {
    let out = std::process::Command::new(hawser_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running hawser {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The credential id in `hawser credential issue` output ("issued credential ID ...").
pub fn issued_id(output: &str) -> String {
    output
        .split("issued credential ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or_else(|| panic!("no credential id in {output:?}"))
        .to_string()
}

/// Polls `check` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peak resident memory (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`, in
/// the kernel's clock ticks of 10 ms (USER_HZ is 100 on Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Current resident memory (VmRSS) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A TCP echo server on 127.0.0.1:0 that answers in upper case, so the direction
/// of each byte is visible (a port-forward target).
pub async fn upper_echo_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}
