//! Benchmark (not a test): what an SSH host costs in memory while Flotilla watches it, per
//! transport. Opens N hosts the way the running app holds them (a liveness probe on the probe
//! lane and a domain listing on the call lane: the monitor and the live view), then sums the
//! PSS (`/proc/PID/smaps_rollup`) of this process and of every process it started (the `ssh`
//! programs of `qemu+ssh://`). Baseline: the same process with no host opened.
//!
//! The N "hosts" are one lab host reached N times: each URI names its own copy of the lab key
//! (`keyfile=`), so each is a separate registration with its own connections, as N real hosts
//! would be. Needs the lab (`tests/rig/lab up`).
//! Run: cargo run --release -p flotilla-tests --bin bench-ssh-memory -- ssh|libssh2 N
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: a panic is the report

use std::time::Duration;

/// PSS in KiB of `pid`.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// This process's children (the ssh programs libvirt started), by their parent pid.
fn children(of: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The parent pid is the second field after the command's closing parenthesis.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(of) {
            out.push(pid);
        }
    }
    out
}

fn measure() -> (u64, u64, usize) {
    let me = std::process::id();
    let kids = children(me);
    (
        pss_kib(me),
        kids.iter().map(|&p| pss_kib(p)).sum(),
        kids.len(),
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let transport = args.first().map_or("ssh", String::as_str).to_owned();
    let n: usize = args.get(1).map_or(20, |v| v.parse().expect("N"));
    let lab = flotilla_tests::Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = flotilla::ops::Engine::open(dir.path(), "bench").unwrap();
    let base = lab
        .get("FLOTILLA_LAB_H1_SSH_URI")
        .replace("qemu+ssh://", &format!("qemu+{transport}://"));
    e.host_key_accept(&base, lab.get("FLOTILLA_LAB_H1_SSH_FINGERPRINT"))
        .await
        .unwrap();
    let key = std::fs::read(lab.get("FLOTILLA_LAB_SSH_KEY")).unwrap();
    let uris: Vec<flotilla::model::LibvirtUri> = (0..n)
        .map(|i| {
            let path = dir.path().join(format!("key{i}"));
            std::fs::write(&path, &key).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let (head, _) = base.split_once('?').unwrap_or((&base, ""));
            flotilla::model::LibvirtUri::parse(&format!("{head}?keyfile={}", path.display()))
                .unwrap()
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before_self, before_kids, _) = measure();
    for uri in &uris {
        e.hypervisor
            .probe(uri, Duration::from_secs(20))
            .await
            .unwrap();
        e.hypervisor.domain_names(uri).await.unwrap();
    }
    // Settle, then one more round on the open connections (what the monitor does each second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for uri in &uris {
        e.hypervisor
            .probe(uri, Duration::from_secs(20))
            .await
            .unwrap();
    }
    let (after_self, after_kids, kid_count) = measure();
    let total = (after_self + after_kids).saturating_sub(before_self + before_kids);
    println!("transport {transport}");
    println!("hosts {n}");
    println!("processes_started {kid_count}");
    println!("app_pss_kib_before {before_self}");
    println!("app_pss_kib_after {after_self}");
    println!("children_pss_kib {after_kids}");
    println!("added_kib_per_host {}", total / n as u64);
}
