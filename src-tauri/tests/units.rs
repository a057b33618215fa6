//! T1: units on libvirt's test driver (real libvirt API, in process) with a real inventory.
//! Deploy, stop, start, scale, delete; every step failing in turn; every step run twice;
//! a crash between steps, then resume or unwind.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use flotilla::hypervisor::HvConfig;
use flotilla::inventory::{Actor, Inventory};
use flotilla::ops::hosts::HostInput;
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::{Fault, StepFn, UnitAction, UnitForm, UnitUpdate};
use flotilla::ops::{Engine, OpError};
use flotilla::plan::{server_steps, OpKind, Step};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct Fixture {
    dir: tempfile::TempDir,
    e: Engine,
    /// A real Caddy the units are put behind, when set.
    lb: Option<String>,
}

fn fixture_node() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/test-node.xml")
}

fn quiet() -> StepFn {
    Arc::new(|_| {})
}

impl Fixture {
    /// Two test-driver hosts with the lab's network, a master image and a definition.
    async fn new() -> Self {
        Self::with_pool_capacity(None).await
    }

    async fn with_pool_capacity(capacity: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::with(
            Inventory::open_in(dir.path()).unwrap(),
            HvConfig::default(),
            Actor::new("test"),
            dir.path().join("library"),
        );
        for h in ["h1", "h2"] {
            let node = dir.path().join(format!("{h}.xml"));
            let mut xml = std::fs::read_to_string(fixture_node()).unwrap();
            if let Some(c) = capacity {
                // The test driver gives every pool 100 GiB; a volume in the node file fills
                // all but `c` bytes of it.
                let fill = (100u64 << 30) - c.parse::<u64>().unwrap();
                xml = xml.replace(
                    "</pool>",
                    &format!("<volume><name>filler</name><capacity unit='bytes'>{fill}</capacity><allocation unit='bytes'>{fill}</allocation></volume></pool>"),
                );
            }
            std::fs::write(&node, xml).unwrap();
            e.host_add(&HostInput {
                name: h.into(),
                uri: format!("test://{}", node.display()),
                pool: None,
                bridge: Some("br0".into()),
                accept_host_key: None,
            })
            .await
            .unwrap();
            e.host_set_network(h, "10.77.0.0/24", "10.77.0.1", "")
                .unwrap();
        }
        let disk = dir.path().join("master.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        e.image_import(
            &ImportRequest {
                image: "base".into(),
                file: disk,
                notes: String::new(),
                boot: BootInput::Disk(flotilla::model::Firmware::Bios),
            },
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
        e.def_create("shop").unwrap();
        Self { dir, e, lb: None }
    }

    /// Puts the units created from now on behind a Caddy.
    async fn behind(&mut self, admin: &str) {
        self.e
            .lb_add(
                "edge",
                &flotilla::ops::lbs::LbTarget::Caddy {
                    admin: admin.to_owned(),
                    route_id: "flotilla".into(),
                },
            )
            .await
            .unwrap();
        self.lb = Some(admin.to_owned());
    }

    fn form(&self, name: &str, count: u32) -> UnitForm {
        UnitForm {
            name: name.into(),
            image: "base:1".into(),
            definition: "shop:1".into(),
            count,
            name_pattern: format!("{name}-{{n}}"),
            addresses: "10.77.0.11-10.77.0.60".into(),
            lb: self.lb.as_ref().map(|_| "edge".into()),
            policy: Some(flotilla::model::RolloutPolicy {
                drain_timeout_s: 0,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What a user could see on the hosts and in the inventory: domains (and whether they
    /// run), volumes, servers with their states.
    async fn snapshot(&self) -> String {
        let mut out = self.hosts_snapshot().await;
        if let Some(admin) = &self.lb {
            out.push_str(&format!("upstreams {:?}\n", upstreams(admin).await));
        }
        for u in self.e.unit_list().unwrap() {
            for s in u.servers {
                out.push_str(&format!(
                    "server {} {} {:?} {:?} lb={} gen={} prior={:?} isolation={} fenced={}\n",
                    s.name,
                    s.host,
                    s.state,
                    s.version,
                    s.lb_state,
                    s.generation,
                    s.prior,
                    s.isolation_s,
                    s.fenced_at
                ));
            }
        }
        out
    }

    /// Domains, volumes and recorded master copies on the hosts.
    async fn hosts_snapshot(&self) -> String {
        let mut out = String::new();
        for h in self.e.host_list().unwrap() {
            let mut doms = self.e.hypervisor.domain_names(&h.uri).await.unwrap();
            doms.sort();
            for d in doms {
                let running = self
                    .e
                    .hypervisor
                    .domain_is_running(&h.uri, &d)
                    .await
                    .unwrap();
                // The unit version its definition names (a rollout's swap and its undo).
                let version = self
                    .e
                    .hypervisor
                    .domain_flotilla_metadata(&h.uri, &d)
                    .await
                    .unwrap()
                    .and_then(|m| m.into_iter().find(|(k, _)| k == "unit-version"))
                    .map(|(_, v)| v);
                out.push_str(&format!(
                    "{} domain {d} running={running:?} version={version:?}\n",
                    h.name
                ));
            }
            let mut vols: Vec<String> = self
                .e
                .hypervisor
                .volume_list(&h.uri, &h.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.name)
                .collect();
            vols.sort();
            for v in vols {
                out.push_str(&format!("{} volume {v}\n", h.name));
            }
            for o in self.e.inventory.host_object_list(h.name.as_str()).unwrap() {
                out.push_str(&format!("{} verified {o}\n", h.name));
            }
        }
        for v in self.e.image_list().unwrap() {
            for c in v.copies {
                out.push_str(&format!("copy {}:{} on {}\n", v.image, v.version, c.host));
            }
        }
        out
    }

    /// Imports another version of the master `base` (an empty 64 MiB qcow2).
    async fn import_base(&self, version: u32) {
        let disk = self.dir.path().join(format!("master-{version}.qcow2"));
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let v = self
            .e
            .image_import(
                &ImportRequest {
                    image: "base".into(),
                    file: disk,
                    notes: format!("version {version}"),
                    boot: BootInput::Disk(flotilla::model::Firmware::Bios),
                },
                Arc::new(|_| {}),
            )
            .await
            .unwrap();
        assert_eq!(v.version, version);
    }

    /// The next version of definition `shop` (another environment value).
    fn new_definition_version(&self) -> u32 {
        let now = self.e.def_show("shop", None).unwrap();
        let text = format!("{}\n# edited\n", now.text);
        let key = format!("RELEASE_{}", now.version.version + 1);
        let text = text.replacen("[env]", &format!("[env]\n{key} = \"next\""), 1);
        self.e
            .def_set_text("shop", &text, Some(now.version.version))
            .unwrap()
            .version
    }

    async fn run(&self, unit: &str, action: UnitAction) -> Result<(), OpError> {
        self.e.unit_run(unit, action, quiet()).await.map(|_| ())
    }
}

fn states(e: &Engine, unit: &str) -> Vec<String> {
    e.unit_show(unit)
        .unwrap()
        .servers
        .iter()
        .map(|s| format!("{}={}", s.name, s.state.as_str()))
        .collect()
}

#[tokio::test]
async fn deploy_stop_start_scale_and_delete() {
    let f = Fixture::new().await;
    let empty = f.hosts_snapshot().await;
    let created = f.e.unit_create(&f.form("shop", 4)).unwrap();
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    let hosts: Vec<&str> = created
        .unit
        .servers
        .iter()
        .map(|s| s.host.as_str())
        .collect();
    assert_eq!(
        hosts,
        ["h1", "h2", "h1", "h2"],
        "placement spreads the servers"
    );
    let macs: std::collections::HashSet<&str> = created
        .unit
        .servers
        .iter()
        .map(|s| s.mac.as_str())
        .collect();
    assert_eq!(macs.len(), 4);
    assert!(macs.iter().all(|m| m.starts_with("52:54:00:")));

    let plan = f.e.unit_plan("shop", &UnitAction::Deploy).unwrap();
    assert_eq!(plan.servers.len(), 4);
    assert_eq!(plan.servers[0].steps, server_steps(OpKind::Deploy, false));
    assert_eq!(
        f.hosts_snapshot().await,
        empty,
        "creating and planning change no host"
    );

    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let report =
        f.e.unit_run(
            "shop",
            UnitAction::Deploy,
            Arc::new(move |e| ev.lock().unwrap().push(e)),
        )
        .await
        .unwrap();
    assert!(report.ok);
    assert_eq!(
        states(&f.e, "shop"),
        [
            "shop-1=running",
            "shop-2=running",
            "shop-3=running",
            "shop-4=running"
        ]
    );
    // Progress: started + succeeded for each step of each server, and the master uploads'
    // progress (one per host, the other servers find the copy there) as details.
    let events = std::mem::take(&mut *events.lock().unwrap());
    let transitions = events.iter().filter(|e| e.detail.is_empty()).count();
    assert_eq!(transitions, 4 * 8 * 2);
    let uploads: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e.step == Step::EnsureMaster && e.detail.contains("100%"))
        .map(|e| e.server.as_str())
        .collect();
    assert_eq!(uploads.len(), 2, "one upload per host: {uploads:?}");
    let deployed = f.snapshot().await;
    assert!(
        deployed.contains("h1 domain shop-1 running=Some(true)"),
        "{deployed}"
    );
    assert!(
        deployed.contains("h2 volume shop-4-disk.qcow2"),
        "{deployed}"
    );
    assert!(
        deployed.contains("h2 volume shop-u1-payload.img"),
        "{deployed}"
    );

    // Deploying a deployed unit changes nothing.
    assert!(f
        .e
        .unit_plan("shop", &UnitAction::Deploy)
        .unwrap()
        .servers
        .is_empty());
    f.run("shop", UnitAction::Deploy).await.unwrap();
    assert_eq!(f.snapshot().await, deployed);

    f.run(
        "shop",
        UnitAction::Stop {
            servers: vec![],
            force: false,
        },
    )
    .await
    .unwrap();
    assert!(states(&f.e, "shop").iter().all(|s| s.ends_with("=stopped")));
    assert!(!f.snapshot().await.contains("running=Some(true)"));
    f.run(
        "shop",
        UnitAction::Start {
            servers: vec!["shop-2".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        states(&f.e, "shop"),
        [
            "shop-1=stopped",
            "shop-2=running",
            "shop-3=stopped",
            "shop-4=stopped"
        ]
    );
    f.run("shop", UnitAction::Start { servers: vec![] })
        .await
        .unwrap();
    f.run(
        "shop",
        UnitAction::Restart {
            servers: vec![],
            force: false,
        },
    )
    .await
    .unwrap();
    assert!(states(&f.e, "shop").iter().all(|s| s.ends_with("=running")));

    f.run("shop", UnitAction::Scale { count: 6 }).await.unwrap();
    assert_eq!(states(&f.e, "shop").len(), 6);
    assert!(states(&f.e, "shop").iter().all(|s| s.ends_with("=running")));
    f.run("shop", UnitAction::Scale { count: 3 }).await.unwrap();
    assert_eq!(
        states(&f.e, "shop"),
        ["shop-1=running", "shop-2=running", "shop-3=running"]
    );
    let after = f.snapshot().await;
    assert!(
        !after.contains("shop-4") && !after.contains("shop-6"),
        "{after}"
    );

    f.run("shop", UnitAction::Delete { force: false })
        .await
        .unwrap();
    assert!(f.e.unit_list().unwrap().is_empty());
    assert_eq!(
        f.hosts_snapshot().await,
        empty,
        "delete leaves the hosts as before"
    );
    drop(f.dir);
}

/// Every action with the steps it runs, on a unit prepared for it.
async fn prepared(f: &Fixture, action: &UnitAction) {
    f.e.unit_create(&f.form("app", 2)).unwrap();
    if !matches!(action, UnitAction::Deploy) {
        f.run("app", UnitAction::Deploy).await.unwrap();
    }
    if matches!(action, UnitAction::Rollout { .. }) {
        // A new master and a new definition: servers are replaced (new disks).
        f.import_base(2).await;
        f.new_definition_version();
        f.e.unit_update(
            "app",
            &UnitUpdate {
                image: Some("base:2".into()),
                definition: Some("shop:2".into()),
                ..Default::default()
            },
        )
        .unwrap();
    }
    if matches!(action, UnitAction::Start { .. }) {
        f.run(
            "app",
            UnitAction::Stop {
                servers: vec![],
                force: false,
            },
        )
        .await
        .unwrap();
    }
}

fn actions() -> Vec<(UnitAction, OpKind)> {
    vec![
        (UnitAction::Deploy, OpKind::Deploy),
        (
            UnitAction::Stop {
                servers: vec![],
                force: false,
            },
            OpKind::Stop,
        ),
        (UnitAction::Start { servers: vec![] }, OpKind::Start),
        (
            UnitAction::Restart {
                servers: vec![],
                force: false,
            },
            OpKind::Restart,
        ),
        (UnitAction::Scale { count: 3 }, OpKind::Deploy),
        (UnitAction::Scale { count: 1 }, OpKind::Remove),
        (UnitAction::Delete { force: false }, OpKind::Remove),
        (
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
            OpKind::Rollout,
        ),
    ]
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_nothing_behind() {
    failing_every_step(None).await;
}

#[tokio::test]
async fn a_failure_at_any_step_behind_a_load_balancer_leaves_nothing_behind() {
    let c = caddy().await;
    failing_every_step(Some(&c.admin)).await;
}

async fn failing_every_step(lb: Option<&str>) {
    for (action, kind) in actions() {
        for step in server_steps(kind, lb.is_some()) {
            let mut f = Fixture::new().await;
            if let Some(admin) = lb {
                // Each round starts with an empty pool.
                reqwest::Client::new()
                    .patch(format!("{admin}/id/flotilla/upstreams"))
                    .json(&serde_json::json!([]))
                    .send()
                    .await
                    .unwrap();
                f.behind(admin).await;
            }
            prepared(&f, &action).await;
            let before = f.snapshot().await;
            // Every step and every undo runs twice: undo must be idempotent too.
            f.e.repeat_steps(true);
            // The last server fails; the others may have finished by then.
            let last = match &action {
                UnitAction::Scale { count: 3 } => "app-3",
                UnitAction::Scale { .. } => "app-2",
                _ => "app-2",
            };
            f.e.inject_fault(Some(Fault {
                crash: false,
                server: last.into(),
                step: Some(step),
            }));
            let err =
                f.e.unit_run("app", action.clone(), quiet())
                    .await
                    .unwrap_err();
            f.e.inject_fault(None);
            f.e.repeat_steps(false);
            let OpError::Failed(report) = &err else {
                panic!("{action:?} at {step:?}: {err}");
            };
            let failed = report.servers.iter().find(|s| s.failed.is_some()).unwrap();
            assert_eq!(failed.server, last);
            assert_eq!(failed.failed.as_ref().unwrap().0, step);
            assert!(err.to_string().contains(step.as_str()), "{err}");
            let after = f.snapshot().await;
            if kind == OpKind::Remove && step.irreversible() {
                // Past the point of no return: running the operation again finishes it.
                f.run("app", action.clone()).await.unwrap();
                assert!(!f.snapshot().await.contains(last), "{action:?} at {step:?}");
            } else {
                assert_eq!(after, before, "{action:?} failing at {step:?}");
                // And the unit is usable: the same action now succeeds.
                f.run("app", action.clone()).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn every_step_run_twice_reaches_the_same_end_state() {
    let c = caddy().await;
    for (action, _) in actions() {
        let once = Fixture::new().await;
        prepared(&once, &action).await;
        once.run("app", action.clone()).await.unwrap();
        let twice = Fixture::new().await;
        prepared(&twice, &action).await;
        // Also behind a load balancer, where the LB steps must be idempotent too.
        let mut behind = Fixture::new().await;
        behind.behind(&c.admin).await;
        prepared(&behind, &action).await;
        behind.e.repeat_steps(true);
        behind.run("app", action.clone()).await.unwrap();
        let servers = behind.e.unit_list().unwrap();
        let expected: Vec<String> = servers
            .iter()
            .flat_map(|u| u.servers.iter())
            .filter(|s| s.lb_state == "ready")
            .map(|s| format!("{}:8080", s.address))
            .collect();
        assert_eq!(upstreams(&c.admin).await, expected, "{action:?}");
        if behind.e.unit_show("app").is_ok() {
            // The next round starts with an empty pool.
            behind
                .run("app", UnitAction::Delete { force: false })
                .await
                .unwrap();
        }
        assert!(upstreams(&c.admin).await.is_empty());
        twice.e.repeat_steps(true);
        twice.run("app", action.clone()).await.unwrap();
        assert_eq!(twice.snapshot().await, once.snapshot().await, "{action:?}");
    }
}

#[tokio::test]
async fn a_crash_between_steps_can_be_resumed_or_unwound() {
    for resume in [true, false] {
        let f = Fixture::new().await;
        f.e.unit_create(&f.form("app", 2)).unwrap();
        let before = f.snapshot().await;
        f.e.inject_fault(Some(Fault {
            crash: true,
            server: "app-2".into(),
            step: Some(Step::Define),
        }));
        let err =
            f.e.unit_run("app", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(matches!(err, OpError::Crashed), "{err}");
        f.e.inject_fault(None);
        let interrupted = f.e.interrupted_operations().unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].unit, "app");
        let id = interrupted[0].operation;
        // The unit stays locked until the interrupted operation is dealt with.
        let busy =
            f.e.unit_run("app", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(matches!(busy, OpError::Busy { .. }), "{busy}");
        if resume {
            f.e.operation_resume(id, quiet()).await.unwrap();
            assert_eq!(states(&f.e, "app"), ["app-1=running", "app-2=running"]);
        } else {
            let r = f.e.operation_unwind(id, quiet()).await.unwrap();
            assert!(r.ok, "{r}");
            assert_eq!(f.snapshot().await, before);
            f.run("app", UnitAction::Deploy).await.unwrap();
        }
        assert!(f.e.interrupted_operations().unwrap().is_empty());
    }
}

/// Two processes (two engines on one data directory) take up the same interrupted
/// operation at once, one to resume it and one to unwind it: exactly one does, the other is
/// told it is not interrupted any more; a second unwind changes nothing.
#[tokio::test]
async fn resume_and_unwind_race_and_exactly_one_wins() {
    for round in 0..4 {
        let f = Fixture::new().await;
        f.e.unit_create(&f.form("app", 2)).unwrap();
        let before = f.snapshot().await;
        f.e.inject_fault(Some(Fault {
            crash: true,
            server: "app-2".into(),
            step: Some(Step::Define),
        }));
        let _ = f.e.unit_run("app", UnitAction::Deploy, quiet()).await;
        f.e.inject_fault(None);
        let id = f.e.interrupted_operations().unwrap()[0].operation;
        if round >= 2 {
            // A second process (its own inventory connection and hypervisor connections; the
            // test driver gives it its own copy of the hosts, so only who wins is compared).
            let other = Engine::open(f.dir.path(), "test").unwrap();
            let (a, b) = tokio::join!(
                f.e.operation_resume(id, quiet()),
                other.operation_unwind(id, quiet())
            );
            assert!(a.is_ok() != b.is_ok(), "{:?} {:?}", a.err(), b.err());
            continue;
        }
        let (resumed, unwound) = if round % 2 == 0 {
            tokio::join!(
                f.e.operation_resume(id, quiet()),
                f.e.operation_unwind(id, quiet())
            )
        } else {
            let (u, r) = tokio::join!(
                f.e.operation_unwind(id, quiet()),
                f.e.operation_resume(id, quiet())
            );
            (r, u)
        };
        assert!(
            resumed.is_ok() != unwound.is_ok(),
            "exactly one wins: resume {:?}, unwind {:?}",
            resumed.as_ref().err().map(ToString::to_string),
            unwound.as_ref().err().map(ToString::to_string)
        );
        let loser = resumed.err().or(unwound.err()).unwrap();
        assert!(
            loser.to_string().contains("not found") || loser.to_string().contains("does not exist"),
            "{loser}"
        );
        if states(&f.e, "app") == ["app-1=running", "app-2=running"] {
            // The resume won.
            f.run("app", UnitAction::Delete { force: true })
                .await
                .unwrap();
        } else {
            assert_eq!(f.snapshot().await, before, "the unwind won: as before");
        }
        assert!(f.e.interrupted_operations().unwrap().is_empty());
        let again = f.snapshot().await;
        let twice = f.e.operation_unwind(id, quiet()).await.unwrap_err();
        assert!(matches!(
            flotilla::error::ApiError::from(&twice).code,
            flotilla::error::ErrorCode::NotFound
        ));
        assert_eq!(f.snapshot().await, again, "a second unwind changes nothing");
    }
}

/// The journal is written before a step acts: when that write fails (a full disk, a broken
/// database), the step does not run, the operation stops and what it did is undone.
#[tokio::test]
async fn a_step_the_journal_cannot_record_does_not_run() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    let before = f.snapshot().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'app-2: define' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("could not write the journal"),
        "{err}"
    );
    db.execute_batch("DROP TRIGGER full_disk").unwrap();
    assert_eq!(
        f.snapshot().await,
        before,
        "nothing ran unrecorded, the rest undone"
    );
    f.run("app", UnitAction::Deploy).await.unwrap();
}

/// Flotilla dies after the last step of an operation but before it released the unit: the
/// next operation on the unit finds the work done, closes the old one and goes ahead — no
/// lock that only an edit of the database could clear.
#[tokio::test]
async fn a_crash_before_the_unlock_is_closed_by_the_next_operation() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "*".into(),
        step: None,
    }));
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(matches!(err, OpError::Crashed), "{err}");
    f.e.inject_fault(None);
    assert_eq!(states(&f.e, "app"), ["app-1=running", "app-2=running"]);
    let ops = f.e.inventory.operation_list(10).unwrap();
    assert_eq!(ops[0].state, "running", "the deploy never ended");
    let stop = UnitAction::Stop {
        servers: vec![],
        force: false,
    };
    f.run("app", stop).await.unwrap();
    assert_eq!(states(&f.e, "app"), ["app-1=stopped", "app-2=stopped"]);
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    let ops = f.e.inventory.operation_list(10).unwrap();
    let deploy = ops.iter().find(|o| o.kind == "deploy").unwrap();
    assert_eq!(deploy.state, "succeeded");
    assert!(
        deploy.error.contains("before it released the unit"),
        "{}",
        deploy.error
    );

    // A delete that died after removing the unit: nothing is left to resume or unwind, and
    // it is not offered as interrupted.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "*".into(),
        step: None,
    }));
    let _ = f.run("app", UnitAction::Delete { force: true }).await;
    f.e.inject_fault(None);
    assert!(f.e.unit_show("app").is_err(), "the unit is gone");
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    let ops = f.e.inventory.operation_list(10).unwrap();
    assert_eq!(
        ops.iter().find(|o| o.kind == "delete").unwrap().state,
        "succeeded"
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let before = f.snapshot().await;
    fn code<T>(r: Result<T, OpError>) -> flotilla::error::ErrorCode {
        flotilla::error::ApiError::from(r.err().unwrap()).code
    }
    use flotilla::error::ErrorCode as C;
    use flotilla::ops::units::ServerForm;
    let explicit = |name: &str, address: &str, host: &str| UnitForm {
        name: "other".into(),
        image: "base:1".into(),
        definition: "shop".into(),
        servers: vec![ServerForm {
            name: name.into(),
            address: address.into(),
            host: host.into(),
        }],
        ..Default::default()
    };
    assert_eq!(code(f.e.unit_create(&f.form("shop", 1))), C::AlreadyExists);
    assert_eq!(
        code(f.e.unit_create(&explicit("shop-1", "10.77.0.99", ""))),
        C::AlreadyExists
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "10.77.0.11", ""))),
        C::AlreadyExists
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "10.78.0.11", "h1"))),
        C::InvalidInput
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "10.77.0.1", "h1"))),
        C::InvalidInput
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "10.77.0.255", ""))),
        C::InvalidInput
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "10.77.0.70", "nohost"))),
        C::NotFound
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("X_1", "10.77.0.70", ""))),
        C::InvalidInput
    );
    assert_eq!(
        code(f.e.unit_create(&explicit("x-1", "not-an-ip", ""))),
        C::InvalidInput
    );
    // Names Flotilla keeps for its own domains and volumes (builders, master copies).
    for reserved in ["flotilla-builder-base", "flotilla-base-v1"] {
        let err =
            f.e.unit_create(&explicit(reserved, "10.77.0.70", ""))
                .unwrap_err();
        assert!(
            err.to_string().contains("Flotilla keeps for its own"),
            "{err}"
        );
    }
    let huge = "a".repeat(100_000);
    assert_eq!(
        code(f.e.unit_create(&explicit(&huge, "10.77.0.70", ""))),
        C::InvalidInput
    );
    let mut bad = f.form("other", 2);
    bad.image = "base:9".into();
    assert_eq!(code(f.e.unit_create(&bad)), C::NotFound);
    bad = f.form("other", 2);
    bad.definition = "shop:7".into();
    assert_eq!(code(f.e.unit_create(&bad)), C::NotFound);
    bad = f.form("other", 2);
    bad.addresses = "10.77.0.11-10.77.0.12".into();
    assert_eq!(
        code(f.e.unit_create(&bad)),
        C::InvalidInput,
        "both are taken"
    );
    bad = f.form("other", 5000);
    assert_eq!(code(f.e.unit_create(&bad)), C::InvalidInput);
    bad = f.form("other", 2);
    bad.name_pattern = "web-{n}-{n}".into();
    assert_eq!(code(f.e.unit_create(&bad)), C::InvalidInput);
    bad = f.form("other", 2);
    bad.lb = Some("nolb".into());
    assert_eq!(code(f.e.unit_create(&bad)), C::NotFound);
    assert_eq!(
        code(f.e.unit_plan("nounit", &UnitAction::Deploy)),
        C::NotFound
    );
    assert_eq!(
        code(f.e.unit_plan(
            "shop",
            &UnitAction::Start {
                servers: vec!["nosuch".into()]
            }
        )),
        C::NotFound
    );
    assert_eq!(
        code(f.e.host_set_network("h1", "10.99.0.0/24", "", "")),
        C::InvalidInput,
        "servers are outside"
    );
    assert_eq!(
        code(f.e.host_set_network("h1", "10.77.0.0/24", "10.78.0.1", "")),
        C::InvalidInput
    );
    assert_eq!(
        code(f.e.host_set_network("h1", "10.77.0.0/24", "", "xen")),
        C::InvalidInput
    );
    // What a unit uses cannot be removed.
    assert_eq!(code(f.e.host_remove("h1")), C::InUse);
    assert_eq!(code(f.e.image_delete("base:1").await), C::InUse);
    // An unreachable load balancer.
    use flotilla::ops::lbs::LbTarget;
    let gone = f.dir.path().join("no-haproxy.sock");
    assert_eq!(
        code(
            f.e.lb_add(
                "lb1",
                &LbTarget::HaproxySocket {
                    path: gone.display().to_string()
                }
            )
            .await
        ),
        C::LbFailed
    );
    assert_eq!(
        code(
            f.e.lb_add(
                "lb1",
                &LbTarget::HaproxySocket {
                    path: "relative".into()
                }
            )
            .await
        ),
        C::InvalidInput
    );
    assert_eq!(
        code(
            f.e.lb_add(
                "lb1",
                &LbTarget::HaproxyAddr {
                    addr: "x\nshow info:1".into()
                }
            )
            .await
        ),
        C::InvalidInput
    );
    assert!(f.e.lb_list().unwrap().is_empty());
    // MACs are generated unique; the inventory refuses a duplicate even so, naming the holder.
    let taken = f.e.unit_show("shop").unwrap().servers[0].mac.clone();
    let err =
        f.e.inventory
            .server_insert(
                "shop",
                &[flotilla::inventory::NewServer {
                    name: "shop-9".into(),
                    host: "h1".into(),
                    address: "10.77.0.99".into(),
                    mac: taken.clone(),
                }],
            )
            .unwrap_err();
    assert!(
        err.to_string().contains(&taken) && err.to_string().contains("shop-1"),
        "{err}"
    );
    assert_eq!(f.snapshot().await, before);
    assert_eq!(f.e.unit_list().unwrap().len(), 1);
}

