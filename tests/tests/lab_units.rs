//! T2: a 4-server unit across the two lab hosts behind the lab's HAProxy, through the engine:
//! deploy (requests through HAProxy reach all four; their hostnames appear), reconcile after
//! HAProxy lost members, stop and start, scale 4 → 6 → 3, delete (hosts and HAProxy exactly as
//! before). The generated domain XML passes libvirt's own `virt-xml-validate`. The payload is
//! mounted for root only, at the first boot and at later ones. And a
//! `flotillactl unit deploy` killed with SIGKILL mid-way is found interrupted, then unwound
//! (the lab as before) or resumed (the unit serves).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::lb::haproxy::{Endpoint, HaproxyRuntime};
use flotilla::lb::LoadBalancer;
use flotilla::model::RolloutPolicy;
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::{UnitAction, UnitForm, UnitUpdate};
use flotilla::ops::Engine;
use flotilla_tests::Lab;
use std::collections::BTreeSet;
use std::sync::Arc;

const DEFINITION: &str = r#"
[server]
name = "web"
kind = "busybox httpd"
port = 8080

[health]
path = "/health"
interval_s = 1
timeout_s = 1
rise = 1
fall = 2

[hooks]
install = "mkdir -p /srv/www && hostname > /srv/www/index.html && echo ok > /srv/www/health"
# An unprivileged user's view of the payload (its definition holds the [env] values):
# after each mount (the seed's runcmd, the per-boot script), before the app starts. The
# tiny guest has only root: the hook adds user 65534.
start = "grep -q ^nobody: /etc/passwd || echo nobody:x:65534:65534::/:/bin/sh >> /etc/passwd; as_nobody() { start-stop-daemon -S -c 65534:65534 -n flotilla-nobody -a /bin/cat -- $1 >/dev/null 2>&1; }; if ! as_nobody /etc/flotilla-master-version; then echo cannot-test; elif as_nobody $FLOTILLA_PAYLOAD/definition.toml; then echo readable; else echo private; fi > /srv/www/payload.txt; busybox httpd -p 8080 -h /srv/www"
stop = "true"

[[config]]
path = "/srv/www/conf.txt"
template = "{{ hostname }} {{ address }} {{ unit }} v{{ unit_version }}"
"#;

