//! T2: a server never runs twice, on the lab (tiny guests, the lab's HAProxy, the monitor with
//! its default thresholds and the front doors' hooks). A unit of two servers, one on each lab
//! host. A thread watches the hosts themselves (QEMU processes and serial consoles, not
//! libvirt, which the test freezes) the whole time and keeps every moment a server ran on two
//! hosts: there must be none.
//!
//! 1. A hung libvirtd (SIGSTOP) on lab-h2 while its app refuses connections (HAProxy's check
//!    gets TCP resets): the guest's kernel answers, so lab-h2 is partitioned, never failed.
//! 2. A partition (`tests/rig/lab cut-host 2`: libvirtd frozen, the host's link to the lab's
//!    segment down, its guest running): lab-h2 is failed, its server fenced at HAProxy, and a
//!    recovery without a fence is refused with the reason.
//! 3. The partition heals (`heal-host 2`): lab-h2 comes back through returning, and its server,
//!    which ran all along, rejoins the pool after HAProxy's check — no reboot.
//! 4. Partitioned again with a BMC for lab-h2 (the lab's Redfish stand-in, whose ForceOff stops
//!    the host's processes): the recovery powers lab-h2 off first, then re-creates its server
//!    on lab-h1; after the heal the stale copy is removed and one MAC answers per address.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::model::HostState;
use flotilla::monitor::{MonitorEvent, Thresholds};
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla_tests::{wait_host_state, Lab};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lab's web definition (`tests/fixtures/web-definition.toml`), its server named `fence`.
fn definition() -> String {
    flotilla_tests::web_definition("fence")
}

/// What the monitor reported, with when the test saw it.
type Seen = Mutex<Vec<(Instant, MonitorEvent)>>;

/// One command on the lab HAProxy's runtime API.
fn haproxy(lab: &Lab, command: &str) -> String {
    let mut s =
        std::os::unix::net::UnixStream::connect(lab.get("FLOTILLA_LAB_HAPROXY_SOCKET")).unwrap();
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// HAProxy's status, check and what the check met for `server` (`show stat`).
fn lb_row(lab: &Lab, server: &str) -> String {
    let stat = haproxy(lab, "show stat");
    let mut lines = stat.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |n: &str| header.iter().position(|c| *c == n).unwrap();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&server))
        .map(|f| {
            format!(
                "{} {} {}",
                f[col("status")],
                f[col("check_status")],
                f[col("last_chk")]
            )
        })
        .unwrap_or_default()
}