#[tokio::test]
async fn a_host_without_room_for_the_master_is_refused_before_anything_is_made() {
    let f = Fixture::with_pool_capacity(Some("4096")).await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let before = f.snapshot().await;
    let err =
        f.e.unit_run("shop", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("bytes free in its pool"), "{err}");
    assert_eq!(f.snapshot().await, before);
}

/// A real Caddy on loopback with one reverse_proxy handler tagged `@id flotilla`.
struct Caddy {
    child: std::process::Child,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn caddy() -> Caddy {
    let dir = tempfile::tempdir().unwrap();
    let (admin_port, http_port) = (free_port(), free_port());
    let config = serde_json::json!({
        "admin": { "listen": format!("127.0.0.1:{admin_port}") },
        "logging": { "logs": { "default": { "level": "ERROR" } } },
        "storage": { "module": "file_system", "root": dir.path().join("data") },
        "apps": { "http": { "servers": { "lb": {
            "listen": [format!("127.0.0.1:{http_port}")],
            "routes": [{ "handle": [{ "handler": "reverse_proxy", "@id": "flotilla", "upstreams": [] }] }]
        } } } }
    });
    let file = dir.path().join("caddy.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let child = std::process::Command::new("caddy")
        .args(["run", "--config"])
        .arg(&file)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("caddy (scripts/setup.sh installs it)");
    let admin = format!("http://127.0.0.1:{admin_port}");
    for _ in 0..100 {
        if reqwest::get(format!("{admin}/config/")).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Caddy {
        child,
        admin,
        _dir: dir,
    }
}

async fn upstreams(admin: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{admin}/id/flotilla/upstreams"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u["dial"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn a_unit_behind_a_real_caddy() {
    use flotilla::ops::lbs::LbTarget;
    let c = caddy().await;
    let f = Fixture::new().await;
    let lb =
        f.e.lb_add(
            "edge",
            &LbTarget::Caddy {
                admin: c.admin.clone(),
                route_id: "flotilla".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(lb.kind, "caddy");
    let mut form = f.form("shop", 2);
    form.lb = Some("edge".into());
    form.policy = Some(flotilla::model::RolloutPolicy {
        drain_timeout_s: 1,
        ..Default::default()
    });
    f.e.unit_create(&form).unwrap();
    let plan =
        f.e.unit_plan(
            "shop",
            &UnitAction::Stop {
                servers: vec![],
                force: false,
            },
        )
        .unwrap();
    assert!(
        plan.warnings.iter().any(|w| w.contains("no drain state")),
        "{:?}",
        plan.warnings
    );

    f.run("shop", UnitAction::Deploy).await.unwrap();
    assert_eq!(
        upstreams(&c.admin).await,
        ["10.77.0.11:8080", "10.77.0.12:8080"]
    );
    let check = f.e.lb_check("edge").await.unwrap();
    assert!(!check.has_drain);
    assert_eq!(check.members.len(), 2);

    // Caddy lost its upstreams (a config reload): reconcile puts them back.
    let client = reqwest::Client::new();
    client
        .patch(format!("{}/id/flotilla/upstreams", c.admin))
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap();
    assert!(upstreams(&c.admin).await.is_empty());
    let r = f.e.lb_reconcile("edge").await.unwrap();
    assert_eq!(r.added.len(), 2, "{r:?}");
    assert_eq!(upstreams(&c.admin).await.len(), 2);

    f.run(
        "shop",
        UnitAction::Stop {
            servers: vec!["shop-1".into()],
            force: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(upstreams(&c.admin).await, ["10.77.0.12:8080"]);
    f.run("shop", UnitAction::Start { servers: vec![] })
        .await
        .unwrap();
    assert_eq!(upstreams(&c.admin).await.len(), 2);
    f.run("shop", UnitAction::Delete { force: false })
        .await
        .unwrap();
    assert!(upstreams(&c.admin).await.is_empty());
    assert_eq!(f.e.lb_list().unwrap().len(), 1);
    f.e.lb_remove("edge").unwrap();
}

#[tokio::test]
async fn an_unreachable_load_balancer_stops_an_operation_before_it_changes_anything() {
    let c = caddy().await;
    let mut f = Fixture::new().await;
    f.behind(&c.admin).await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    drop(c); // Caddy stops
    f.lb = None; // (the snapshot cannot ask it any more)
    let before = f.snapshot().await;
    for action in [
        UnitAction::Scale { count: 4 },
        UnitAction::Stop {
            servers: vec![],
            force: false,
        },
        UnitAction::Delete { force: false },
    ] {
        let err =
            f.e.unit_run("shop", action.clone(), quiet())
                .await
                .unwrap_err();
        let api = flotilla::error::ApiError::from(&err);
        assert_eq!(
            api.code,
            flotilla::error::ErrorCode::LbFailed,
            "{action:?}: {err}"
        );
        assert!(
            api.message.contains("cannot reach the load balancer"),
            "{}",
            api.message
        );
        assert_eq!(f.snapshot().await, before, "{action:?}");
    }
    assert_eq!(f.e.unit_show("shop").unwrap().servers.len(), 2);
    assert!(f.e.interrupted_operations().unwrap().is_empty());
}

#[tokio::test]
async fn a_domain_of_the_same_name_that_is_not_the_units_is_left_alone() {
    use flotilla::hypervisor::DomainSpec;
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let h1 = f.e.host_show("h1").unwrap();
    // Someone made "shop-1" on h1 by hand, with a disk named as Flotilla names a server's.
    let disk =
        f.e.hypervisor
            .volume_create_blank(&h1.uri, &h1.pool, "shop-1-disk.qcow2", 1 << 20)
            .await
            .unwrap();
    f.e.hypervisor
        .domain_define(
            &h1.uri,
            &DomainSpec {
                disks: vec![flotilla::hypervisor::DiskSpec {
                    path: disk.path,
                    format: flotilla::hypervisor::DiskFormat::Raw,
                    readonly: false,
                    cdrom: false,
                }],
                ..hand_made("shop-1")
            },
        )
        .await
        .unwrap();
    f.e.hypervisor
        .domain_start(&h1.uri, "shop-1")
        .await
        .unwrap();
    let before = f.snapshot().await;
    let err =
        f.e.unit_run("shop", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("already has a domain named shop-1"),
        "{err}"
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "the foreign domain and its disk are untouched, nothing else left"
    );
    assert!(before.contains("h1 domain shop-1 running=Some(true)"));
    assert!(before.contains("h1 volume shop-1-disk.qcow2"));
}

/// A disk left in a pool under a server's name (an earlier inventory, a copy by hand) is never
/// booted as the server's disk and never deleted by an undo: the deploy stops before it makes
/// anything, and says which volume is in the way.
#[tokio::test]
async fn an_orphaned_disk_with_a_servers_name_is_refused_and_kept() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let server = f.e.unit_show("shop").unwrap().servers[1].clone();
    let host = f.e.host_show(&server.host).unwrap();
    for name in [
        format!("{}-disk.qcow2", server.name),
        format!("{}-seed.img", server.name),
    ] {
        f.e.hypervisor
            .volume_create_blank(&host.uri, &host.pool, &name, 1 << 20)
            .await
            .unwrap();
        let before = f.snapshot().await;
        let err =
            f.e.unit_run("shop", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "already has a volume {name} that Flotilla did not create for server {}",
                server.name
            )),
            "{err}"
        );
        assert_eq!(
            f.snapshot().await,
            before,
            "the orphan is kept, nothing made"
        );
        f.e.hypervisor
            .volume_delete(&host.uri, &host.pool, &name)
            .await
            .unwrap();
    }
    // Without the orphans the same deploy goes through.
    f.run("shop", UnitAction::Deploy).await.unwrap();
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
}

/// A deploy that failed once its server had booted, and whose undo could not run (in T2 the
/// host's sshd was dead), leaves the server's disk, seed and domain on the host, recorded as
/// its own. The next deploy uses that disk again; the guest on it may have kept the version's
/// instance id (cloud-init keeps it on the disk and runs install, config files and start once
/// per id), so the seed gets a fresh instance id: a new seed, where a disk the deploy made
/// itself gets the version's own.
#[tokio::test]
async fn a_deploy_onto_a_disk_a_failed_deploy_left_writes_a_fresh_instance_id() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 1)).unwrap();
    let server = f.e.unit_show("app").unwrap().servers[0].clone();
    let host = f.e.host_show(&server.host).unwrap();
    let seed = format!("{}-seed.img", server.name);
    let seed_sha256 = || f.e.hypervisor.volume_sha256(&host.uri, &host.pool, &seed);
    // Its domain ran (the guest booted from the disk), then the deploy failed; no undo can be
    // recorded, so none runs: everything stays, as on a host that cannot be reached.
    f.e.inject_fault(Some(Fault {
        crash: false,
        server: "*".into(),
        step: Some(Step::WaitHealthy),
    }));
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_undo BEFORE INSERT ON operation_steps WHEN NEW.status = 'undo_started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    f.e.inject_fault(None);
    db.execute_batch("DROP TRIGGER no_undo").unwrap();
    let left = f.hosts_snapshot().await;
    for what in [
        format!("domain {} running=Some(true)", server.name),
        format!("volume {}-disk.qcow2", server.name),
        format!("volume {seed}"),
    ] {
        assert!(left.contains(&what), "{what} left: {left}");
    }
    assert_eq!(states(&f.e, "app"), ["app-1=planned"]);
    let first = seed_sha256().await.unwrap();

    f.run("app", UnitAction::Deploy).await.unwrap();
    assert_eq!(states(&f.e, "app"), ["app-1=running"]);
    let second = seed_sha256().await.unwrap();
    assert_ne!(
        second, first,
        "the seed on the disk the failed deploy left has a new instance id"
    );

    // A deploy on a disk it made itself writes the version's own instance id: the same seed
    // as the first deploy's.
    f.run("app", UnitAction::Delete { force: true })
        .await
        .unwrap();
    f.e.unit_create(&f.form("app", 1)).unwrap();
    assert_eq!(
        f.e.unit_show("app").unwrap().servers[0],
        server,
        "registered alike"
    );
    f.run("app", UnitAction::Deploy).await.unwrap();
    let fresh = seed_sha256().await.unwrap();
    assert_eq!(
        fresh, first,
        "a disk made by the deploy: the version's own id"
    );
}

/// A master copy another operation relies on (a deploy of another unit, here or in another
/// process) stays on the host when a unit that used it is deleted; two ensures of one copy
/// at once upload it once and both succeed.
#[tokio::test]
async fn shared_copies_are_pinned_while_another_operation_uses_them() {
    use flotilla::inventory::PinMode;
    let f = Fixture::new().await;
    let (a, b) = (
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {})),
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {})),
    );
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.bytes_copied > 0, b.bytes_copied > 0]
            .iter()
            .filter(|c| **c)
            .count(),
        1,
        "one upload; the other found the verified copy: {a:?} {b:?}"
    );

    let mut form = f.form("shop", 1);
    form.hosts = vec!["h1".into()];
    f.e.unit_create(&form).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    // Another process's deploy of another unit holds the copy (as its EnsureMaster does).
    let other =
        f.e.inventory
            .operation_begin_with("deploy", "unit/other", "{}")
            .unwrap();
    let copy = f.e.image_show("base:1").unwrap().volume_name();
    assert_eq!(
        f.e.inventory
            .host_pin("h1", &copy, other, PinMode::Use)
            .unwrap(),
        None
    );
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
    let left = f.hosts_snapshot().await;
    assert!(
        left.contains(&format!("h1 volume {copy}")) && left.contains("copy base:1 on h1"),
        "the copy the other operation uses is kept:\n{left}"
    );
    // Once that operation has ended, the next release removes it.
    f.e.inventory
        .operation_finish(other, "succeeded", "")
        .unwrap();
    f.e.unit_create(&form).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
    assert!(!f.hosts_snapshot().await.contains(&copy));
}

