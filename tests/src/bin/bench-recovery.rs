//! Benchmark (not a test, needs the lab): host failure on the lab. A unit of two tiny servers
//! behind the lab's HAProxy, both on one host; the monitor runs (default thresholds, fencing
//! and reconcile). Each round kills the host that holds the servers (`tests/rig/lab
//! kill-host`), measures the time until the monitor says *failed*, runs `unit recover` and
//! measures the time until it returns (both servers re-created on the other host, healthy and
//! back in rotation), revives the host and waits until it is ready (its stale copies removed).
//! The baseline, side by side: the raw boot of the same two servers — `virsh start` of their
//! domains, shut off, until each answers its health URL.
//! Run (lab up, as root): cargo run --release -p flotilla-tests --bin bench-recovery -- 3
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: a panic is the report

use flotilla::model::HostState;
use flotilla::monitor::Thresholds;
use flotilla::ops::units::{RecoveryHooks, UnitAction, UnitForm};
use flotilla::ops::Engine;
use flotilla_tests::Lab;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The lab's web definition (`tests/fixtures/web-definition.toml`), its server named `rec`.
fn definition() -> String {
    flotilla_tests::web_definition("rec")
}

async fn wait_state(e: &Engine, host: &str, state: HostState) -> Instant {
    let began = Instant::now();
    loop {
        if e.host_show(host).unwrap().monitor.state == Some(state) {
            return Instant::now();
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{host} never {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(3, |a| a.parse().expect("ROUNDS"));
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = lab.tiny_unit_engine(dir.path(), "rec", &definition()).await;
    e.unit_create(&UnitForm {
        name: "rec".into(),
        image: "tiny:1".into(),
        definition: "rec:2".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        count: 2,
        name_pattern: "rec-{n}".into(),
        addresses: "10.77.0.71-10.77.0.80".into(),
        hosts: vec!["lab-h2".into()],
        lb: Some("lab".into()),
        lb_pool: Some(lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned()),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("rec", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hooks = RecoveryHooks::default();
    let report = |_| {};
    let monitor = e.monitor_run(Thresholds::default(), "bench", &hooks, &report, async {
        let _ = stopped.await;
    });
    let script = async {
        let (mut detect, mut recover) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let on = e.unit_show("rec").unwrap().servers[0].host.clone();
            let n: u32 = on.trim_start_matches("lab-h").parse().unwrap();
            wait_state(&e, "lab-h1", HostState::Ready).await;
            wait_state(&e, "lab-h2", HostState::Ready).await;
            let killed = Instant::now();
            lab.run(&["kill-host", &n.to_string()]);
            let failed = wait_state(&e, &on, HostState::Failed).await;
            detect.push(failed - killed);
            let t = Instant::now();
            e.unit_run(
                "rec",
                // The bench killed the host: it confirms the host is off.
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: vec![on.clone()],
                },
                Arc::new(|_| {}),
            )
            .await
            .unwrap();
            recover.push(t.elapsed());
            eprintln!(
                "round {}: {on} failed after {}, recovered in {}",
                round + 1,
                secs(failed - killed),
                secs(t.elapsed())
            );
            lab.run(&["revive-host", &n.to_string()]);
        }
        wait_state(&e, "lab-h1", HostState::Ready).await;
        wait_state(&e, "lab-h2", HostState::Ready).await;
        // The baseline: the same two servers, shut off, started by hand with virsh.
        let u = e.unit_show("rec").unwrap();
        e.unit_run(
            "rec",
            UnitAction::Stop {
                servers: vec![],
                force: true,
            },
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        let t = Instant::now();
        for s in &u.servers {
            let n = s.host.trim_start_matches("lab-h");
            let ok = Command::new("virsh")
                .args([
                    "-q",
                    "-c",
                    &lab.host_uri(n.parse().unwrap()),
                    "start",
                    &s.name,
                ])
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        for s in &u.servers {
            while lab
                .http_get(&format!("http://{}:8080/health", s.address))
                .is_none_or(|b| b.trim() != "ok")
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let raw = t.elapsed();
        stop.send(()).unwrap();
        (detect, recover, raw)
    };
    let (ran, (detect, recover, raw)) = tokio::join!(monitor, script);
    ran.unwrap();
    e.unit_run("rec", UnitAction::Delete { force: true }, Arc::new(|_| {}))
        .await
        .unwrap();
    let all = |v: &[Duration]| v.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", ");
    println!("| what | median | runs |");
    println!("|---|---|---|");
    println!(
        "| host killed → *failed* (worst case with these thresholds: {}) | {} | {} |",
        secs(Thresholds::default().worst_case_detection()),
        secs(median(detect.clone())),
        all(&detect)
    );
    println!(
        "| `unit recover` of 2 servers → both healthy and in rotation on the other host | {} | {} |",
        secs(median(recover.clone())),
        all(&recover)
    );
    println!(
        "| baseline: `virsh start` of the same 2 servers → both answer their health URL | {} | 1 |",
        secs(raw)
    );
}
