//! T2 (slow: the real Debian cloud image, two boots): the isolation response on a stock
//! cloud-init guest. A one-server unit on lab-h2 with an isolation timeout of 20 s (its guests
//! check the lab's HAProxy, 10.77.0.1:80) and automatic recovery allowed. lab-h2 is cut off
//! (`tests/rig/lab cut-host 2`: libvirtd frozen, its link down; the guest runs on). The
//! monitor finds lab-h2 failed; the automatic recovery has no BMC to power it off and no
//! confirmation, so it waits out the guest's isolation time; the guest powers itself off
//! (its serial console says so) *before* its new copy starts on lab-h1 — a thread watching the
//! hosts themselves never sees the server run on both. The partition heals: the stale copy is
//! removed, and the address answers from one MAC. Times are printed.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::model::{HostState, RolloutPolicy, ServerSize};
use flotilla::monitor::{MonitorEvent, Thresholds};
use flotilla::ops::units::{ServerForm, UnitAction, UnitForm};
use flotilla_tests::{wait_host_state, Lab};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFINITION: &str = r#"
[server]
name = "isolated"
kind = "python http.server"
port = 8080

[health]
path = "/health"
interval_s = 2
timeout_s = 1
rise = 1
fall = 2

[hooks]
install = "mkdir -p /srv/www && hostname > /srv/www/index.html && echo ok > /srv/www/health"
start = "cd /srv/www && setsid nohup python3 -m http.server 8080 > /dev/null 2>&1 &"
stop = "pkill -f http.server || true"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh (builds a real cloud-init image)"]
async fn a_cut_off_cloud_guest_powers_itself_off_before_its_new_copy_starts() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = lab.unit_engine(dir.path()).await;
    lab.import_cloud_image(&e, "debian-isolated").await;
    e.def_create("isolated").unwrap();
    e.def_set_text("isolated", DEFINITION, None).unwrap();
    let gateway = lab.get("FLOTILLA_LAB_GATEWAY").to_owned();
    e.unit_create(&UnitForm {
        name: "isolated".into(),
        image: "debian-isolated:1".into(),
        definition: "isolated:2".into(),
        size: Some(ServerSize {
            cpus: 1,
            memory_mib: 512,
            disk_gib: 0,
        }),
        servers: vec![ServerForm {
            name: "isolated-1".into(),
            address: "10.77.0.45".into(),
            host: "lab-h2".into(),
        }],
        lb: Some("lab".into()),
        lb_pool: Some(lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned()),
        policy: Some(RolloutPolicy {
            health_timeout_s: 300,
            auto_recover_per_day: 1,
            isolation_timeout_s: 20,
            isolation_address: format!("{gateway}:80"),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("isolated", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap_or_else(|err| panic!("deploy: {err}\n{}", lab.serial_text(2, "isolated-1")));
    let s = e.unit_show("isolated").unwrap().servers[0].clone();
    assert_eq!((s.host.as_str(), s.isolation_s), ("lab-h2", 20));
    // The watchdog runs in the guest (started by systemd, saying so on the console).
    let began = Instant::now();
    while !lab
        .serial_text(2, "isolated-1")
        .contains("flotilla-isolation: watching 10.77.0.1:80")
    {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the watchdog did not start: {}",
            lab.serial_text(2, "isolated-1")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let seen: Mutex<Vec<(Instant, MonitorEvent)>> = Mutex::new(Vec::new());
    let report = |ev: MonitorEvent| {
        eprintln!("{ev}");
        seen.lock().unwrap().push((Instant::now(), ev));
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = e.monitor_with_recovery(Thresholds::default(), "test", &report, async {
        let _ = stopped.await;
    });
    let twice = lab.watch_twice(&[1, 2]);
    let script = async {
        let patience = Duration::from_secs(60);
        wait_host_state(&e, "lab-h1", HostState::Ready, patience).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        let cut = Instant::now();
        lab.off_task(|lab| lab.run(&["cut-host", "2"])).await;
        let failed = wait_host_state(&e, "lab-h2", HostState::Failed, patience).await;
        // The guest powers itself off: seen on the host (its console), libvirtd is frozen.
        let began = Instant::now();
        while lab.guests_running(2).contains("isolated-1") {
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "the guest did not power itself off: {}",
                lab.serial_text(2, "isolated-1")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let off = Instant::now();
        let console = lab.serial_text(2, "isolated-1");
        assert!(
            console.contains("flotilla-isolation: no answer from 10.77.0.1:80"),
            "{console}"
        );
        // The automatic recovery waited for it, then re-created the server on lab-h1.
        let began = Instant::now();
        loop {
            let s = e.unit_show("isolated").unwrap().servers[0].clone();
            if s.host == "lab-h1" && s.lb_state == "ready" {
                break;
            }
            assert!(
                began.elapsed() < Duration::from_secs(420),
                "not recovered onto lab-h1: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let recovered = Instant::now();
        eprintln!(
            "partition → failed {} ms, → guest off {} ms, → recovered on lab-h1 {} ms",
            failed.duration_since(cut).as_millis(),
            off.duration_since(cut).as_millis(),
            recovered.duration_since(cut).as_millis()
        );
        let page = lab.http_get("http://10.77.0.45:8080/");
        assert_eq!(page.as_deref().map(str::trim), Some("isolated-1"));
        // Recorded in the journal: the fence step said what it relied on.
        let op = e
            .inventory
            .operation_list(10)
            .unwrap()
            .into_iter()
            .find(|o| o.kind == "recover")
            .unwrap();
        let fence = op
            .steps
            .iter()
            .find(|s| s.step == "isolated-1: fence" && s.status == "succeeded")
            .unwrap();
        assert!(
            fence.detail.contains("powered itself off 20 s after"),
            "{}",
            fence.detail
        );
        // The partition heals: the stale copy goes, one MAC answers for the address.
        lab.off_task(|lab| lab.run(&["heal-host", "2"])).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, Duration::from_secs(120)).await;
        assert_eq!(lab.macs_answering("10.77.0.45").len(), 1);
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(monitor, script);
    ran.unwrap();
    let (samples, ran_twice) = twice.end();
    // Removed before the verdict, so a failure leaves nothing behind for the next test.
    e.unit_run(
        "isolated",
        UnitAction::Delete { force: false },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    assert!(samples > 100, "the watch sampled ({samples})");
    assert!(ran_twice.is_empty(), "{ran_twice:?}");
    let auto: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, ev)| match ev {
            MonitorEvent::AutoRecovery { ok, what, .. } => Some(format!("{ok}: {what}")),
            _ => None,
        })
        .collect();
    assert!(auto.iter().any(|a| a.starts_with("true")), "{auto:?}");
}