#[tokio::test]
async fn two_units_never_share_a_caddy_upstream_list() {
    use flotilla::ops::lbs::LbTarget;
    let c = caddy().await;
    let mut f = Fixture::new().await;
    f.behind(&c.admin).await;
    f.e.unit_create(&f.form("shop", 1)).unwrap();
    // The same Caddy registered again under another name and spelling of its address.
    let port = c.admin.rsplit(':').next().unwrap();
    f.e.lb_add(
        "edge2",
        &LbTarget::Caddy {
            admin: format!("http://localhost:{port}/"),
            route_id: "flotilla".into(),
        },
    )
    .await
    .unwrap();
    let before = f.e.unit_list().unwrap();
    let audit_before = f.e.inventory.audit_list(1000).unwrap().len();
    for lb in ["edge", "edge2"] {
        let mut form = f.form("cart", 1);
        form.addresses = "10.77.0.100-10.77.0.110".into();
        form.lb = Some(lb.into());
        let err = f.e.unit_create(&form).unwrap_err();
        assert_eq!(
            flotilla::error::ApiError::from(&err).code,
            flotilla::error::ErrorCode::InvalidInput,
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("unit shop already uses the upstream list") && msg.contains("--pool"),
            "{msg}"
        );
        // Its preview (the wizard's review page) says the same.
        assert!(f.e.unit_preview(&form).is_err());
    }
    assert_eq!(f.e.unit_list().unwrap(), before, "nothing was registered");
    let audit = f.e.inventory.audit_list(1000).unwrap();
    assert_eq!(audit.len(), audit_before + 2, "both refusals are audited");
    // A handler of its own is fine.
    let mut form = f.form("cart", 1);
    form.addresses = "10.77.0.100-10.77.0.110".into();
    form.lb_pool = Some("cart".into());
    f.e.unit_create(&form).unwrap();
}

/// Adds a second reverse_proxy handler tagged `@id` to the test Caddy.
async fn caddy_add_handler(admin: &str, id: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{admin}/config/apps/http/servers/lb/routes"))
        .json(&serde_json::json!({ "handle": [{ "handler": "reverse_proxy", "@id": id, "upstreams": [] }] }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
}

async fn caddy_list(admin: &str, id: &str) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("{admin}/id/{id}/upstreams"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["dial"].as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

async fn caddy_clear(admin: &str, id: &str) {
    reqwest::Client::new()
        .patch(format!("{admin}/id/{id}/upstreams"))
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn reconcile_leaves_a_unit_an_operation_holds_alone() {
    let c = caddy().await;
    let mut f = Fixture::new().await;
    f.behind(&c.admin).await;
    caddy_add_handler(&c.admin, "cart").await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let mut cart = f.form("cart", 1);
    cart.addresses = "10.77.0.100-10.77.0.110".into();
    cart.lb_pool = Some("cart".into());
    f.e.unit_create(&cart).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    f.run("cart", UnitAction::Deploy).await.unwrap();

    // A stop of shop dies half-way: its operation keeps the unit's lock.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "shop-2".into(),
        step: Some(Step::Shutdown),
    }));
    let stop = UnitAction::Stop {
        servers: vec![],
        force: false,
    };
    let err = f.e.unit_run("shop", stop, quiet()).await.unwrap_err();
    assert!(matches!(err, OpError::Crashed), "{err}");
    f.e.inject_fault(None);
    let held = f.e.interrupted_operations().unwrap()[0].operation;
    // The inventory wants shop's members out of rotation now (the stop drained them) …
    assert!(f
        .e
        .unit_show("shop")
        .unwrap()
        .servers
        .iter()
        .all(|s| s.lb_state != "ready"));
    // … while Caddy, after a config reload, has them in and has lost cart's.
    let both = ["10.77.0.11:8080", "10.77.0.12:8080"];
    reqwest::Client::new()
        .patch(format!("{}/id/flotilla/upstreams", c.admin))
        .json(&serde_json::json!([{ "dial": both[0] }, { "dial": both[1] }]))
        .send()
        .await
        .unwrap();
    caddy_clear(&c.admin, "cart").await;

    let r = f.e.lb_reconcile("edge").await.unwrap();
    assert_eq!(r.added, ["cart-1"], "{r:?}");
    assert_eq!(caddy_list(&c.admin, "cart").await, ["10.77.0.100:8080"]);
    // shop was left alone (its operation owns its members), and the report says why.
    assert_eq!(caddy_list(&c.admin, "flotilla").await, both);
    assert_eq!(r.busy.len(), 1, "{r:?}");
    assert_eq!(
        (
            r.busy[0].unit.as_str(),
            r.busy[0].operation,
            r.busy[0].kind.as_str()
        ),
        ("shop", held, "stop")
    );
    let note = r.busy[0].to_string();
    assert!(note.contains("busy with operation") && note.contains("resume or unwind"));
    // The reconcile is journaled and holds no lock afterwards.
    let ops = f.e.inventory.operation_list(5).unwrap();
    let rec = ops.iter().find(|o| o.kind == "lb.reconcile").unwrap();
    assert_eq!(
        (rec.state.as_str(), rec.target.as_str()),
        ("succeeded", "lb/edge")
    );
    assert!(rec
        .steps
        .iter()
        .any(|s| s.detail.contains("busy with operation")));
    f.run(
        "cart",
        UnitAction::Stop {
            servers: vec![],
            force: false,
        },
    )
    .await
    .unwrap();

    // Once the operation is dealt with, reconcile puts shop's members back.
    f.e.operation_unwind(held, quiet()).await.unwrap();
    caddy_clear(&c.admin, "flotilla").await;
    let r = f.e.lb_reconcile("edge").await.unwrap();
    assert!(r.busy.is_empty(), "{r:?}");
    assert_eq!(caddy_list(&c.admin, "flotilla").await, both);
}

#[tokio::test]
async fn a_lock_left_by_a_reconcile_that_died_does_not_block_the_unit() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 1)).unwrap();
    // A reconcile of this process holds the lock: the unit is busy.
    let op =
        f.e.inventory
            .operation_begin_with("lb.reconcile", "lb/edge", "")
            .unwrap();
    assert_eq!(f.e.inventory.unit_lock("shop", op).unwrap(), None);
    let err = f.run("shop", UnitAction::Deploy).await.unwrap_err();
    assert!(
        matches!(&err, OpError::Busy { operation, kind, .. } if *operation == op && kind == "lb.reconcile"),
        "{err}"
    );
    // Its process dies: nothing to resume or unwind, and the lock is taken over.
    f.e.inventory.operation_orphan(op).unwrap();
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    f.run("shop", UnitAction::Deploy).await.unwrap();
    let ops = f.e.inventory.operation_list(10).unwrap();
    let dead = ops.iter().find(|o| o.id == op).unwrap();
    assert_eq!(dead.state, "aborted");
}