/// What the hosts and HAProxy hold: domains, volumes, members of the backend.
async fn world(lab: &Lab, e: &Engine, pool: &str) -> String {
    let mut out = String::new();
    for h in e.host_list().unwrap() {
        let mut d = e.hypervisor.domain_names(&h.uri).await.unwrap();
        d.sort();
        let mut v: Vec<String> = e
            .hypervisor
            .volume_list(&h.uri, &h.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        v.sort();
        out.push_str(&format!("{}: domains {d:?} volumes {v:?}\n", h.name));
    }
    let lb = HaproxyRuntime::new(Endpoint::Unix(
        lab.get("FLOTILLA_LAB_HAPROXY_SOCKET").into(),
    ));
    let mut m: Vec<String> = lb
        .members(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    m.sort();
    out.push_str(&format!("members {m:?}\n"));
    out
}

/// Hostnames answering through HAProxy's frontend, asking up to `tries` times (fewer once
/// `expect` servers answered). New members ramp up their weight (slowstart), so the first
/// requests favour the older ones.
fn hostnames_behind_lb(lab: &Lab, expect: usize, tries: usize) -> BTreeSet<String> {
    let url = format!("http://{}/", lab.get("FLOTILLA_LAB_GATEWAY"));
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        if let Some(page) = lab.http_get(&url) {
            let p = page.trim();
            if p.starts_with("web-") {
                seen.insert(p.to_owned());
            }
        }
        if expect > 0 && seen.len() >= expect {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    seen
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn run(e: &Engine, action: UnitAction) {
    if let Err(err) = e.unit_run("web", action.clone(), Arc::new(|_| {})).await {
        panic!("{action:?}: {err}");
    }
}

/// An engine in `dir` for units on the lab (`Lab::unit_engine`) with the tiny guest as master
/// `tiny` and the definition `web` (v2).
async fn setup(lab: &Lab, dir: &std::path::Path) -> Engine {
    lab.tiny_unit_engine(dir, "web", DEFINITION).await
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_unit_lives_on_the_lab_behind_haproxy() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = setup(&lab, dir.path()).await;
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    let before = world(&lab, &e, &pool).await;

    let created = e
        .unit_create(&UnitForm {
            policy: Some(RolloutPolicy {
                max_unavailable: 2,
                drain_timeout_s: 5,
                health_timeout_s: 120,
                shutdown_timeout_s: 30,
                min_in_service: Some(2),
                min_healthy_s: 3,
                ..Default::default()
            }),
            ..web_form(4, "10.77.0.21-10.77.0.40", &pool)
        })
        .unwrap();
    let hosts: BTreeSet<&str> = created
        .unit
        .servers
        .iter()
        .map(|s| s.host.as_str())
        .collect();
    assert_eq!(hosts.len(), 2, "spread across both hosts");

    run(&e, UnitAction::Deploy).await;
    assert_eq!(
        hostnames_behind_lb(&lab, 4, 80),
        names(&["web-1", "web-2", "web-3", "web-4"])
    );
    // What `unit status` and the Units view show: asked from the hosts and HAProxy now.
    for s in e.unit_live("web").await.unwrap() {
        assert_eq!(
            (s.power.as_str(), s.healthy),
            ("running", Some(true)),
            "{s:?}"
        );
    }
    // The per-server config file was rendered for that server.
    let conf = lab
        .http_get("http://10.77.0.22:8080/conf.txt")
        .unwrap_or_default();
    assert_eq!(conf.trim(), "web-2 10.77.0.22 web v1");
    // The payload is mounted for root only (the seed's runcmd).
    let private = || {
        lab.http_get("http://10.77.0.22:8080/payload.txt")
            .unwrap_or_default()
    };
    assert_eq!(
        private().trim(),
        "private",
        "an unprivileged user in the guest read the payload"
    );
    // libvirt's own schema accepts what Flotilla defines.
    let xml = e.unit_domain_xml("web", "web-1").await.unwrap();
    let file = dir.path().join("web-1.xml");
    std::fs::write(&file, &xml).unwrap();
    let out = std::process::Command::new("virt-xml-validate")
        .arg(&file)
        .arg("domain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // HAProxy forgets dynamic servers on reload: reconcile puts them back.
    let lb = HaproxyRuntime::new(Endpoint::Unix(
        lab.get("FLOTILLA_LAB_HAPROXY_SOCKET").into(),
    ));
    lb.member_remove(&pool, "web-3").await.unwrap();
    let r = e.lb_reconcile("lab").await.unwrap();
    assert_eq!(r.added, ["web-3"]);
    let m = lb.members(&pool).await.unwrap();
    assert!(m
        .iter()
        .any(|m| m.name == "web-3" && m.admin == flotilla::lb::MemberState::Ready));

    run(
        &e,
        UnitAction::Stop {
            servers: vec![],
            force: false,
        },
    )
    .await;
    assert!(
        hostnames_behind_lb(&lab, 0, 3).is_empty(),
        "a stopped unit serves nothing"
    );
    for s in e.unit_show("web").unwrap().servers {
        let h = e.host_show(&s.host).unwrap();
        assert_eq!(
            e.hypervisor
                .domain_is_running(&h.uri, &s.name)
                .await
                .unwrap(),
            Some(false)
        );
    }
    run(&e, UnitAction::Start { servers: vec![] }).await;
    assert_eq!(hostnames_behind_lb(&lab, 4, 80).len(), 4);
    // Mounted again at this boot by the per-boot script: still for root only.
    assert_eq!(
        private().trim(),
        "private",
        "after a restart, an unprivileged user in the guest read the payload"
    );

    // Rolling updates under steady load from the lab's LAN: not one request fails.
    let front = format!("http://{}/", lab.get("FLOTILLA_LAB_GATEWAY"));
    // A new definition (in place: same disks, new payload, the hooks run again) …
    let next = DEFINITION.replace(
        "echo ok > /srv/www/health\"",
        "echo ok > /srv/www/health && echo next > /srv/www/release.txt\"",
    );
    assert_ne!(next, DEFINITION);
    e.def_set_text("web", &next, None).unwrap();
    e.unit_update(
        "web",
        &UnitUpdate {
            definition: Some("web".into()),
            ..Default::default()
        },
    )
    .unwrap();
    rollout_under_load(&lab, &e, &front).await;
    for s in e.unit_show("web").unwrap().servers {
        assert_eq!(s.version, Some(2), "{s:?}");
        let at = |path: &str| {
            lab.http_get(&format!("http://{}:8080/{path}", s.address))
                .unwrap_or_default()
        };
        assert_eq!(
            at("conf.txt").trim(),
            format!("{} {} web v2", s.name, s.address)
        );
        assert_eq!(at("release.txt").trim(), "next", "{}", s.name);
    }
    // … and a new master (replaced: a new disk each, the old ones deleted at the end).
    let guest = lab.guest();
    e.image_import(
        &ImportRequest {
            image: "tiny".into(),
            file: guest.join("master.qcow2"),
            notes: "the same guest again".into(),
            boot: BootInput::Kernel {
                kernel: guest.join("vmlinuz"),
                initrd: Some(guest.join("initrd.img")),
                cmdline: "console=ttyS0 root=LABEL=root".into(),
            },
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    e.unit_update(
        "web",
        &UnitUpdate {
            image: Some("tiny:2".into()),
            ..Default::default()
        },
    )
    .unwrap();
    rollout_under_load(&lab, &e, &front).await;
    let held = world(&lab, &e, &pool).await;
    for s in e.unit_show("web").unwrap().servers {
        assert_eq!(s.version, Some(3), "{s:?}");
        assert!(
            held.contains(&format!("{}-disk-u3.qcow2", s.name)),
            "{held}"
        );
        assert!(!held.contains(&format!("{}-disk.qcow2", s.name)), "{held}");
        let conf = lab
            .http_get(&format!("http://{}:8080/conf.txt", s.address))
            .unwrap_or_default();
        assert_eq!(conf.trim(), format!("{} {} web v3", s.name, s.address));
    }
    // … and a definition whose start hook never serves: the first batch fails its gate,
    // every server that changed goes back (auto-rollback), still without a failed request.
    let broken = next.replace("busybox httpd -p 8080 -h /srv/www\"", "true\"");
    assert_ne!(broken, next);
    e.def_set_text("web", &broken, None).unwrap();
    e.unit_update(
        "web",
        &UnitUpdate {
            definition: Some("web".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let load = lab.load(&front);
    let began = std::time::Instant::now();
    let err = e
        .unit_run(
            "web",
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: Some(RolloutPolicy {
                    max_unavailable: 2,
                    drain_timeout_s: 5,
                    health_timeout_s: 20,
                    shutdown_timeout_s: 30,
                    min_in_service: Some(2),
                    min_healthy_s: 3,
                    ..Default::default()
                }),
            },
            Arc::new(|_| {}),
        )
        .await
        .unwrap_err();
    let seen = load.stop();
    eprintln!(
        "rollback of a broken definition: {} s, {seen:?}",
        began.elapsed().as_secs()
    );
    assert_eq!(
        flotilla::error::ApiError::from(&err).code,
        flotilla::error::ErrorCode::RolledBack,
        "{err}"
    );
    assert!(err.to_string().contains("wait-healthy"), "{err}");
    assert_eq!(
        seen.failed(),
        0,
        "no failed request during the rollback: {seen:?}"
    );
    for s in e.unit_show("web").unwrap().servers {
        assert_eq!(s.version, Some(3), "{s:?}");
        let conf = lab
            .http_get(&format!("http://{}:8080/conf.txt", s.address))
            .unwrap_or_default();
        assert_eq!(conf.trim(), format!("{} {} web v3", s.name, s.address));
    }

    run(&e, UnitAction::Scale { count: 6 }).await;
    assert_eq!(
        hostnames_behind_lb(&lab, 6, 120),
        names(&["web-1", "web-2", "web-3", "web-4", "web-5", "web-6"])
    );
    run(&e, UnitAction::Scale { count: 3 }).await;
    assert_eq!(
        hostnames_behind_lb(&lab, 0, 30),
        names(&["web-1", "web-2", "web-3"])
    );

    run(&e, UnitAction::Delete { force: false }).await;
    assert_eq!(world(&lab, &e, &pool).await, before);
}

/// Rolls `web` out to its pending version under steady wrk load through HAProxy (`front`):
/// not one request fails, and HAProxy's own counters agree (every batch counted, none failed;
/// the counts shown while it runs grow and end at the report's).
async fn rollout_under_load(lab: &Lab, e: &Engine, front: &str) {
    let load = lab.load(front);
    let began = std::time::Instant::now();
    let live = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shown = live.clone();
    let r = e
        .unit_run(
            "web",
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
            Arc::new(move |ev| {
                if let Some(c) = ev.lb.filter(|_| ev.server.is_empty()) {
                    shown.lock().unwrap().push(c);
                }
            }),
        )
        .await
        .unwrap_or_else(|err| panic!("rollout: {err}"));
    let seen = load.stop();
    assert_eq!(r.batches.len(), 2, "{r}");
    for b in &r.batches {
        let c = b.counters.expect("HAProxy keeps counters");
        assert!(c.requests > 0 && c.failed() == 0, "{r}");
    }
    let live = live.lock().unwrap().clone();
    let total: u64 = r
        .batches
        .iter()
        .filter_map(|b| b.counters)
        .map(|c| c.requests)
        .sum();
    assert!(
        live.len() >= 2
            && live.windows(2).all(|w| w[0].requests <= w[1].requests)
            && live.iter().all(|c| c.failed() == 0 && c.requests <= total)
            && live.last().is_some_and(|c| c.requests > 0),
        "counts shown while the rollout ran: {live:?}, the report's {total} requests"
    );
    eprintln!("rollout: {} s, {seen:?}", began.elapsed().as_secs());
    assert!(seen.requests > 100, "{seen:?}");
    assert_eq!(
        seen.failed(),
        0,
        "no failed request during the rollout: {seen:?}"
    );
}

/// The unit `web` of `count` tiny servers (128 MiB) behind the lab's HAProxy backend `pool`.
fn web_form(count: u32, addresses: &str, pool: &str) -> UnitForm {
    UnitForm {
        name: "web".into(),
        image: "tiny:1".into(),
        definition: "web:2".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        count,
        name_pattern: "web-{n}".into(),
        addresses: addresses.into(),
        lb: Some("lab".into()),
        lb_pool: Some(pool.into()),
        ..Default::default()
    }
}

/// Kills `flotillactl unit deploy` (SIGKILL) once the journal shows a server started.
fn deploy_and_kill(data: &std::path::Path, unit: &str, e: &Engine) {
    let ctl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/flotillactl");
    assert!(
        ctl.exists(),
        "{} is missing: build it first (cargo build -p flotilla --bin flotillactl)",
        ctl.display()
    );
    let last = e
        .inventory
        .operation_list(1)
        .unwrap()
        .first()
        .map_or(0, |o| o.id);
    let mut child = std::process::Command::new(&ctl)
        .arg("--data-dir")
        .arg(data)
        .args(["unit", "deploy", unit])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let ops = e.inventory.operation_list(5).unwrap();
        let begun = ops.iter().filter(|o| o.id > last).any(|o| {
            o.steps
                .iter()
                .any(|s| s.step.ends_with(": start") && s.status == "succeeded")
        });
        if begun {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy ended before it was killed"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no server started within 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_killed_deploy_is_unwound_or_resumed() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = setup(&lab, dir.path()).await;
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    let before = world(&lab, &e, &pool).await;
    e.unit_create(&web_form(2, "10.77.0.31-10.77.0.40", &pool))
        .unwrap();

    // Killed mid-deploy, then unwound: hosts and HAProxy as before.
    deploy_and_kill(dir.path(), "web", &e);
    let interrupted = e.interrupted_operations().unwrap();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    let r = e
        .operation_unwind(interrupted[0].operation, Arc::new(|_| {}))
        .await
        .unwrap();
    assert!(r.ok, "{r}");
    assert_eq!(world(&lab, &e, &pool).await, before);

    // Killed again, then resumed: both servers serve behind HAProxy.
    deploy_and_kill(dir.path(), "web", &e);
    let interrupted = e.interrupted_operations().unwrap();
    assert_eq!(interrupted.len(), 1);
    e.operation_resume(interrupted[0].operation, Arc::new(|_| {}))
        .await
        .unwrap();
    assert_eq!(hostnames_behind_lb(&lab, 2, 80), names(&["web-1", "web-2"]));
    run(&e, UnitAction::Delete { force: false }).await;
    assert_eq!(world(&lab, &e, &pool).await, before);
}