async fn wait_lb(lab: &Lab, server: &str, want: &str, limit: Duration) {
    let began = Instant::now();
    loop {
        let row = lb_row(lab, server);
        if row.contains(want) {
            return;
        }
        assert!(
            began.elapsed() < limit,
            "HAProxy does not say {want:?} of {server}: {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn libvirtd(lab: &Lab, i: u32, signal: &str) {
    let pid = std::fs::read_to_string(lab.dir().join(format!("h{i}/run/libvirtd.pid"))).unwrap();
    let sent = std::process::Command::new("kill")
        .args([signal, pid.trim()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// The QEMU process of `server` on lab host `i`.
fn qemu_pid(lab: &Lab, i: u32, server: &str) -> String {
    std::fs::read_to_string(lab.dir().join(format!("h{i}/run/qemu/{server}.pid")))
        .unwrap()
        .trim()
        .to_owned()
}

fn transitions_to(seen: &Seen, host: &str, to: HostState) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            MonitorEvent::Transition {
                host: h,
                to: t,
                why,
                ..
            } if h == host && *t == to => Some(why.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_cut_off_host_is_never_taken_for_dead_and_its_servers_never_run_twice() {
    let mut lab = Lab::from_env();
    let ((bmc_url, bmc_system, bmc_user, bmc_password), bmc_started) = lab.bmc(2);
    let dir = tempfile::tempdir().unwrap();
    let e = lab
        .tiny_unit_engine(dir.path(), "fence", &definition())
        .await;
    e.keep_secrets_in_files();
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    e.unit_create(&UnitForm {
        name: "fence".into(),
        image: "tiny:1".into(),
        definition: "fence:2".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        count: 2,
        name_pattern: "fence-{n}".into(),
        addresses: "10.77.0.71-10.77.0.79".into(),
        lb: Some("lab".into()),
        lb_pool: Some(pool),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("fence", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap();
    let servers = e.unit_show("fence").unwrap().servers;
    let on_h2 = servers.iter().find(|s| s.host == "lab-h2").unwrap().clone();
    assert!(servers.iter().any(|s| s.host == "lab-h1"));
    let twice = lab.watch_twice(&[1, 2]);

    let thresholds = Thresholds::default();
    let seen: Seen = Mutex::new(Vec::new());
    let report = |ev: MonitorEvent| {
        eprintln!("{ev}");
        seen.lock().unwrap().push((Instant::now(), ev));
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let monitor = e.monitor_with_recovery(thresholds, "test", &report, async {
        let _ = stopped.await;
    });
    let script = async {
        let patience = Duration::from_secs(60);
        wait_host_state(&e, "lab-h1", HostState::Ready, patience).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;

        // 1. A hung libvirtd while the app refuses connections: HAProxy's checks of the
        //    server on lab-h2 go to a port nothing listens on (TCP resets from the guest).
        let name = &on_h2.name;
        haproxy(&lab, &format!("set server be_lab/{name} check-port 8099"));
        wait_lb(&lab, name, "L4CON Connection refused", patience).await;
        libvirtd(&lab, 2, "-STOP");
        tokio::time::sleep(thresholds.lost_after() + Duration::from_secs(5)).await;
        let h2 = e.host_show("lab-h2").unwrap();
        libvirtd(&lab, 2, "-CONT");
        assert_eq!(
            h2.monitor.state,
            Some(HostState::Partitioned),
            "{:?}",
            h2.monitor
        );
        assert!(
            h2.monitor.detail.contains("Connection refused")
                && h2.monitor.detail.contains("they run"),
            "{}",
            h2.monitor.detail
        );
        haproxy(&lab, &format!("set server be_lab/{name} check-port 8080"));
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        wait_lb(&lab, name, "UP", patience).await;
        assert!(
            transitions_to(&seen, "lab-h2", HostState::Failed).is_empty(),
            "a hung libvirtd with a refusing app was taken for a dead host"
        );

        // 2. A partition: failed (nothing answers), fenced at HAProxy; no recovery without a
        //    fence.
        let pid = qemu_pid(&lab, 2, name);
        let cut = Instant::now();
        lab.off_task(|lab| lab.run(&["cut-host", "2"])).await;
        let failed = wait_host_state(&e, "lab-h2", HostState::Failed, patience).await;
        eprintln!(
            "partition → failed in {} ms",
            failed.duration_since(cut).as_millis()
        );
        wait_lb(&lab, name, "MAINT", patience).await;
        let s = e.unit_show("fence").unwrap().servers;
        let s2 = s.iter().find(|s| s.name == *name).unwrap();
        assert!(
            s2.fenced.starts_with("fenced: lab-h2 was cut off at ")
                && s2
                    .fenced
                    .contains("back in rotation by itself once lab-h2 answers again"),
            "{}",
            s2.fenced
        );
        let plan = e
            .unit_plan(
                "fence",
                &UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: Vec::new(),
                },
            )
            .unwrap();
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.contains("this will not start")),
            "{plan:?}"
        );
        let err = e
            .unit_run(
                "fence",
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: Vec::new(),
                },
                Arc::new(|_| {}),
            )
            .await
            .unwrap_err();
        assert_eq!(
            flotilla::error::ApiError::from(&err).code,
            flotilla::error::ErrorCode::FenceNeeded,
            "{err}"
        );
        assert_eq!(e.unit_show("fence").unwrap().servers, s, "nothing moved");

        // 3. The partition heals: the server ran all along and rejoins without a reboot.
        let healed = Instant::now();
        lab.off_task(|lab| lab.run(&["heal-host", "2"])).await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        let began = Instant::now();
        loop {
            let s2 = e
                .unit_show("fence")
                .unwrap()
                .servers
                .into_iter()
                .find(|s| s.name == *name)
                .unwrap();
            if s2.lb_state == "ready" && s2.fenced_at.is_empty() {
                break;
            }
            assert!(began.elapsed() < patience, "{s2:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_lb(&lab, name, "UP", patience).await;
        eprintln!(
            "heal → back in rotation in {} ms",
            healed.elapsed().as_millis()
        );
        assert_eq!(qemu_pid(&lab, 2, name), pid, "the same QEMU: not recreated");
        let serial = lab.serial_text(2, name);
        assert_eq!(
            serial.matches("Linux version").count(),
            1,
            "booted once: {serial}"
        );
        let page = lab.http_get(&format!("http://{}:8080/", on_h2.address));
        assert_eq!(page.as_deref().map(str::trim), Some(name.as_str()));
        assert_eq!(lab.macs_answering(&on_h2.address).len(), 1);

        // 4. Partitioned again, now with a BMC for lab-h2 (the lab's Redfish stand-in, whose
        //    ForceOff stops the host's processes): the recovery needs nobody's confirmation —
        //    it powers lab-h2 off first, then re-creates the server on lab-h1.
        e.host_set_bmc(
            "lab-h2",
            Some(flotilla::ops::bmc::BmcInput {
                url: bmc_url.clone(),
                system: bmc_system.clone(),
                user: bmc_user.clone(),
                password: Some(flotilla::model::Secret::parse(&bmc_password).unwrap()),
                ca_pem: None,
            }),
        )
        .await
        .unwrap();
        let cut = Instant::now();
        lab.off_task(|lab| lab.run(&["cut-host", "2"])).await;
        let failed = wait_host_state(&e, "lab-h2", HostState::Failed, patience).await;
        let began = Instant::now();
        // When the fence step began and ended (its events, as the progress bars get them).
        let steps: Arc<Mutex<Vec<(Instant, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let seen_steps = steps.clone();
        let report = e
            .unit_run(
                "fence",
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: Vec::new(),
                },
                Arc::new(move |ev: flotilla::ops::units::StepEvent| {
                    seen_steps.lock().unwrap().push((
                        Instant::now(),
                        format!("{} {:?}", ev.step.as_str(), ev.status),
                    ));
                }),
            )
            .await
            .unwrap_or_else(|err| panic!("recover: {err}"));
        let recovered = Instant::now();
        let op = e
            .inventory
            .operation_list(5)
            .unwrap()
            .into_iter()
            .find(|o| o.id == report.operation)
            .unwrap();
        let fence = op
            .steps
            .iter()
            .find(|s| s.step == format!("{name}: fence") && s.status == "succeeded")
            .unwrap();
        assert_eq!(
            fence.detail,
            format!("BMC {bmc_url} system {bmc_system}: ForceOff, PowerState Off read back")
        );
        let steps = steps.lock().unwrap().clone();
        let at = |what: &str| {
            steps
                .iter()
                .find(|(_, s)| s == what)
                .map(|(t, _)| *t)
                .unwrap_or_else(|| panic!("no {what}: {steps:?}"))
        };
        eprintln!(
            "partition → failed {} ms; recovery: fence (BMC power-off) {} ms, in all {} ms",
            failed.duration_since(cut).as_millis(),
            at("fence Succeeded")
                .duration_since(at("fence Started"))
                .as_millis(),
            recovered.duration_since(began).as_millis()
        );
        let s2 = e
            .unit_show("fence")
            .unwrap()
            .servers
            .into_iter()
            .find(|s| s.name == *name)
            .unwrap();
        assert_eq!((s2.host.as_str(), s2.generation), ("lab-h1", 1));
        let page = lab.http_get(&format!("http://{}:8080/", on_h2.address));
        assert_eq!(page.as_deref().map(str::trim), Some(name.as_str()));
        // The partition heals and the host is powered on again: its stale copy goes before it
        // is ready, and one MAC answers for the address.
        lab.off_task(|lab| {
            lab.run(&["revive-host", "2"]);
            lab.run(&["heal-host", "2"]);
        })
        .await;
        wait_host_state(&e, "lab-h2", HostState::Ready, patience).await;
        assert_eq!(lab.macs_answering(&on_h2.address).len(), 1);
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(monitor, script);
    ran.unwrap();
    let (samples, ran_twice) = twice.end();
    // Removed before the verdict, so a failure leaves nothing behind for the next test.
    e.unit_run(
        "fence",
        UnitAction::Delete { force: false },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    if bmc_started {
        lab.run(&["bmc-down", "2"]);
    }
    assert!(samples > 100, "the watch sampled ({samples})");
    assert!(ran_twice.is_empty(), "{ran_twice:?}");
}

/// The isolation response on the lab's tiny guest (busybox: no Python, no systemd — the
/// per-boot script and the `ping` loop): a server cut off from its load balancer's address
/// powers itself off after its timeout, and says so on its console; one that can reach it
/// keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_cut_off_tiny_guest_powers_itself_off_after_its_isolation_timeout() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = lab
        .tiny_unit_engine(dir.path(), "alone", &definition())
        .await;
    let gateway = lab.get("FLOTILLA_LAB_GATEWAY").to_owned();
    e.unit_create(&UnitForm {
        name: "alone".into(),
        image: "tiny:1".into(),
        definition: "alone:2".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        servers: vec![
            flotilla::ops::units::ServerForm {
                name: "alone-1".into(),
                address: "10.77.0.81".into(),
                host: "lab-h1".into(),
            },
            flotilla::ops::units::ServerForm {
                name: "alone-2".into(),
                address: "10.77.0.82".into(),
                host: "lab-h2".into(),
            },
        ],
        policy: Some(flotilla::model::RolloutPolicy {
            isolation_timeout_s: 10,
            isolation_address: gateway.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("alone", UnitAction::Deploy, Arc::new(|_| {}))
        .await
        .unwrap();
    let began = Instant::now();
    while !lab
        .serial_text(2, "alone-2")
        .contains(&format!("flotilla-isolation: watching {gateway} (ping)"))
    {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "the watchdog did not start: {}",
            lab.serial_text(2, "alone-2")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Only lab-h2's link goes down (its libvirtd stays up: this is about the guest alone).
    lab.off_task(|lab| {
        std::process::Command::new("ip")
            .args([
                "-n",
                lab.get("FLOTILLA_LAB_NETNS"),
                "link",
                "set",
                "lab-h2",
                "down",
            ])
            .status()
            .unwrap()
    })
    .await;
    let cut = Instant::now();
    while lab.guests_running(2).contains("alone-2") {
        assert!(
            cut.elapsed() < Duration::from_secs(60),
            "alone-2 did not power itself off: {}",
            lab.serial_text(2, "alone-2")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let off = cut.elapsed();
    lab.run(&["heal-host", "2"]);
    let console = lab.serial_text(2, "alone-2");
    eprintln!("cut off → powered off in {} ms", off.as_millis());
    assert!(
        console.contains(&format!("flotilla-isolation: no answer from {gateway}")),
        "{console}"
    );
    assert!(
        off >= Duration::from_secs(10),
        "not before its timeout: {off:?}"
    );
    // The one that reaches its load balancer runs on.
    assert!(lab.guests_running(1).contains("alone-1"));
    let s = e.unit_show("alone").unwrap().servers;
    assert!(s.iter().all(|s| s.isolation_s == 10), "{s:?}");
    e.unit_run(
        "alone",
        UnitAction::Delete { force: false },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
}