/// A builder's names must be free on its host: a domain or a volume of a builder's name that
/// no builder record accounts for is refused before anything is made, and left alone.
#[tokio::test]
async fn a_builder_never_takes_over_a_domain_or_volume_of_its_name() {
    use flotilla::hypervisor::DomainType;
    use flotilla::ops::builder::{BuildFrom, BuildRequest};
    let f = Fixture::new().await;
    let h1 = f.e.host_show("h1").unwrap();
    let request = || BuildRequest {
        image: "web".into(),
        host: "h1".into(),
        from: BuildFrom::Version("base:1".into()),
        cpus: 1,
        memory_mib: 128,
        disk_bytes: None,
        script: vec![],
        address: None,
        domain_type: DomainType::Test,
    };
    f.e.hypervisor
        .domain_define(&h1.uri, &hand_made("flotilla-builder-web"))
        .await
        .unwrap();
    let before = f.hosts_snapshot().await;
    let err =
        f.e.image_build(&request(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("not a builder Flotilla recorded"),
        "{err}"
    );
    assert_eq!(
        f.hosts_snapshot().await,
        before,
        "the hand-made domain is untouched"
    );
    assert!(f.e.builder_list().unwrap().is_empty());
    f.e.hypervisor
        .domain_undefine(&h1.uri, "flotilla-builder-web")
        .await
        .unwrap();

    f.e.hypervisor
        .volume_create_blank(
            &h1.uri,
            &h1.pool,
            "flotilla-builder-web-disk.qcow2",
            1 << 20,
        )
        .await
        .unwrap();
    let before = f.hosts_snapshot().await;
    let err =
        f.e.image_build(&request(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("flotilla-builder-web-disk.qcow2"),
        "{err}"
    );
    assert_eq!(
        f.hosts_snapshot().await,
        before,
        "the orphaned volume is kept"
    );
}

/// A domain someone made by hand on a test-driver host (no Flotilla metadata of a unit).
fn hand_made(name: &str) -> flotilla::hypervisor::DomainSpec {
    use flotilla::hypervisor::{BootSpec, DomainSpec, DomainType};
    DomainSpec {
        name: name.into(),
        domain_type: DomainType::Test,
        vcpus: 1,
        memory_mib: 64,
        boot: BootSpec::Disk {
            uefi: false,
            cdrom_first: false,
        },
        disks: vec![],
        nics: vec![],
        serial_log: None,
        metadata: vec![("note".into(), "made by hand".into())],
        vnc: false,
        guest_agent: false,
    }
}

/// The fingerprint of the new plan a refused deploy or restart carries (the current one).
fn refused_with_new_plan(f: &Fixture, r: Result<impl std::fmt::Debug, OpError>) -> String {
    let err = r.unwrap_err();
    assert_eq!(
        flotilla::error::ApiError::from(&err).code,
        flotilla::error::ErrorCode::PlanChanged,
        "{err}"
    );
    assert!(
        err.to_string().contains("the inventory changed since plan"),
        "{err}"
    );
    let OpError::PlanChanged { plan, .. } = err else {
        unreachable!()
    };
    let action = match plan.action.as_str() {
        "deploy" => UnitAction::Deploy,
        _ => UnitAction::Restart {
            servers: vec![],
            force: false,
        },
    };
    assert_eq!(
        f.e.unit_plan(&plan.unit, &action).unwrap().fingerprint,
        plan.fingerprint
    );
    plan.fingerprint
}

#[tokio::test]
async fn what_the_admin_confirmed_is_what_runs() {
    let f = Fixture::new().await;
    // Operations that did something: a refusal is journaled as aborted, with no step run.
    let ops = |f: &Fixture| {
        let all = f.e.inventory.operation_list(1000).unwrap();
        for o in all.iter().filter(|o| o.state == "aborted") {
            assert!(
                o.steps.is_empty() && o.error.contains("nothing was done"),
                "{o:?}"
            );
        }
        all.iter().filter(|o| o.state != "aborted").count()
    };
    let planned = |f: &Fixture, unit: &str, a: &UnitAction| f.e.unit_plan(unit, a).unwrap();

    // The wizard's review has the fingerprint of the created unit's deploy plan.
    let review = f.e.unit_preview(&f.form("shop", 2)).unwrap();
    f.e.unit_create_planned(&f.form("shop", 2), Some(&review.fingerprint))
        .unwrap();
    let deploy = planned(&f, "shop", &UnitAction::Deploy);
    assert_eq!(deploy.fingerprint, review.fingerprint);

    // A review made before the inventory changed registers nothing.
    let stale = f.e.unit_preview(&f.form("web", 1)).unwrap();
    assert_eq!(stale.servers[0].host, "h1");
    // (A host the plan does not use may change.)
    f.e.host_set_network("h2", "10.77.0.0/24", "10.77.0.254", "")
        .unwrap();
    assert_eq!(
        f.e.unit_preview(&f.form("web", 1)).unwrap().fingerprint,
        stale.fingerprint
    );
    f.e.host_set_network("h1", "10.77.0.0/24", "10.77.0.254", "")
        .unwrap();
    let r =
        f.e.unit_create_planned(&f.form("web", 1), Some(&stale.fingerprint));
    let new = refused_with_new_plan_preview(r);
    assert_ne!(new, stale.fingerprint);
    assert_eq!(f.e.unit_list().unwrap().len(), 1, "web was not registered");

    // The host of shop's servers changed since the deploy plan was shown: refused, nothing
    // made, nothing journaled; the refusal carries the new plan, which then runs.
    let before = f.snapshot().await;
    let journal = ops(&f);
    let r =
        f.e.unit_run_planned(
            "shop",
            UnitAction::Deploy,
            Some(&deploy.fingerprint),
            quiet(),
        )
        .await;
    let fresh = refused_with_new_plan(&f, r);
    assert_ne!(fresh, deploy.fingerprint);
    assert_eq!(f.snapshot().await, before);
    assert_eq!(ops(&f), journal);
    f.e.unit_run_planned("shop", UnitAction::Deploy, Some(&fresh), quiet())
        .await
        .unwrap();
    assert_eq!(states(&f.e, "shop"), ["shop-1=running", "shop-2=running"]);

    // Another unit taking the next address changes what a scale out would register.
    let scale = planned(&f, "shop", &UnitAction::Scale { count: 3 });
    assert_eq!(scale.servers.len(), 1, "the new server");
    assert_eq!(scale.servers[0].address, "10.77.0.13");
    let restart = UnitAction::Restart {
        servers: vec![],
        force: false,
    };
    let restart_plan = planned(&f, "shop", &restart);
    let mut other = f.form("other", 1);
    other.addresses = "10.77.0.13".into();
    f.e.unit_create(&other).unwrap();
    // ... but not what a restart of shop is computed from.
    assert_eq!(
        planned(&f, "shop", &restart).fingerprint,
        restart_plan.fingerprint
    );
    let before = f.snapshot().await;
    let journal = ops(&f);
    let r =
        f.e.unit_run_planned(
            "shop",
            UnitAction::Scale { count: 3 },
            Some(&scale.fingerprint),
            quiet(),
        )
        .await;
    let OpError::PlanChanged { plan, .. } = r.unwrap_err() else {
        panic!("not refused")
    };
    assert_eq!(plan.servers[0].address, "10.77.0.14", "the plan shown now");
    assert_eq!(f.snapshot().await, before);
    assert_eq!(ops(&f), journal);
    f.e.unit_run_planned(
        "shop",
        UnitAction::Scale { count: 3 },
        Some(&plan.fingerprint),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(
        f.e.unit_show("shop").unwrap().servers[2].address,
        "10.77.0.14"
    );

    // The restart plan shown before the scale no longer holds (a server more).
    let before = f.snapshot().await;
    let r =
        f.e.unit_run_planned(
            "shop",
            restart.clone(),
            Some(&restart_plan.fingerprint),
            quiet(),
        )
        .await;
    let fresh = refused_with_new_plan(&f, r);
    assert_eq!(f.snapshot().await, before);
    // Powering off by force is how the plan runs, not what it is.
    let forced = UnitAction::Restart {
        servers: vec![],
        force: true,
    };
    f.e.unit_run_planned("shop", forced, Some(&fresh), quiet())
        .await
        .unwrap();

    // A fingerprint that is not one is bad input; without one, the run is as before.
    let before = f.snapshot().await;
    let journal = ops(&f);
    let r =
        f.e.unit_run_planned(
            "shop",
            UnitAction::Stop {
                servers: vec![],
                force: false,
            },
            Some("not-a-plan"),
            quiet(),
        )
        .await;
    assert_eq!(
        flotilla::error::ApiError::from(r.unwrap_err()).code,
        flotilla::error::ErrorCode::InvalidInput
    );
    assert_eq!(f.snapshot().await, before);
    assert_eq!(ops(&f), journal);
    f.e.unit_run_planned("shop", UnitAction::Deploy, None, quiet())
        .await
        .unwrap();
    let deleting = planned(&f, "shop", &UnitAction::Delete { force: false });
    assert!(deleting.confirm.is_some());
    f.e.unit_run_planned(
        "shop",
        UnitAction::Delete { force: false },
        Some(&deleting.fingerprint),
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(f.e.unit_list().unwrap().len(), 1, "only other is left");
}

fn refused_with_new_plan_preview(r: Result<impl std::fmt::Debug, OpError>) -> String {
    match r.unwrap_err() {
        OpError::PlanChanged { shown, plan } => {
            assert_ne!(shown, plan.fingerprint);
            plan.fingerprint
        }
        e => panic!("not refused: {e}"),
    }
}

/// A master copy or payload of the names Flotilla uses that this inventory did not put on the
/// host (another inventory's copy of a same-named image, a file by hand) is neither deleted
/// nor replaced: the deploy stops and says so, and the volume stays.
#[tokio::test]
async fn a_shared_volume_this_inventory_did_not_upload_is_left_alone() {
    let f = Fixture::new().await;
    let mut form = f.form("shop", 1);
    form.hosts = vec!["h1".into()];
    f.e.unit_create(&form).unwrap();
    let h1 = f.e.host_show("h1").unwrap();
    for name in ["flotilla-base-v1.qcow2", "shop-u1-payload.img"] {
        f.e.hypervisor
            .volume_create_blank(&h1.uri, &h1.pool, name, 1 << 20)
            .await
            .unwrap();
        let before = f.hosts_snapshot().await;
        let err =
            f.e.unit_run("shop", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "already has a volume {name} that this inventory did not put there"
            )),
            "{err}"
        );
        assert_eq!(
            f.hosts_snapshot().await,
            before,
            "{name} is kept, nothing made"
        );
        f.e.hypervisor
            .volume_delete(&h1.uri, &h1.pool, name)
            .await
            .unwrap();
    }
    f.run("shop", UnitAction::Deploy).await.unwrap();
}

/// A resume or unwind that fails before it ends the operation it took over gives it back: it
/// is offered again (not held by a process that gave up on it).
#[tokio::test]
async fn a_failed_unwind_gives_the_operation_back() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    let before = f.snapshot().await;
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "app-2".into(),
        step: Some(Step::Define),
    }));
    let _ = f.e.unit_run("app", UnitAction::Deploy, quiet()).await;
    f.e.inject_fault(None);
    let id = f.e.interrupted_operations().unwrap()[0].operation;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER broken BEFORE UPDATE OF state ON operations WHEN NEW.state = 'aborted'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    assert!(f.e.operation_unwind(id, quiet()).await.is_err());
    let again = f.e.interrupted_operations().unwrap();
    assert_eq!(again.len(), 1, "offered again");
    assert_eq!(again[0].operation, id);
    db.execute_batch("DROP TRIGGER broken").unwrap();
    f.e.operation_unwind(id, quiet()).await.unwrap();
    assert_eq!(f.snapshot().await, before);
}

/// A build request for image `web` from `base:1` on h1 (test driver).
fn build_web() -> flotilla::ops::builder::BuildRequest {
    flotilla::ops::builder::BuildRequest {
        image: "web".into(),
        host: "h1".into(),
        from: flotilla::ops::builder::BuildFrom::Version("base:1".into()),
        cpus: 1,
        memory_mib: 128,
        disk_bytes: None,
        script: vec![],
        address: None,
        domain_type: flotilla::hypervisor::DomainType::Test,
    }
}

/// The journal of the newest operation of `kind`: (step, status) in order.
fn journal_of(e: &Engine, kind: &str) -> Vec<(String, String)> {
    let ops = e.inventory.operation_list(50).unwrap();
    let op = ops.iter().find(|o| o.kind == kind).unwrap();
    e.inventory.operation_steps(op.id).unwrap()
}

