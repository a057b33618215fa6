//! T2: the monitor on the lab, with its default thresholds (1 s probes, 2 s call timeout,
//! libvirt lost after 5 s). A unit of two tiny servers, one on each lab host, behind the lab's
//! HAProxy. An HAProxy restart and a libvirtd restart on host 2 (its guests keep running) make
//! no host failed; both hosts' libvirtd and HAProxy silenced at once (Flotilla cut off) freeze
//! the monitor and fail nothing; `tests/rig/lab kill-host 2` makes lab-h2 failed within 10 s (the detection
//! time is measured and printed) and fences its server (maintenance at HAProxy); `unit
//! recover` re-creates that server on host 1, where it answers through HAProxy; `revive-host
//! 2` brings host 2 back through returning — its stale copy of the server removed first — to
//! ready.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::model::HostState;
use flotilla::monitor::{MonitorEvent, Thresholds};
use flotilla::ops::units::{RecoveryHooks, UnitAction, UnitForm};
use flotilla_tests::{wait_host_state, Lab};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lab's web definition (`tests/fixtures/web-definition.toml`), its server named `mon`.
fn definition() -> String {
    flotilla_tests::web_definition("mon")
}

/// What the monitor reported, with when the test saw it.
type Seen = Mutex<Vec<(Instant, MonitorEvent)>>;

/// Transitions to `failed` among the events seen so far.
fn failures(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            MonitorEvent::Transition {
                host,
                to: HostState::Failed,
                why,
                ..
            } => Some(format!("{host}: {why}")),
            _ => None,
        })
        .collect()
}

fn pid_in(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

fn wait_gone(pid: &str) {
    let began = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{pid} did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the lab's HAProxy and starts it again as `tests/rig/lab up` does (it forgets the
/// members Flotilla added: a reconcile puts them back). Returns how long it was away.
fn restart_haproxy(lab: &Lab) -> Duration {
    let d = lab.dir().join("haproxy");
    let began = Instant::now();
    let pid = pid_in(&d.join("haproxy.pid"));
    assert!(Command::new("kill").arg(&pid).status().unwrap().success());
    wait_gone(&pid);
    let started = Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.get("FLOTILLA_LAB_NETNS"),
            "haproxy",
            "-f",
        ])
        .arg(d.join("haproxy.cfg"))
        .arg("-D")
        .arg("-p")
        .arg(d.join("haproxy.pid"))
        .status()
        .unwrap();
    assert!(started.success());
    let socket = lab.get("FLOTILLA_LAB_HAPROXY_SOCKET");
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "HAProxy did not come back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    began.elapsed()
}