/// A build runs on the executor: each step is journaled before it acts, and a failure undoes
/// every step that began, newest first, each journaled — the base copy (shared) is kept.
#[tokio::test]
async fn a_failed_build_undoes_each_step_it_began_newest_first() {
    let f = Fixture::new().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'start the builder' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.image_build(&build_web(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    let journal = journal_of(&f.e, "image.build");
    let undone: Vec<&str> = journal
        .iter()
        .filter(|(_, st)| st == "undone")
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(
        undone,
        [
            "define the builder",
            "upload flotilla-builder-web-seed.img",
            "create the disk",
            "ensure the base on the host",
        ],
        "{journal:?}"
    );
    assert!(
        !journal.iter().any(|(s, _)| s == "start the builder"),
        "a step the journal could not record did not run: {journal:?}"
    );
    let h1 = f.e.host_show("h1").unwrap();
    assert!(f
        .e
        .hypervisor
        .domain_flotilla_metadata(&h1.uri, "flotilla-builder-web")
        .await
        .unwrap()
        .is_none());
    let vols = f.hosts_snapshot().await;
    assert!(!vols.contains("flotilla-builder-web"), "{vols}");
    assert!(vols.contains("base"), "the shared base copy stays: {vols}");
    assert!(f.e.builder_list().unwrap().is_empty());
}

/// An undo the journal cannot record does not run (nor the older ones), is reported, and
/// keeps the builder so that `builder-abort` can finish the job.
#[tokio::test]
async fn a_build_whose_undo_cannot_be_recorded_is_kept_for_abort() {
    let f = Fixture::new().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_start BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'start the builder' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;
         CREATE TRIGGER fail_undo BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'create the disk' AND NEW.status = 'undo_started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.image_build(&build_web(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("builder-abort web") && msg.contains("create the disk"),
        "{msg}"
    );
    assert_eq!(
        flotilla::error::ApiError::from(&err).code,
        flotilla::error::ErrorCode::OperationFailed
    );
    let vols = f.hosts_snapshot().await;
    assert!(
        vols.contains("flotilla-builder-web-disk.qcow2"),
        "not undone without a record: {vols}"
    );
    assert!(
        !vols.contains("flotilla-builder-web-seed.img"),
        "newer steps were undone: {vols}"
    );
    assert_eq!(f.e.builder_list().unwrap().len(), 1, "kept for abort");
    db.execute_batch("DROP TRIGGER fail_start; DROP TRIGGER fail_undo")
        .unwrap();
    f.e.builder_abort("web").await.unwrap();
    let vols = f.hosts_snapshot().await;
    assert!(!vols.contains("flotilla-builder-web"), "{vols}");
    assert!(f.e.builder_list().unwrap().is_empty());
}

/// Image distribution runs on the executor: a copy that does not match the library's sha256
/// is removed by the journaled undo of its upload, and nothing is recorded.
#[tokio::test]
async fn a_copy_that_fails_verification_is_undone_by_the_journal() {
    let f = Fixture::new().await;
    let v = f.e.image_show("base:1").unwrap();
    let file = f.dir.path().join("library").join(&v.file);
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&file, perms).unwrap();
    // The library file changes after it was recorded (a bad disk, a hand edit).
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let err =
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    let journal = journal_of(&f.e, "image.ensure");
    let statuses: Vec<String> = journal.iter().map(|(s, st)| format!("{s} {st}")).collect();
    assert_eq!(
        statuses,
        [
            "upload base:v1 on h1 started",
            "upload base:v1 on h1 succeeded",
            "verify base:v1 on h1 started",
            "verify base:v1 on h1 failed",
            "upload base:v1 on h1 undo_started",
            "upload base:v1 on h1 undone",
        ]
    );
    assert!(!f.hosts_snapshot().await.contains(&v.volume_name()));
    assert!(f.e.image_show("base:1").unwrap().copies.is_empty());
}

/// Each server's unit version, as the inventory records it.
fn versions(e: &Engine, unit: &str) -> Vec<String> {
    e.unit_show(unit)
        .unwrap()
        .servers
        .iter()
        .map(|s| format!("{}=v{}", s.name, s.version.unwrap_or(0)))
        .collect()
}