/// Restarts only libvirtd of lab host `i`, as `systemctl restart libvirtd` would: its guests
/// (QEMU) and virtlogd keep running. The new libvirtd starts in the host's namespaces (those
/// of its virtlogd). Returns how long libvirt did not answer.
fn restart_libvirtd(lab: &Lab, i: u32) -> Duration {
    let run = lab.dir().join(format!("h{i}/run"));
    let began = Instant::now();
    let libvirtd = pid_in(&run.join("libvirtd.pid"));
    let virtlogd = pid_in(&run.join("virtlogd.pid"));
    assert!(Command::new("kill")
        .arg(&libvirtd)
        .status()
        .unwrap()
        .success());
    wait_gone(&libvirtd);
    let started = Command::new("nsenter")
        .args(["--target", &virtlogd, "--mount", "--uts", "--net", "--"])
        .args(["libvirtd", "-d", "-f", "/etc/libvirt/libvirtd.conf"])
        .args(["-p", "/run/libvirt/libvirtd.pid"])
        .status()
        .unwrap();
    assert!(started.success());
    loop {
        let up = Command::new("virsh")
            .args(["-q", "-c", &lab.host_uri(i), "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if up {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "libvirtd did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_killed_lab_host_is_failed_within_ten_seconds_and_restarts_fail_nothing() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = lab.tiny_unit_engine(dir.path(), "mon", &definition()).await;
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    e.unit_create(&UnitForm {
        name: "mon".into(),
        image: "tiny:1".into(),
        definition: "mon:2".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        count: 2,
        name_pattern: "mon-{n}".into(),
        addresses: "10.77.0.61-10.77.0.70".into(),
        lb: Some("lab".into()),
        lb_pool: Some(pool.clone()),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("mon", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap();
    let servers = e.unit_show("mon").unwrap().servers;
    let on_h2 = servers
        .iter()
        .find(|s| s.host == "lab-h2")
        .expect("a server on each host")
        .name
        .clone();
    assert!(servers.iter().any(|s| s.host == "lab-h1"));

    let thresholds = Thresholds::default();
    let limit = thresholds.worst_case_detection();
    assert!(limit <= Duration::from_secs(10), "{limit:?}");
    let seen: Seen = Mutex::new(Vec::new());
    let report = |ev: MonitorEvent| {
        eprintln!("{ev}");
        seen.lock().unwrap().push((Instant::now(), ev));
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hooks = RecoveryHooks::default();
    let monitor = e.monitor_run(thresholds, "test", &hooks, &report, async {
        let _ = stopped.await;
    });
    let script = async {
        let patience = Duration::from_secs(60);
        wait_host_state(&e, "lab-h1", HostState::Ready, patience).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;

        // An HAProxy restart: the witness is away (frozen meanwhile), then back without the
        // members Flotilla added (unknown until a reconcile): nothing fails.
        let away = lab.off_task(restart_haproxy).await;
        eprintln!("HAProxy was away for {} ms", away.as_millis());
        tokio::time::sleep(thresholds.lost_after()).await;
        e.lb_reconcile("lab").await.unwrap();
        tokio::time::sleep(thresholds.lost_after()).await;
        assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));
        wait_host_state(&e, "lab-h1", HostState::Ready, patience).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;

        // A libvirtd restart on host 2: its guests keep running, so HAProxy sees them up;
        // at worst partitioned, never failed.
        let away = lab.off_task(|lab| restart_libvirtd(lab, 2)).await;
        eprintln!("libvirtd of host 2 was away for {} ms", away.as_millis());
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));

        // Flotilla cut off from everything at once, as a laptop losing its network sees it:
        // both hosts' libvirtd and HAProxy stop answering (stopped, not killed). Frozen,
        // never failed; ready again once they answer.
        let dir = lab.dir();
        let silenced = [
            pid_in(&dir.join("h1/run/libvirtd.pid")),
            pid_in(&dir.join("h2/run/libvirtd.pid")),
            pid_in(&dir.join("haproxy/haproxy.pid")),
        ];
        let signal = |sig: &str| {
            for pid in &silenced {
                let sent = Command::new("kill").args([sig, pid]).status().unwrap();
                assert!(sent.success(), "kill {sig} {pid}");
            }
        };
        signal("-STOP");
        tokio::time::sleep(thresholds.lost_after() + Duration::from_secs(4)).await;
        let frozen = seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, ev)| matches!(ev, MonitorEvent::Frozen { .. }));
        let status = e.monitor_status().unwrap();
        signal("-CONT");
        assert!(frozen, "the monitor did not say it is frozen: {status:?}");
        assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));
        wait_host_state(&e, "lab-h1", HostState::Ready, patience).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        assert!(failures(&seen).is_empty(), "{:?}", failures(&seen));
        e.lb_reconcile("lab").await.unwrap();

        // The host dies: failed within the target.
        let killed = Instant::now();
        lab.off_task(|lab| lab.run(&["kill-host", "2"])).await;
        let failed =
            wait_host_state(&e, "lab-h2", HostState::Failed, Duration::from_secs(30)).await;
        let took = failed.duration_since(killed);
        eprintln!(
            "lab-h2 failed {} ms after kill-host (worst case with these thresholds: {} ms)",
            took.as_millis(),
            limit.as_millis()
        );
        assert!(took <= Duration::from_secs(10), "{took:?}");
        let h1 = e.host_show("lab-h1").unwrap();
        assert_eq!(h1.monitor.state, Some(HostState::Ready), "{:?}", h1.monitor);
        // Fenced at once: its server is in maintenance at HAProxy.
        let live = e.unit_live("mon").await.unwrap();
        let fenced = live.iter().find(|l| l.server == on_h2).unwrap();
        assert!(fenced.lb_status.contains("MAINT"), "{live:?}");

        // Recovery: the lost server is re-created on host 1 and answers there. The test
        // killed the host, so it confirms that it is off (the fence).
        let t = Instant::now();
        let r = e
            .unit_run(
                "mon",
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: vec!["lab-h2".into()],
                },
                Arc::new(|_| {}),
            )
            .await
            .unwrap_or_else(|err| panic!("recover: {err}"));
        eprintln!("recovered in {} ms: {r}", t.elapsed().as_millis());
        let servers = e.unit_show("mon").unwrap().servers;
        assert!(servers.iter().all(|s| s.host == "lab-h1"), "{servers:?}");
        for s in &servers {
            let page = lab.http_get(&format!("http://{}:8080/", s.address));
            assert_eq!(
                page.as_deref().map(str::trim),
                Some(s.name.as_str()),
                "{}",
                s.name
            );
        }

        // Back: returning, its stale copy of the server removed, then ready. The copy is
        // there when the host comes back: its libvirt keeps the definition on disk.
        let stale = lab.dir().join(format!("h2/etc/qemu/{on_h2}.xml"));
        assert!(stale.exists(), "{} is not left on lab-h2", stale.display());
        lab.off_task(|lab| lab.run(&["revive-host", "2"])).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        let domains = Command::new("virsh")
            .args(["-q", "-c", &lab.host_uri(2), "list", "--all", "--name"])
            .output()
            .unwrap();
        let domains = String::from_utf8_lossy(&domains.stdout).into_owned();
        assert!(
            !domains.contains(&on_h2) && !stale.exists(),
            "a stale copy is left on lab-h2: {domains}"
        );
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(monitor, script);
    ran.unwrap();

    let seen = seen.into_inner().unwrap();
    let h2: Vec<(Option<HostState>, HostState)> = seen
        .iter()
        .filter_map(|(_, ev)| match ev {
            MonitorEvent::Transition { host, from, to, .. } if host == "lab-h2" => {
                Some((*from, *to))
            }
            _ => None,
        })
        .collect();
    // Exactly one failure, and it went through returning before it was ready again.
    let failed_at = h2
        .iter()
        .position(|t| t.1 == HostState::Failed)
        .expect("failed");
    assert_eq!(
        h2.iter().filter(|t| t.1 == HostState::Failed).count(),
        1,
        "{h2:?}"
    );
    // From suspect, or from partitioned when HAProxy's checks were slower than the lost
    // window (it still saw the server up then), or straight from ready when the monitor was
    // frozen meanwhile (HAProxy slow to answer while the host died: seen here).
    assert!(
        matches!(
            h2[failed_at].0,
            Some(HostState::Suspect | HostState::Partitioned | HostState::Ready)
        ),
        "{h2:?}"
    );
    assert_eq!(
        &h2[failed_at + 1..],
        [
            (Some(HostState::Failed), HostState::Returning),
            (Some(HostState::Returning), HostState::Ready),
        ],
        "{h2:?}"
    );
    // And the reconcile is what removed the stale copy, before the host was ready.
    let ready_why = seen
        .iter()
        .rev()
        .find_map(|(_, ev)| match ev {
            MonitorEvent::Transition {
                host,
                to: HostState::Ready,
                why,
                ..
            } if host == "lab-h2" => Some(why.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        ready_why.contains(&format!("removed the stale copies of {on_h2}")),
        "{ready_why}"
    );

    e.unit_run("mon", UnitAction::Delete { force: false }, Arc::new(|_| {}))
        .await
        .unwrap();
}