/// `unit update` records a pending version and changes nothing on the hosts; a rollout of a
/// definition-only change keeps each server's disk (new seed and payload); one of a new master
/// gives each a new disk and deletes the old one only when every server passed.
#[tokio::test]
async fn a_rollout_moves_every_server_to_the_pending_version() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    let deployed = f.snapshot().await;

    f.new_definition_version();
    let v2 =
        f.e.unit_update(
            "app",
            &UnitUpdate {
                definition: Some("shop".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((v2.version, v2.definition_version), (2, 2));
    assert_eq!(
        f.snapshot().await,
        deployed,
        "an update changes nothing on the hosts"
    );
    let u = f.e.unit_show("app").unwrap();
    assert_eq!((u.current_version, u.pending().unwrap().version), (1, 2));

    let plan =
        f.e.unit_plan(
            "app",
            &UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
        )
        .unwrap();
    assert_eq!(plan.batch_size, 1);
    assert_eq!(plan.servers.len(), 2);
    assert!(
        plan.servers[0].note.starts_with("in place"),
        "{:?}",
        plan.servers[0]
    );
    assert_eq!(plan.in_service_during, Some(1), "one of two out at a time");
    assert_eq!(plan.estimate_s, None);
    assert!(
        plan.estimate_from.contains("no earlier rollout"),
        "{}",
        plan.estimate_from
    );
    f.run(
        "app",
        UnitAction::Rollout {
            back: false,
            canary: None,
            policy: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v2"]);
    assert_eq!(f.e.unit_show("app").unwrap().current_version, 2);
    let after = f.hosts_snapshot().await;
    for s in ["app-1", "app-2"] {
        assert!(after.contains(&format!("volume {s}-disk.qcow2")), "{after}");
        assert!(
            after.contains(&format!("volume {s}-seed-u2.img")),
            "{after}"
        );
        assert!(
            !after.contains(&format!("volume {s}-seed.img")),
            "the old seed went: {after}"
        );
        assert!(
            after.contains(&format!(
                "domain {s} running=Some(true) version=Some(\"2\")"
            )),
            "{after}"
        );
    }
    assert!(
        !after.contains("app-u1-payload"),
        "the old payload went: {after}"
    );

    // A new master: replaced.
    f.import_base(2).await;
    f.e.unit_update(
        "app",
        &UnitUpdate {
            image: Some("base".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let plan =
        f.e.unit_plan(
            "app",
            &UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
        )
        .unwrap();
    assert!(
        plan.servers[0].note.starts_with("replace"),
        "{:?}",
        plan.servers[0]
    );
    // Estimated from the first rollout's journal (the test driver takes next to no time; the
    // journal keeps whole seconds, so a server can straddle one).
    assert!(
        plan.estimate_s.is_some_and(|e| e <= 2),
        "{:?}: {}",
        plan.estimate_s,
        plan.estimate_from
    );
    assert!(
        plan.estimate_from.contains("last 1 rollout"),
        "{}",
        plan.estimate_from
    );
    f.run(
        "app",
        UnitAction::Rollout {
            back: false,
            canary: None,
            policy: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(versions(&f.e, "app"), ["app-1=v3", "app-2=v3"]);
    let after = f.hosts_snapshot().await;
    for s in ["app-1", "app-2"] {
        assert!(
            after.contains(&format!("volume {s}-disk-u3.qcow2")),
            "{after}"
        );
        assert!(
            !after.contains(&format!("volume {s}-disk.qcow2")),
            "old disk gone: {after}"
        );
    }
    assert!(
        !after.contains("copy base:1"),
        "the old master's copies went: {after}"
    );

    // History: what changed, newest first.
    let history = f.e.unit_history("app").unwrap();
    assert_eq!(history[0].status, "current");
    assert!(
        history[0].changes[0].starts_with("master base:v1 → base:v2"),
        "{:?}",
        history[0]
    );
    assert!(
        history[1]
            .changes
            .iter()
            .any(|c| c.contains("definition shop:v1 → shop:v2")),
        "{:?}",
        history[1]
    );

    // Back to the version before: recorded again as v4, rolled out.
    f.e.unit_rollback("app", None, quiet()).await.unwrap();
    assert_eq!(versions(&f.e, "app"), ["app-1=v4", "app-2=v4"]);
    let v4 = f.e.unit_show("app").unwrap();
    let v4 = v4.current().unwrap();
    assert_eq!((v4.image_version, v4.definition_version), (1, 2));
    // The unit stays usable: stop, start, delete leave nothing behind.
    f.run("app", UnitAction::Delete { force: true })
        .await
        .unwrap();
    let empty = f.hosts_snapshot().await;
    assert!(!empty.contains("volume app-"), "{empty}");
}

/// A rollout that dies in the middle is offered for resume and unwind: unwind puts every
/// server back on its version; resume finishes it without updating a server twice.
#[tokio::test]
async fn a_crashed_rollout_resumes_or_unwinds() {
    for resume in [false, true] {
        let f = Fixture::new().await;
        f.e.unit_create(&f.form("app", 2)).unwrap();
        f.run("app", UnitAction::Deploy).await.unwrap();
        f.import_base(2).await;
        f.e.unit_update(
            "app",
            &UnitUpdate {
                image: Some("base:2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let before = f.snapshot().await;
        f.e.inject_fault(Some(Fault {
            crash: true,
            server: "app-2".into(),
            step: Some(Step::Swap),
        }));
        let err =
            f.e.unit_run(
                "app",
                UnitAction::Rollout {
                    back: false,
                    canary: None,
                    policy: None,
                },
                quiet(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, OpError::Crashed), "{err}");
        f.e.inject_fault(None);
        let interrupted = f.e.interrupted_operations().unwrap();
        assert_eq!(interrupted.len(), 1);
        let id = interrupted[0].operation;
        if resume {
            f.e.operation_resume(id, quiet()).await.unwrap();
            assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v2"]);
            let after = f.hosts_snapshot().await;
            assert!(!after.contains("volume app-1-disk.qcow2"), "{after}");
            assert!(!after.contains("volume app-2-disk.qcow2"), "{after}");
            // app-1 was done before the crash: the resume did not take it out again.
            let ops = f.e.inventory.operation_list(10).unwrap();
            let resumed = ops
                .iter()
                .find(|o| o.id > id && o.kind == "rollout")
                .unwrap();
            assert_eq!(resumed.state, "succeeded");
            let journal = f.e.inventory.operation_steps(resumed.id).unwrap();
            assert!(
                journal.iter().any(|(s, _)| s == "app-2: swap-version"),
                "{journal:?}"
            );
            assert!(
                !journal.iter().any(|(s, _)| s.starts_with("app-1: ")),
                "{journal:?}"
            );
        } else {
            f.e.operation_unwind(id, quiet()).await.unwrap();
            assert_eq!(f.snapshot().await, before, "unwound to where it began");
        }
    }
}

/// Budgets and bad updates are refused before anything happens, and say why.
#[tokio::test]
async fn rollouts_and_updates_that_must_not_start_are_refused() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("solo", 1)).unwrap();
    f.run("solo", UnitAction::Deploy).await.unwrap();
    f.new_definition_version();
    f.e.unit_update(
        "solo",
        &UnitUpdate {
            definition: Some("shop".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let before = f.snapshot().await;
    let err =
        f.e.unit_run(
            "solo",
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
            quiet(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("fewer than the unit's minimum of 1"),
        "{err}"
    );
    assert_eq!(f.snapshot().await, before);
    let plan =
        f.e.unit_plan(
            "solo",
            &UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
        )
        .unwrap();
    assert!(
        plan.warnings[0].starts_with("this will not start"),
        "{:?}",
        plan.warnings
    );

    for (form, says) in [
        (UnitUpdate::default(), "nothing to update"),
        (
            UnitUpdate {
                image: Some("nosuch".into()),
                ..Default::default()
            },
            "nosuch",
        ),
        (
            UnitUpdate {
                image: Some("base:x".into()),
                ..Default::default()
            },
            "NAME or NAME:VERSION",
        ),
        (
            UnitUpdate {
                cpus: Some(0),
                ..Default::default()
            },
            "cpus",
        ),
        (
            UnitUpdate {
                definition: Some("shop:1".into()),
                memory_mib: Some(u32::MAX),
                ..Default::default()
            },
            "memory",
        ),
    ] {
        let v = f.e.unit_show("solo").unwrap().versions.len();
        let err = f.e.unit_update("solo", &form).unwrap_err();
        assert!(err.to_string().contains(says), "{form:?}: {err}");
        assert_eq!(f.e.unit_show("solo").unwrap().versions.len(), v, "{form:?}");
    }
    // A rollout's own policy is checked like a unit's.
    for (policy, says) in [
        (
            flotilla::model::RolloutPolicy {
                max_unavailable: 0,
                ..Default::default()
            },
            "max-unavailable",
        ),
        (
            flotilla::model::RolloutPolicy {
                min_healthy_s: 1_000_000,
                ..Default::default()
            },
            "min-healthy-time",
        ),
    ] {
        let action = UnitAction::Rollout {
            back: false,
            canary: None,
            policy: Some(policy),
        };
        let err =
            f.e.unit_run("solo", action.clone(), quiet())
                .await
                .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(f.e.unit_plan("solo", &action).is_err());
    }
    assert_eq!(f.snapshot().await, before);
    // A definition on another port cannot be rolled out (the LB members keep their port).
    let now = f.e.def_show("shop", None).unwrap();
    let moved = now.text.replacen("port = 8080", "port = 9090", 1);
    f.e.def_set_text("shop", &moved, Some(now.version.version))
        .unwrap();
    let err =
        f.e.unit_update(
            "solo",
            &UnitUpdate {
                definition: Some("shop".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("port cannot change"), "{err}");
}

/// A canary updates that many servers and pauses (old disks kept); promote goes on; a pause
/// asked from another process stops a rollout at the next safe point; a rollback of a paused
/// unit puts the changed servers back and forgets the version.
#[tokio::test]
async fn canary_pause_promote_and_rollback() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 3)).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    f.new_definition_version();
    let update = UnitUpdate {
        definition: Some("shop".into()),
        ..Default::default()
    };
    f.e.unit_update("app", &update).unwrap();
    let canary = UnitAction::Rollout {
        back: false,
        canary: Some(1),
        policy: None,
    };
    assert_eq!(f.e.unit_plan("app", &canary).unwrap().servers.len(), 1);
    let r = f.e.unit_run("app", canary, quiet()).await.unwrap();
    assert!(r.paused && r.ok, "{r}");
    assert!(
        r.warnings[0].starts_with("paused: 1 of 3"),
        "{:?}",
        r.warnings
    );
    assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v1", "app-3=v1"]);
    let u = f.e.unit_show("app").unwrap();
    assert_eq!(
        (u.current_version, u.pending().map(|p| p.version)),
        (1, Some(2))
    );
    let held = f.hosts_snapshot().await;
    assert!(
        held.contains("volume app-1-seed.img"),
        "kept for a rollback: {held}"
    );
    // Promote: the rest.
    f.run(
        "app",
        UnitAction::Rollout {
            back: false,
            canary: None,
            policy: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v2", "app-3=v2"]);
    assert_eq!(f.e.unit_show("app").unwrap().current_version, 2);
    assert!(!f.hosts_snapshot().await.contains("volume app-1-seed.img"));

    // No rollout runs: nothing to pause.
    let err = f.e.unit_pause("app").unwrap_err();
    assert!(err.to_string().contains("running rollout of unit"), "{err}");

    // A pause asked by another process while the first server is updated.
    f.new_definition_version();
    f.e.unit_update("app", &update).unwrap();
    let other = Inventory::open_in(f.dir.path()).unwrap();
    let asked = std::sync::atomic::AtomicBool::new(false);
    let progress: StepFn = Arc::new(move |ev| {
        if ev.step == Step::Swap && !asked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            other.unit_request_pause("app").unwrap();
        }
    });
    let r =
        f.e.unit_run(
            "app",
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: None,
            },
            progress,
        )
        .await
        .unwrap();
    assert!(r.paused, "{r}");
    assert_eq!(versions(&f.e, "app"), ["app-1=v3", "app-2=v2", "app-3=v2"]);

    // Rolled back: only app-1 changes, and v3 is forgotten.
    let r = f.e.unit_rollback("app", None, quiet()).await.unwrap();
    assert_eq!(r.servers.len(), 1, "{r}");
    assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v2", "app-3=v2"]);
    let u = f.e.unit_show("app").unwrap();
    assert_eq!((u.current_version, u.pending()), (2, None));
}

/// A rollout's own policy: its batch size, no auto-rollback (the failing server alone is
/// undone, the unit stays mixed), and a deadline checked between batches (past it, the
/// rollout stops and rolls back).
#[tokio::test]
async fn a_rollout_runs_under_its_own_policy() {
    use flotilla::error::{ApiError, ErrorCode};
    use flotilla::model::RolloutPolicy;
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 3)).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    f.new_definition_version();
    let update = UnitUpdate {
        definition: Some("shop".into()),
        ..Default::default()
    };
    f.e.unit_update("app", &update).unwrap();
    let with = |policy: RolloutPolicy| UnitAction::Rollout {
        back: false,
        canary: None,
        policy: Some(policy),
    };
    let base = RolloutPolicy {
        drain_timeout_s: 0,
        min_in_service: Some(1),
        ..Default::default()
    };
    let two = with(RolloutPolicy {
        max_unavailable: 2,
        ..base.clone()
    });
    assert_eq!(f.e.unit_plan("app", &two).unwrap().batch_size, 2);
    let too_many = with(RolloutPolicy {
        max_unavailable: 3,
        min_in_service: Some(1),
        ..base.clone()
    });
    let err = f.e.unit_run("app", too_many, quiet()).await.unwrap_err();
    assert!(err.to_string().contains("leaves 0"), "{err}");

    // Auto-rollback on (the default): a failure on app-2 puts app-1 back too.
    f.e.inject_fault(Some(Fault {
        crash: false,
        server: "app-2".into(),
        step: Some(Step::WaitHealthy),
    }));
    let err =
        f.e.unit_run("app", with(base.clone()), quiet())
            .await
            .unwrap_err();
    assert_eq!(ApiError::from(&err).code, ErrorCode::RolledBack, "{err}");
    assert_eq!(ApiError::from(&err).code.exit_status(), 17);
    assert_eq!(versions(&f.e, "app"), ["app-1=v1", "app-2=v1", "app-3=v1"]);
    // Off: app-2 alone is undone; app-1 keeps v2 and the unit is mixed.
    let err =
        f.e.unit_run(
            "app",
            with(RolloutPolicy {
                auto_rollback: false,
                ..base.clone()
            }),
            quiet(),
        )
        .await
        .unwrap_err();
    f.e.inject_fault(None);
    assert_eq!(
        ApiError::from(&err).code,
        ErrorCode::OperationFailed,
        "{err}"
    );
    assert_eq!(versions(&f.e, "app"), ["app-1=v2", "app-2=v1", "app-3=v1"]);
    f.e.unit_rollback("app", None, quiet()).await.unwrap();
    assert_eq!(versions(&f.e, "app"), ["app-1=v1", "app-2=v1", "app-3=v1"]);

    // A deadline of 1 s, and a first server that takes longer: stopped and rolled back.
    f.e.unit_update("app", &update).unwrap();
    let slow: StepFn = Arc::new(|ev| {
        if ev.server == "app-1"
            && ev.step == Step::Swap
            && ev.status == flotilla::inventory::StepStatus::Started
        {
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
    });
    let before = f.snapshot().await;
    let err =
        f.e.unit_run(
            "app",
            with(RolloutPolicy {
                rollout_deadline_s: 1,
                ..base.clone()
            }),
            slow,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deadline of 1 s passed"), "{err}");
    assert_eq!(ApiError::from(&err).code, ErrorCode::RolledBack);
    // As before, but app-1 (back onto the disk the new version ran on) boots a fresh seed,
    // whose new instance id runs the old version's install and config files again.
    let after = f.snapshot().await;
    let seeds = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains("app-1-seed"))
            .map(str::to_owned)
            .collect()
    };
    let others = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("app-1-seed"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(others(&after), others(&before));
    assert_eq!(seeds(&after).len(), 1, "the old seed went: {after}");
    assert_ne!(seeds(&after), seeds(&before), "a fresh seed: {after}");
}

/// Each server's unit version as its domain's definition names it (what it boots next).
async fn domain_versions(f: &Fixture, unit: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in f.e.unit_show(unit).unwrap().servers {
        let h = f.e.host_show(&s.host).unwrap();
        let v =
            f.e.hypervisor
                .domain_flotilla_metadata(&h.uri, &s.name)
                .await
                .unwrap()
                .and_then(|m| m.into_iter().find(|(k, _)| k == "unit-version"))
                .map_or_else(|| "-".to_owned(), |(_, v)| v);
        out.push(format!("{}=v{v}", s.name));
    }
    out
}

/// Found in review: without auto-rollback a batch peer stopped half-way is undone; a resumed
/// rollout that fails puts servers back as they were before the crash, not as the crash left
/// them; a canary that died before it unlocked does not make its version current; no update
/// while a rollout is interrupted; a rollback boots the disk it kept.
#[tokio::test]
async fn rollouts_stay_consistent_through_failures_crashes_and_rollbacks() {
    use flotilla::model::RolloutPolicy;
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 3)).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    f.import_base(2).await;
    let to_base2 = UnitUpdate {
        image: Some("base:2".into()),
        ..Default::default()
    };
    f.e.unit_update("app", &to_base2).unwrap();
    let loose = RolloutPolicy {
        drain_timeout_s: 0,
        max_unavailable: 2,
        min_in_service: Some(1),
        auto_rollback: false,
        ..Default::default()
    };
    // (a) No auto-rollback, two at a time, app-2 fails: every server ends consistent.
    f.e.inject_fault(Some(Fault {
        crash: false,
        server: "app-2".into(),
        step: Some(Step::WaitHealthy),
    }));
    let rollout = |policy: Option<RolloutPolicy>| UnitAction::Rollout {
        back: false,
        canary: None,
        policy,
    };
    f.e.unit_run("app", rollout(Some(loose)), quiet())
        .await
        .unwrap_err();
    f.e.inject_fault(None);
    assert_eq!(
        domain_versions(&f, "app").await,
        versions(&f.e, "app"),
        "each domain boots the version its record says"
    );
    f.e.unit_rollback("app", None, quiet()).await.ok();
    assert_eq!(versions(&f.e, "app"), ["app-1=v1", "app-2=v1", "app-3=v1"]);
    f.e.unit_update("app", &to_base2).unwrap();
    let before = f.snapshot().await;

    // (b) A crash after app-1's swap; (d) no update meanwhile; then a resume that fails:
    // app-1 goes back to its old disk, seed and version.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "app-1".into(),
        step: Some(Step::Start),
    }));
    let err =
        f.e.unit_run("app", rollout(None), quiet())
            .await
            .unwrap_err();
    assert!(matches!(err, OpError::Crashed), "{err}");
    let err = f.e.unit_update("app", &to_base2).unwrap_err();
    assert!(err.to_string().contains("a rollout of unit app"), "{err}");
    f.e.inject_fault(Some(Fault {
        crash: false,
        server: "*".into(),
        step: Some(Step::WaitHealthy),
    }));
    let id = f.e.interrupted_operations().unwrap()[0].operation;
    let err = f.e.operation_resume(id, quiet()).await.unwrap_err();
    f.e.inject_fault(None);
    assert_eq!(
        flotilla::error::ApiError::from(&err).code,
        flotilla::error::ErrorCode::RolledBack,
        "{err}"
    );
    assert_eq!(f.snapshot().await, before, "as before the crashed rollout");

    // (c) A canary that dies after its last step, before it unlocks: still v1 current.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "*".into(),
        step: None,
    }));
    let canary = UnitAction::Rollout {
        back: false,
        canary: Some(1),
        policy: None,
    };
    f.e.unit_run("app", canary, quiet()).await.unwrap_err();
    f.e.inject_fault(None);
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    let u = f.e.unit_show("app").unwrap();
    assert_eq!(
        (u.current_version, u.pending().map(|p| p.version)),
        (1, Some(3))
    );
    assert_eq!(versions(&f.e, "app"), ["app-1=v3", "app-2=v1", "app-3=v1"]);

    // (f) Rolled back: app-1 boots the disk and seed it kept, nothing new is made.
    let held = f.hosts_snapshot().await;
    assert!(held.contains("volume app-1-disk.qcow2"), "kept: {held}");
    f.e.unit_rollback("app", None, quiet()).await.unwrap();
    let after = f.hosts_snapshot().await;
    assert!(after.contains("volume app-1-disk.qcow2"), "{after}");
    assert!(after.contains("volume app-1-seed.img"), "{after}");
    assert!(
        !after.contains("app-1-disk-u1"),
        "no new disk for a rollback: {after}"
    );
    assert!(
        !after.contains("app-1-disk-u3"),
        "the swapped-in disk went: {after}"
    );
    assert_eq!(
        domain_versions(&f, "app").await,
        ["app-1=v1", "app-2=v1", "app-3=v1"]
    );
}

/// A policy the unit can live with: checked, stored, used; limits that could not be checked
/// are refused.
#[tokio::test]
async fn a_units_policy_is_checked_and_used() {
    use flotilla::model::RolloutPolicy;
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("solo", 1)).unwrap();
    f.run("solo", UnitAction::Deploy).await.unwrap();
    let restart = UnitAction::Restart {
        servers: vec![],
        force: false,
    };
    let err =
        f.e.unit_run("solo", restart.clone(), quiet())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("unit policy"), "says how: {err}");
    let bad = RolloutPolicy {
        min_healthy_s: 300,
        health_timeout_s: 300,
        ..Default::default()
    };
    let err = f.e.unit_set_policy("solo", &bad).unwrap_err();
    assert!(
        err.to_string().contains("shorter than the health timeout"),
        "{err}"
    );
    let p = RolloutPolicy {
        min_in_service: Some(0),
        drain_timeout_s: 0,
        ..Default::default()
    };
    f.e.unit_set_policy("solo", &p).unwrap();
    assert_eq!(f.e.unit_show("solo").unwrap().policy, p);
    f.run("solo", restart).await.unwrap();
    // No HAProxy in front: a limit on failed requests could never be checked.
    f.new_definition_version();
    f.e.unit_update(
        "solo",
        &UnitUpdate {
            definition: Some("shop".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let err =
        f.e.unit_run(
            "solo",
            UnitAction::Rollout {
                back: false,
                canary: None,
                policy: Some(RolloutPolicy {
                    max_failed_requests: Some(0),
                    ..p
                }),
            },
            quiet(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("keeps no request counters"),
        "{err}"
    );
}

/// Records host states as a monitor would (this process holds the monitor lease).
fn monitor_says(e: &Engine, states: &[(&str, flotilla::model::HostState)]) {
    monitor_says_frozen(e, states, "");
}

/// Every host ready, with the servers each one's libvirt does not run.
fn monitor_says_not_running(e: &Engine, hosts: &[(&str, &[&str])]) {
    let states: Vec<_> = hosts
        .iter()
        .map(|(h, _)| (*h, flotilla::model::HostState::Ready))
        .collect();
    monitor_says_with(e, &states, "", hosts);
}

/// `monitor_says`, with the monitor frozen for `frozen` (empty: not frozen).
fn monitor_says_frozen(e: &Engine, states: &[(&str, flotilla::model::HostState)], frozen: &str) {
    monitor_says_with(e, states, frozen, &[]);
}

/// `monitor_says`, with every host last seen alive `ago` before now.
fn monitor_says_seen(
    e: &Engine,
    states: &[(&str, flotilla::model::HostState)],
    ago: std::time::Duration,
) {
    monitor_says_at(e, states, "", &[], ago);
}

fn monitor_says_with(
    e: &Engine,
    states: &[(&str, flotilla::model::HostState)],
    frozen: &str,
    not_running: &[(&str, &[&str])],
) {
    monitor_says_at(e, states, frozen, not_running, std::time::Duration::ZERO);
}

fn monitor_says_at(
    e: &Engine,
    states: &[(&str, flotilla::model::HostState)],
    frozen: &str,
    not_running: &[(&str, &[&str])],
    seen_ago: std::time::Duration,
) {
    use flotilla::inventory::{MonitorLease, MonitorRecord};
    // One lease for all calls: a token of its own, as one monitor renewing it.
    let mut me = MonitorLease::mine("test");
    me.token = "the test".into();
    let held = e.inventory.monitor_lease_take(&me, 600_000, "").unwrap();
    assert!(held.is_none(), "{held:?}");
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let seen = (time::OffsetDateTime::now_utc() - seen_ago)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let records: Vec<MonitorRecord> = states
        .iter()
        .map(|(h, s)| MonitorRecord {
            host: (*h).into(),
            state: *s,
            since: now.clone(),
            detail: "set by the test".into(),
            not_running: not_running
                .iter()
                .find(|(nh, _)| nh == h)
                .map_or(Vec::new(), |(_, n)| {
                    n.iter().map(|s| (*s).to_owned()).collect()
                }),
            probed_at: now.clone(),
            last_seen: seen.clone(),
        })
        .collect();
    assert!(e
        .inventory
        .monitor_write(&me, &records, frozen, 600_000)
        .unwrap());
}

/// The unit `app` of two servers, one per host, deployed; the monitor says h1 failed.
async fn one_host_failed(f: &Fixture) {
    use flotilla::model::HostState;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    let hosts: Vec<String> =
        f.e.unit_show("app")
            .unwrap()
            .servers
            .iter()
            .map(|s| s.host.clone())
            .collect();
    assert_eq!(hosts, ["h1", "h2"], "one server per host");
    monitor_says(&f.e, &[("h1", HostState::Failed), ("h2", HostState::Ready)]);
}

/// A recovery of every failed host, without a confirmation: it needs a fence.
fn recover() -> UnitAction {
    UnitAction::Recover {
        from: Vec::new(),
        host_is_off: Vec::new(),
    }
}

/// A recovery with the admin's confirmation that h1 is off.
fn recover_off() -> UnitAction {
    UnitAction::Recover {
        from: Vec::new(),
        host_is_off: vec!["h1".into()],
    }
}

#[tokio::test]
async fn a_recovery_moves_only_servers_of_failed_hosts_and_is_refused_otherwise() {
    use flotilla::model::HostState;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    let plan = f.e.unit_plan("app", &recover()).unwrap();
    let moved: Vec<(&str, &str)> = plan
        .servers
        .iter()
        .map(|s| (s.server.as_str(), s.host.as_str()))
        .collect();
    assert_eq!(moved, [("app-1", "h2")], "{plan:?}");
    assert_eq!(plan.servers[0].steps, server_steps(OpKind::Recover, false));
    assert!(
        plan.servers[0].note.contains("its host h1 failed"),
        "{plan:?}"
    );
    // h1 has no BMC and the unit's guests no isolation response: no fence, so the plan says it
    // will not start, and it does not.
    let fence = plan.servers[0].fence.as_ref().expect("a recovery's fence");
    assert_eq!(fence.host, "h1");
    assert!(
        matches!(fence.fence, flotilla::plan::fence::Fence::None { .. }),
        "{fence:?}"
    );
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("this will not start") && w.contains("--host-is-off h1")),
        "{plan:?}"
    );
    let before = f.snapshot().await;
    let err = f.e.unit_run("app", recover(), quiet()).await.unwrap_err();
    let api = flotilla::error::ApiError::from(&err);
    assert_eq!(
        (api.code, api.code.exit_status()),
        (flotilla::error::ErrorCode::FenceNeeded, 20),
        "{err}"
    );
    assert!(
        api.message.contains("could run them twice")
            && api
                .message
                .contains("flotillactl unit recover app --host-is-off h1"),
        "{}",
        api.message
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "nothing changed without a fence"
    );
    assert_eq!(f.e.inventory.host_fence_get("h1").unwrap(), None);
    // With the admin's confirmation the plan says whose it is.
    let plan = f.e.unit_plan("app", &recover_off()).unwrap();
    let fence = plan.servers[0].fence.as_ref().unwrap();
    assert!(
        matches!(&fence.fence, flotilla::plan::fence::Fence::Confirmed { by } if !by.is_empty()),
        "{fence:?}"
    );
    assert!(
        !plan.warnings.iter().any(|w| w.contains("will not start")),
        "{plan:?}"
    );
    // Never from a host the monitor does not say is dead: it may only be cut off.
    for (state, why) in [
        (HostState::Partitioned, "partitioned"),
        (HostState::Unreachable, "unreachable"),
        (HostState::Ready, "ready"),
    ] {
        monitor_says(&f.e, &[("h1", state), ("h2", HostState::Ready)]);
        let before = f.snapshot().await;
        let err =
            f.e.unit_run(
                "app",
                UnitAction::Recover {
                    from: vec!["h1".into()],
                    host_is_off: Vec::new(),
                },
                quiet(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("host h1 is {why}, not failed")),
            "{err}"
        );
        // A confirmation does not make a host that answers, or whose servers answer, off.
        if state != HostState::Unreachable {
            let err =
                f.e.unit_run("app", recover_off(), quiet())
                    .await
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains(&format!("host h1 is {why}: "))
                    && (err.contains("it is not off") || err.contains("so they run")),
                "{err}"
            );
        }
        let err =
            f.e.unit_run("app", recover(), quiet())
                .await
                .unwrap_err()
                .to_string();
        assert!(err.contains("nothing to recover"), "{err}");
        assert_eq!(f.snapshot().await, before, "{why}: nothing changed");
    }
    let err =
        f.e.unit_run(
            "app",
            UnitAction::Recover {
                from: vec!["h9".into()],
                host_is_off: Vec::new(),
            },
            quiet(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("h9"), "{err}");
    let huge = "h".repeat(100_000);
    for bad in ["h1;reboot", "", huge.as_str()] {
        let err =
            f.e.unit_run(
                "app",
                UnitAction::Recover {
                    from: vec![bad.into()],
                    host_is_off: Vec::new(),
                },
                quiet(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("from") && err.len() < 2000,
            "{}",
            &err[..err.len().min(300)]
        );
        let err =
            f.e.unit_run(
                "app",
                UnitAction::Recover {
                    from: Vec::new(),
                    host_is_off: vec![bad.into()],
                },
                quiet(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("host-is-off") && err.len() < 2000,
            "{}",
            &err[..err.len().min(300)]
        );
    }
    // No surviving host that the monitor says is ready: nowhere to go.
    monitor_says(
        &f.e,
        &[("h1", HostState::Failed), ("h2", HostState::Suspect)],
    );
    let err =
        f.e.unit_run("app", recover(), quiet())
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("no surviving host can take app-1"), "{err}");
}

/// A host that came back without a recovery: its servers are shut off there and fenced.
/// `unit recover` says so and names the way back; `unit restart` of those servers brings them
/// back in place, in rotation again.
#[tokio::test]
async fn servers_of_a_host_back_without_a_recovery_are_restarted_in_place() {
    let mut f = Fixture::new().await;
    let c = caddy().await;
    f.behind(&c.admin).await;
    one_host_failed(&f).await;
    assert!(f.e.fence_host("h1").await.is_empty());
    // h1 comes back: its libvirt kept app-1's domain, shut off (as after a power cut).
    let h1 = f.e.host_show("h1").unwrap();
    f.e.hypervisor
        .domain_destroy(&h1.uri, "app-1")
        .await
        .unwrap();
    monitor_says_not_running(&f.e, &[("h1", &["app-1"]), ("h2", &[])]);
    let err =
        f.e.unit_run("app", recover(), quiet())
            .await
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("nothing to recover; app-1 on a host that is back is not running there: restart it in place with flotillactl unit restart app --server app-1"),
        "{err}"
    );
    f.e.unit_run(
        "app",
        UnitAction::Restart {
            servers: vec!["app-1".into()],
            force: false,
        },
        quiet(),
    )
    .await
    .unwrap();
    assert_eq!(
        f.e.hypervisor
            .domain_is_running(&h1.uri, "app-1")
            .await
            .unwrap(),
        Some(true)
    );
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert_eq!((s.host.as_str(), s.lb_state.as_str()), ("h1", "ready"));
}

/// The plan of a recovery says where each server goes; when that changes before it runs
/// (here another survivor stopped answering), the confirmed plan does not run.
#[tokio::test]
async fn a_recovery_runs_only_to_the_hosts_its_plan_showed() {
    use flotilla::model::HostState;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    let node = f.dir.path().join("h3.xml");
    std::fs::copy(fixture_node(), &node).unwrap();
    f.e.host_add(&HostInput {
        name: "h3".into(),
        uri: format!("test://{}", node.display()),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    f.e.host_set_network("h3", "10.77.0.0/24", "10.77.0.1", "")
        .unwrap();
    let ready = |h3| {
        [
            ("h1", HostState::Failed),
            ("h2", HostState::Ready),
            ("h3", h3),
        ]
    };
    monitor_says(&f.e, &ready(HostState::Ready));
    let shown = f.e.unit_plan("app", &recover_off()).unwrap();
    assert_eq!(
        shown.servers[0].host, "h3",
        "the host with none of the unit"
    );
    monitor_says(&f.e, &ready(HostState::Suspect));
    let before = f.snapshot().await;
    let err =
        f.e.unit_run_planned("app", recover_off(), Some(&shown.fingerprint), quiet())
            .await
            .unwrap_err();
    let OpError::PlanChanged { plan, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(plan.servers[0].host, "h2", "the new plan says where now");
    assert_eq!(f.snapshot().await, before, "nothing ran");
    f.e.unit_run_planned("app", recover_off(), Some(&plan.fingerprint), quiet())
        .await
        .unwrap();
    assert_eq!(f.e.unit_show("app").unwrap().servers[0].host, "h2");
}

#[tokio::test]
async fn a_recovery_failing_at_any_step_leaves_the_server_on_its_failed_host() {
    for step in server_steps(OpKind::Recover, false) {
        let f = Fixture::new().await;
        one_host_failed(&f).await;
        // Lost in the middle of a rollout: it keeps the record of what it ran before.
        let prior = flotilla::inventory::PriorVolumes {
            version: 1,
            disk: "app-1-disk-kept.qcow2".into(),
            seed: "app-1-seed-kept.img".into(),
        };
        f.e.inventory
            .server_set_prior("app-1", Some(&prior))
            .unwrap();
        let before = f.snapshot().await;
        f.e.repeat_steps(true);
        f.e.inject_fault(Some(Fault {
            crash: false,
            server: "app-1".into(),
            step: Some(step),
        }));
        let err =
            f.e.unit_run("app", recover_off(), quiet())
                .await
                .unwrap_err();
        f.e.inject_fault(None);
        f.e.repeat_steps(false);
        assert!(err.to_string().contains(step.as_str()), "{step:?}: {err}");
        assert_eq!(f.snapshot().await, before, "recovery failing at {step:?}");
        let s = f.e.unit_show("app").unwrap().servers[0].clone();
        assert_eq!((s.host.as_str(), s.generation), ("h1", 0), "{step:?}");
        assert_eq!(s.prior.as_ref(), Some(&prior), "{step:?}");
    }
}

#[tokio::test]
async fn a_recovered_server_runs_once_and_its_stale_copy_goes_when_the_host_returns() {
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    // Killed half-way, then resumed: it goes on with the same move.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "app-1".into(),
        step: Some(Step::Define),
    }));
    let err =
        f.e.unit_run("app", recover_off(), quiet())
            .await
            .unwrap_err();
    assert!(matches!(err, OpError::Crashed), "{err}");
    f.e.inject_fault(None);
    let id = f.e.interrupted_operations().unwrap()[0].operation;
    f.e.operation_resume(id, quiet()).await.unwrap();
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert_eq!(
        (s.host.as_str(), s.generation, s.version),
        ("h2", 1, Some(1))
    );
    let h2 = f.e.host_show("h2").unwrap();
    let meta =
        f.e.hypervisor
            .domain_flotilla_metadata(&h2.uri, "app-1")
            .await
            .unwrap()
            .unwrap();
    assert!(
        meta.contains(&("generation".into(), "1".into())),
        "{meta:?}"
    );
    assert_eq!(
        f.e.hypervisor
            .domain_is_running(&h2.uri, "app-1")
            .await
            .unwrap(),
        Some(true)
    );
    // h1 "comes back" still holding the old domain and volumes (the test driver kept them).
    let h1 = f.e.host_show("h1").unwrap();
    assert!(f
        .e
        .hypervisor
        .domain_names(&h1.uri)
        .await
        .unwrap()
        .contains(&"app-1".to_owned()));
    let r = f.e.host_reconcile("h1").await.unwrap();
    assert_eq!(r.removed, ["app-1"], "{r:?}");
    assert!(
        r.failed.is_empty() && r.volumes.contains(&"app-1-disk.qcow2".to_owned()),
        "{r:?}"
    );
    assert!(!f
        .e
        .hypervisor
        .domain_names(&h1.uri)
        .await
        .unwrap()
        .contains(&"app-1".to_owned()));
    let left: Vec<String> =
        f.e.hypervisor
            .volume_list(&h1.uri, &h1.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .filter(|v| v.starts_with("app-1"))
            .collect();
    assert!(left.is_empty(), "{left:?}");
    // Nothing else is touched: the live copy on h2, the other server on its host.
    assert_eq!(
        f.e.hypervisor
            .domain_is_running(&h2.uri, "app-1")
            .await
            .unwrap(),
        Some(true)
    );
    assert!(f.e.host_reconcile("h2").await.unwrap().removed.is_empty());
    assert!(
        f.e.host_reconcile("h1").await.unwrap().removed.is_empty(),
        "done once"
    );
    assert_eq!(
        f.e.hypervisor
            .domain_is_running(&h2.uri, "app-2")
            .await
            .unwrap(),
        Some(true)
    );
}

#[tokio::test]
async fn an_automatic_recovery_needs_the_units_policy_a_thawed_monitor_and_stays_within_its_limit()
{
    use flotilla::model::HostState;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    let before = f.snapshot().await;
    let err = f.e.unit_auto_recover("app").await.unwrap_err();
    assert!(err.contains("allows no automatic recovery"), "{err}");
    let mut p = f.e.unit_show("app").unwrap().policy;
    p.auto_recover_per_day = 1;
    f.e.unit_set_policy("app", &p).unwrap();
    let failed = [("h1", HostState::Failed), ("h2", HostState::Ready)];
    monitor_says_frozen(&f.e, &failed, "most hosts stopped answering at once");
    let err = f.e.unit_auto_recover("app").await.unwrap_err();
    assert!(err.contains("frozen"), "{err}");
    assert_eq!(f.snapshot().await, before, "nothing while frozen");
    // Without a fence it waits for the admin, and says what it would do.
    monitor_says(&f.e, &failed);
    let err = f.e.unit_auto_recover("app").await.unwrap_err();
    assert!(
        err.contains("would re-create app-1 from h1 to h2") && err.contains("--host-is-off h1"),
        "{err}"
    );
    assert_eq!(f.snapshot().await, before, "nothing without a fence");
    // Its guest has the isolation response (10 s) and h1 was last seen 31 s ago: the guest
    // powered itself off by now, so it goes on by itself.
    f.e.inventory.server_set_isolation("app-1", 10).unwrap();
    monitor_says_seen(&f.e, &failed, std::time::Duration::from_secs(31));
    let done = f.e.unit_auto_recover("app").await.unwrap();
    assert!(done.contains("recover of unit app finished"), "{done}");
    assert_eq!(f.e.unit_show("app").unwrap().servers[0].host, "h2");
    // The limit: one a day. app-2's host failing next is left to the admin.
    monitor_says(&f.e, &[("h1", HostState::Ready), ("h2", HostState::Failed)]);
    let err = f.e.unit_auto_recover("app").await.unwrap_err();
    assert!(
        err.contains("1 recoveries in the last 24 hours, its limit is 1"),
        "{err}"
    );
    let err = f.e.unit_set_policy(
        "app",
        &flotilla::model::RolloutPolicy {
            auto_recover_per_day: 101,
            ..p
        },
    );
    assert!(err
        .unwrap_err()
        .to_string()
        .contains("auto-recover-per-day"));
}

/// The admin's confirmation is the fence: recorded with their name for this loss of the host —
/// in the fence step's journal row, the host's fence record and the audit log — and gone once
/// the host is ready again (the next loss needs its own).
#[tokio::test]
async fn a_confirmed_fence_is_journaled_with_the_admins_name_and_lasts_one_loss() {
    use flotilla::model::HostState;
    use flotilla::monitor::machine::Change;
    use flotilla::ops::monitor::MonitorHooks;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    let r = f.e.unit_run("app", recover_off(), quiet()).await.unwrap();
    let me = whoami::username().unwrap();
    let op =
        f.e.inventory
            .operation_list(5)
            .unwrap()
            .into_iter()
            .find(|o| o.id == r.operation)
            .unwrap();
    let fence = op
        .steps
        .iter()
        .find(|s| s.step == "app-1: fence" && s.status == "succeeded")
        .unwrap_or_else(|| panic!("{:?}", op.steps));
    assert!(
        fence
            .detail
            .contains(&format!("{me} confirmed with operation #{}", r.operation))
            && fence.detail.contains("h1 is off"),
        "{}",
        fence.detail
    );
    // The fence comes first: nothing of the recovery happened before it.
    let first = op
        .steps
        .iter()
        .position(|s| s.step.starts_with("app-1: "))
        .unwrap();
    assert_eq!(op.steps[first].step, "app-1: fence");
    let record = f.e.inventory.host_fence_get("h1").unwrap().unwrap();
    assert_eq!(
        (record.method, record.by.as_str(), record.operation),
        (
            flotilla::inventory::FenceMethod::Confirmed,
            me.as_str(),
            Some(r.operation)
        )
    );
    assert!(f
        .e
        .inventory
        .audit_list(20)
        .unwrap()
        .iter()
        .any(|a| a.action == "host.fence" && a.target == "host/h1" && a.actor == me));
    // h1 back and ready: its fence is over.
    let hooks = flotilla::ops::units::RecoveryHooks::default();
    hooks
        .on_transition(
            &f.e,
            &Change {
                host: "h1".into(),
                from: Some(HostState::Returning),
                to: HostState::Ready,
                why: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(f.e.inventory.host_fence_get("h1").unwrap(), None);
}

/// The isolation response: a recovery waits until the guest's isolation time plus the margin
/// has passed since its host was last seen, saying how long is left; a host that answers
/// again meanwhile stops it, and the unit is as before.
#[tokio::test]
async fn an_isolation_fence_waits_its_time_and_a_host_that_returns_meanwhile_stops_it() {
    use flotilla::model::HostState;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    f.e.inventory.server_set_isolation("app-1", 10).unwrap();
    let failed = [("h1", HostState::Failed), ("h2", HostState::Ready)];
    // Last seen 27 s ago: 10 s + 20 s of margin leave 3 s.
    monitor_says_seen(&f.e, &failed, std::time::Duration::from_secs(27));
    let plan = f.e.unit_plan("app", &recover()).unwrap();
    let fence = &plan.servers[0].fence.as_ref().unwrap().fence;
    assert!(
        matches!(
            fence,
            flotilla::plan::fence::Fence::Isolation {
                isolation_s: 10,
                wait_s: 1..=3
            }
        ),
        "{fence:?}"
    );
    // The Impact view says the same before anything runs: app-1 (h1 failed) waits for its
    // isolation response; app-2, were h2 to fail too, has no fence but a confirmation.
    let report = f.e.impact(&["h2".into()]).unwrap();
    let kinds: Vec<(String, String)> = report
        .fences
        .iter()
        .map(|l| {
            (
                l.server.clone(),
                serde_json::to_value(&l.fence).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("app-1".to_owned(), "isolation".to_owned()),
            ("app-2".to_owned(), "none".to_owned())
        ]
    );
    let waits = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = waits.clone();
    let began = std::time::Instant::now();
    let r =
        f.e.unit_run(
            "app",
            recover(),
            Arc::new(move |ev: flotilla::ops::units::StepEvent| {
                if ev.step == Step::Fence && ev.detail.contains("waiting") {
                    seen.lock().unwrap().push(ev.detail);
                }
            }),
        )
        .await
        .unwrap();
    assert!(began.elapsed() >= std::time::Duration::from_secs(1));
    let waits = waits.lock().unwrap().clone();
    assert!(
        waits
            .first()
            .is_some_and(|w| w.contains("for the isolation response of app-1's guest on h1")),
        "{waits:?}"
    );
    let op = f.e.inventory.operation_list(5).unwrap();
    let row = op
        .iter()
        .find(|o| o.id == r.operation)
        .and_then(|o| {
            o.steps
                .iter()
                .find(|s| s.step == "app-1: fence" && s.status == "succeeded")
        })
        .unwrap();
    assert!(
        row.detail.contains("powered itself off 10 s after"),
        "{}",
        row.detail
    );
    // Nothing recorded for the host: another server of it without the response has no fence.
    assert_eq!(f.e.inventory.host_fence_get("h1").unwrap(), None);
    assert_eq!(f.e.unit_show("app").unwrap().servers[0].host, "h2");

    // Again, but h1 answers while the recovery waits: it stops, nothing moved.
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    f.e.inventory.server_set_isolation("app-1", 10).unwrap();
    monitor_says_seen(&f.e, &failed, std::time::Duration::ZERO);
    let before = f.snapshot().await;
    let (run, ()) = tokio::join!(f.e.unit_run("app", recover(), quiet()), async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        monitor_says(
            &f.e,
            &[("h1", HostState::Returning), ("h2", HostState::Ready)],
        );
    });
    let err = run.unwrap_err().to_string();
    assert!(
        err.contains("host h1 is returning now: its copy of app-1 may run"),
        "{err}"
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "a fence that failed changed nothing"
    );
}

/// The isolation response goes into each server's seed and is recorded per server only once
/// that seed is written; a recovery counts on it (and a policy without an address where the
/// host has no gateway is refused before anything is made). Hostile values are refused.
#[tokio::test]
async fn the_isolation_response_is_recorded_per_server_from_the_seed_it_boots() {
    let f = Fixture::new().await;
    let mut form = f.form("app", 2);
    form.policy = Some(flotilla::model::RolloutPolicy {
        drain_timeout_s: 0,
        isolation_timeout_s: 30,
        isolation_address: "10.77.0.1:80".into(),
        ..Default::default()
    });
    f.e.unit_create(&form).unwrap();
    f.run("app", UnitAction::Deploy).await.unwrap();
    let isolation: Vec<u32> =
        f.e.unit_show("app")
            .unwrap()
            .servers
            .iter()
            .map(|s| s.isolation_s)
            .collect();
    assert_eq!(isolation, [30, 30]);
    // Turned off: servers keep what their seeds gave them until they get new ones.
    let mut p = f.e.unit_show("app").unwrap().policy;
    p.isolation_timeout_s = 0;
    f.e.unit_set_policy("app", &p).unwrap();
    assert_eq!(f.e.unit_show("app").unwrap().servers[0].isolation_s, 30);
    for (timeout, address, field) in [
        (5, "10.77.0.1", "isolation-timeout"),
        (3_601, "10.77.0.1", "isolation-timeout"),
        (60, "10.77.0.1:0", "isolation-address"),
        (60, "10.77.0.1; poweroff", "isolation-address"),
        (60, "255.255.255.255", "isolation-address"),
        (60, "fe80::1", "isolation-address"),
        (60, &"1".repeat(100_000), "isolation-address"),
    ] {
        let bad = flotilla::model::RolloutPolicy {
            isolation_timeout_s: timeout,
            isolation_address: address.to_owned(),
            ..p.clone()
        };
        let err = f.e.unit_set_policy("app", &bad).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.len() < 500,
            "{}",
            &err[..err.len().min(300)]
        );
        assert_eq!(f.e.unit_show("app").unwrap().policy, p, "nothing changed");
    }
}

/// A partition that heals: the servers on the host that was cut off kept running, fenced at
/// the load balancer. While the host is lost, and after, `unit show` says what happened and
/// what brings them back; when the host is ready again they rejoin after their check, with no
/// reboot (only the health check and the load balancer: no start, no shutdown).
#[tokio::test]
async fn servers_that_ran_through_a_partition_rejoin_without_a_reboot() {
    use flotilla::model::HostState;
    use flotilla::monitor::machine::Change;
    use flotilla::ops::monitor::MonitorHooks;
    let mut f = Fixture::new().await;
    let c = caddy().await;
    f.behind(&c.admin).await;
    one_host_failed(&f).await;
    assert!(f.e.fence_host("h1").await.is_empty());
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert_eq!((s.name.as_str(), s.lb_state.as_str()), ("app-1", "maint"));
    assert!(
        s.fenced.starts_with("fenced: h1 was cut off at ")
            && s.fenced
                .contains("back in rotation by itself once h1 answers again"),
        "{}",
        s.fenced
    );
    // Nothing to rejoin while h1 is lost.
    let err =
        f.e.unit_run(
            "app",
            UnitAction::Rejoin {
                servers: vec!["app-1".into()],
            },
            quiet(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot rejoin yet"), "{err}");
    // The partition heals: h1 answers, its libvirt still runs app-1.
    monitor_says(&f.e, &[("h1", HostState::Ready), ("h2", HostState::Ready)]);
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert!(
        s.fenced
            .contains("flotillactl unit rejoin app --server app-1"),
        "{}",
        s.fenced
    );
    let hooks = flotilla::ops::units::RecoveryHooks::default();
    hooks
        .on_transition(
            &f.e,
            &Change {
                host: "h1".into(),
                from: Some(HostState::Returning),
                to: HostState::Ready,
                why: String::new(),
            },
        )
        .await
        .unwrap();
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert_eq!(
        (
            s.host.as_str(),
            s.lb_state.as_str(),
            s.fenced_at.as_str(),
            s.fenced.as_str()
        ),
        ("h1", "ready", "", "")
    );
    assert!(
        upstreams(&c.admin).await.len() == 2,
        "{:?}",
        upstreams(&c.admin).await
    );
    let op = f.e.inventory.operation_list(1).unwrap().remove(0);
    assert_eq!(op.kind, "rejoin");
    let steps: Vec<&str> = op
        .steps
        .iter()
        .filter(|s| s.status == "succeeded")
        .map(|s| s.step.as_str())
        .collect();
    assert_eq!(
        steps,
        ["app-1: wait-healthy", "app-1: lb-ready"],
        "no reboot"
    );
    let h1 = f.e.host_show("h1").unwrap();
    assert_eq!(
        f.e.hypervisor
            .domain_is_running(&h1.uri, "app-1")
            .await
            .unwrap(),
        Some(true)
    );
}

/// Power fencing: a unit whose lost host has a BMC (the lab's Redfish stand-in, powering the
/// test-driver host) is recovered without anyone's confirmation — automatically — and the
/// recovery powers the host off first: ForceOff, the power state read back as Off, recorded
/// with the BMC's words in the fence step's journal row and the host's fence record.
#[tokio::test]
async fn a_recovery_powers_its_lost_host_off_through_its_bmc_first() {
    let f = Fixture::new().await;
    let node = f.dir.path().join("h1.xml");
    let bmc = common::BmcStandIn::start(f.dir.path(), &node, "bmc-Pw-41", None);
    set_bmc(&f, &bmc.url, "bmc-Pw-41").await;
    one_host_failed(&f).await;
    let plan = f.e.unit_plan("app", &recover()).unwrap();
    let fence = plan.servers[0].fence.as_ref().unwrap();
    assert!(
        matches!(&fence.fence, flotilla::plan::fence::Fence::Power { bmc: words } if words.starts_with(&bmc.url)),
        "{fence:?}"
    );
    assert!(
        !plan.warnings.iter().any(|w| w.contains("will not start")),
        "{plan:?}"
    );
    let mut p = f.e.unit_show("app").unwrap().policy;
    p.auto_recover_per_day = 1;
    f.e.unit_set_policy("app", &p).unwrap();
    assert!(node.exists(), "h1 is on until the recovery fences it");
    let done = f.e.unit_auto_recover("app").await.unwrap();
    assert!(done.contains("recover of unit app finished"), "{done}");
    assert!(!node.exists(), "the BMC cut h1's power: {}", bmc.log());
    let by = format!(
        "BMC {} system 1: ForceOff, PowerState Off read back",
        bmc.url
    );
    let record = f.e.inventory.host_fence_get("h1").unwrap().unwrap();
    assert_eq!(
        (record.method, record.by.as_str()),
        (flotilla::model::FenceMethod::Power, by.as_str())
    );
    let op = f.e.inventory.operation_list(1).unwrap().remove(0);
    let row = op
        .steps
        .iter()
        .find(|s| s.step == "app-1: fence" && s.status == "succeeded")
        .unwrap();
    assert_eq!(row.detail, by);
    assert_eq!(f.e.unit_show("app").unwrap().servers[0].host, "h2");
}

/// A BMC that refuses (a wrong password) fails the fence step with its words: the recovery
/// stops before anything else, nothing is recorded as off, and the unit is as before.
#[tokio::test]
async fn a_bmc_that_refuses_stops_the_recovery_and_changes_nothing() {
    let f = Fixture::new().await;
    let node = f.dir.path().join("h1.xml");
    let bmc = common::BmcStandIn::start(f.dir.path(), &node, "the-right-one", None);
    set_bmc(&f, &bmc.url, "a-wrong-one").await;
    one_host_failed(&f).await;
    let before = f.snapshot().await;
    let err = f.e.unit_run("app", recover(), quiet()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("fence") && text.contains("refused: HTTP 401"),
        "{text}"
    );
    assert!(!text.contains("a-wrong-one"), "{text}");
    assert_eq!(f.snapshot().await, before, "nothing changed");
    assert!(node.exists(), "h1 was not powered off");
    assert_eq!(f.e.inventory.host_fence_get("h1").unwrap(), None);
}

/// A reconcile that could not finish leaves a server's old volumes on a host (here: its
/// domain removed, its disk and seed not). When the server is recovered onto that host again,
/// it boots volumes of its new generation — never the stale ones — and the next reconcile of
/// the host it left removes what it left there.
#[tokio::test]
async fn a_recovery_never_boots_a_stale_volume_a_partial_reconcile_left() {
    use flotilla::model::HostState;
    let f = Fixture::new().await;
    one_host_failed(&f).await;
    f.e.unit_run("app", recover_off(), quiet()).await.unwrap();
    let s = f.e.unit_show("app").unwrap().servers[0].clone();
    assert_eq!(
        (s.host.as_str(), s.generation, s.disk.as_str()),
        ("h2", 1, "app-1-disk-g1.qcow2")
    );
    // h1 returns; its reconcile removes app-1's stale domain but not its volumes.
    let h1 = f.e.host_show("h1").unwrap();
    f.e.hypervisor
        .domain_destroy(&h1.uri, "app-1")
        .await
        .unwrap();
    f.e.hypervisor
        .domain_undefine(&h1.uri, "app-1")
        .await
        .unwrap();
    let stale = f.e.inventory.server_volumes_on("h1", "app-1").unwrap();
    assert!(stale.contains(&"app-1-disk.qcow2".to_owned()), "{stale:?}");
    // Now h2 fails, and app-1 is recovered back onto h1.
    monitor_says(&f.e, &[("h1", HostState::Ready), ("h2", HostState::Failed)]);
    f.e.unit_run(
        "app",
        UnitAction::Recover {
            from: Vec::new(),
            host_is_off: vec!["h2".into()],
        },
        quiet(),
    )
    .await
    .unwrap();
    let s =
        f.e.unit_show("app")
            .unwrap()
            .servers
            .into_iter()
            .find(|s| s.name == "app-1")
            .unwrap();
    assert_eq!(
        (
            s.host.as_str(),
            s.generation,
            s.disk.as_str(),
            s.seed.as_str()
        ),
        ("h1", 2, "app-1-disk-g2.qcow2", "app-1-seed-g2.img")
    );
    let files =
        f.e.hypervisor
            .domain_disk_files(&h1.uri, "app-1")
            .await
            .unwrap()
            .unwrap();
    assert!(
        files.iter().any(|f| f.ends_with("/app-1-disk-g2.qcow2")),
        "{files:?}"
    );
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with("/app-1-disk.qcow2") || f.ends_with("/app-1-seed.img")),
        "the stale volumes are not booted: {files:?}"
    );
    // h2 comes back: its reconcile removes app-1's copy there and every volume app-1 left.
    let r = f.e.host_reconcile("h2").await.unwrap();
    assert_eq!(r.removed, ["app-1", "app-2"], "{r:?}");
    assert!(
        r.volumes.contains(&"app-1-disk-g1.qcow2".to_owned()) && r.failed.is_empty(),
        "{r:?}"
    );
    assert!(f
        .e
        .inventory
        .server_volumes_on("h2", "app-1")
        .unwrap()
        .is_empty());
}

/// h1's BMC: the stand-in at `url`, user `admin`, with `password`.
async fn set_bmc(f: &Fixture, url: &str, password: &str) {
    f.e.keep_secrets_in_files();
    f.e.host_set_bmc(
        "h1",
        Some(flotilla::ops::bmc::BmcInput {
            url: url.into(),
            system: "1".into(),
            user: "admin".into(),
            password: Some(flotilla::model::Secret::parse(password).unwrap()),
            ca_pem: None,
        }),
    )
    .await
    .unwrap();
}
