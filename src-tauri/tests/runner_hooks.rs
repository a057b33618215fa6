//! T1: the runner's test hooks on families other than unit operations — image distribution
//! (`image ensure`), builders (`image build`) and image delete on libvirt's test driver with a
//! real inventory. The generic pattern of a saga's tests: learn an operation's steps from the
//! journal of a clean run, then
//!
//! - make every step fail in turn (with every step and undo run twice): the whole unwinds and
//!   leaves the hosts and the inventory as they were, and the operation then succeeds;
//! - run every step and undo twice: the end is the same as running each once (also for image
//!   delete, whose steps have no undo).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::fixture::{add_host, engine_in, import_base, node_copy, qcow2};
use common::lb::{upstreams, Caddy};
use flotilla::ops::runner::StepFault;
use flotilla::ops::Engine;
use std::sync::Arc;

struct Fixture {
    _dir: tempfile::TempDir,
    e: Engine,
}

impl Fixture {
    /// One test-driver host and a master image `base:1` in the library.
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_in(dir.path());
        add_host(&e, "h1", &node_copy(dir.path(), "h1")).await;
        e.host_set_network("h1", "10.77.0.0/24", "10.77.0.1", "")
            .unwrap();
        let disk = dir.path().join("master.qcow2");
        qcow2(&disk, "64M");
        import_base(&e, disk, String::new()).await;
        Self { _dir: dir, e }
    }

    /// What a user could see: domains (running or not) and volumes on the host, the copies
    /// and builders the inventory records, and the host objects it verified.
    async fn snapshot(&self) -> String {
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
                out.push_str(&format!("{} domain {d} running={running:?}\n", h.name));
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
            out.push_str(&format!("image {}:{}\n", v.image, v.version));
            for c in v.copies {
                out.push_str(&format!("copy {}:{} on {}\n", v.image, v.version, c.host));
            }
        }
        for b in self.e.builder_list().unwrap() {
            out.push_str(&format!("builder {} {}\n", b.image, b.state));
        }
        out
    }

    /// The steps the newest operation of `kind` began, in order (its journal's `started` rows).
    fn steps_of(&self, kind: &str) -> Vec<String> {
        let ops = self.e.inventory.operation_list(50).unwrap();
        let op = ops.iter().find(|o| o.kind == kind).unwrap();
        self.e
            .inventory
            .operation_steps(op.id)
            .unwrap()
            .into_iter()
            .filter(|(_, status)| status == "started")
            .map(|(step, _)| step)
            .collect()
    }

    /// The state the newest operation of `kind` ended in.
    fn state_of(&self, kind: &str) -> String {
        let ops = self.e.inventory.operation_list(50).unwrap();
        ops.into_iter().find(|o| o.kind == kind).unwrap().state
    }
}

/// One family of operations, as these tests drive it.
#[derive(Clone, Copy, Debug)]
enum Family {
    ImageEnsure,
    Build,
    /// Its steps have no undo (a deleted copy is not put back): run twice only.
    ImageDelete,
}

impl Family {
    fn kind(self) -> &'static str {
        match self {
            Self::ImageEnsure => "image.ensure",
            Self::Build => "image.build",
            Self::ImageDelete => "image.delete",
        }
    }

    /// What is there before: a build's base copy is shared and stays on the host (its step
    /// has no undo), so it is there before the build begins.
    async fn prepare(self, f: &Fixture) {
        if let Self::Build | Self::ImageDelete = self {
            f.e.image_ensure("base:1", "h1", Arc::new(|_| {}))
                .await
                .unwrap();
        }
    }

    async fn run(self, e: &Engine) -> Result<(), flotilla::ops::OpError> {
        match self {
            Self::ImageEnsure => e
                .image_ensure("base:1", "h1", Arc::new(|_| {}))
                .await
                .map(drop),
            Self::Build => e
                .image_build(&build_web(), Arc::new(|_| {}))
                .await
                .map(drop),
            Self::ImageDelete => e.image_delete("base:1").await,
        }
    }
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

/// The steps a clean run of `family` journals.
async fn steps_of(family: Family) -> Vec<String> {
    let f = Fixture::new().await;
    family.prepare(&f).await;
    family.run(&f.e).await.unwrap();
    let steps = f.steps_of(family.kind());
    assert!(steps.len() >= 2, "{family:?}: {steps:?}");
    steps
}

async fn every_step_fails_in_turn_and_unwinds(family: Family) {
    for step in steps_of(family).await {
        let f = Fixture::new().await;
        family.prepare(&f).await;
        let before = f.snapshot().await;
        // Every step and every undo runs twice: undo must be idempotent too.
        f.e.repeat_steps(true);
        f.e.inject_step_fault(Some(StepFault {
            crash: false,
            subject: "*".into(),
            step: Some(step.clone()),
        }));
        let err = family.run(&f.e).await.unwrap_err();
        f.e.inject_step_fault(None);
        f.e.repeat_steps(false);
        assert!(
            err.to_string()
                .contains(&format!("injected failure after {step}")),
            "{family:?} at {step}: {err}"
        );
        assert_eq!(f.state_of(family.kind()), "failed", "{family:?} at {step}");
        assert_eq!(
            f.snapshot().await,
            before,
            "{family:?} failing at {step} left something behind"
        );
        // And nothing is in the way: the same operation now succeeds.
        family.run(&f.e).await.unwrap();
        assert_eq!(f.state_of(family.kind()), "succeeded");
    }
}

async fn every_step_run_twice_reaches_the_same_end(family: Family) {
    let once = Fixture::new().await;
    family.prepare(&once).await;
    family.run(&once.e).await.unwrap();
    let twice = Fixture::new().await;
    family.prepare(&twice).await;
    twice.e.repeat_steps(true);
    family.run(&twice.e).await.unwrap();
    twice.e.repeat_steps(false);
    assert_eq!(twice.snapshot().await, once.snapshot().await, "{family:?}");
    assert_eq!(
        twice.steps_of(family.kind()),
        once.steps_of(family.kind()),
        "{family:?}: the same steps, journaled once each"
    );
}

#[tokio::test]
async fn image_ensure_every_step_fails_in_turn_and_unwinds() {
    every_step_fails_in_turn_and_unwinds(Family::ImageEnsure).await;
}

#[tokio::test]
async fn image_ensure_every_step_run_twice_reaches_the_same_end() {
    every_step_run_twice_reaches_the_same_end(Family::ImageEnsure).await;
}

#[tokio::test]
async fn image_delete_every_step_run_twice_reaches_the_same_end() {
    every_step_run_twice_reaches_the_same_end(Family::ImageDelete).await;
}

#[tokio::test]
async fn build_every_step_fails_in_turn_and_unwinds() {
    every_step_fails_in_turn_and_unwinds(Family::Build).await;
}

#[tokio::test]
async fn build_every_step_run_twice_reaches_the_same_end() {
    every_step_run_twice_reaches_the_same_end(Family::Build).await;
}

/// A fault named by `FLOTILLA_FAULT` reaches any family's step too (the parse the engine uses).
#[test]
fn a_fault_names_a_step_of_any_family() {
    let f = StepFault::parse("fail:*:upload base:v1 on h1").unwrap();
    assert_eq!(
        f,
        StepFault {
            crash: false,
            subject: "*".into(),
            step: Some("upload base:v1 on h1".into()),
        }
    );
    // A unit step by its name, and the end of an operation, as before.
    let f = StepFault::parse("crash:app-2:define").unwrap();
    assert_eq!((f.crash, f.subject.as_str()), (true, "app-2"));
    assert_eq!(f.step.as_deref(), Some("define"));
    assert_eq!(StepFault::parse("crash:*:unlock").unwrap().step, None);
    assert_eq!(StepFault::parse("explode:*:define"), None);
}

async fn clear_upstreams(admin: &str) {
    reqwest::Client::new()
        .patch(format!("{admin}/id/flotilla/upstreams"))
        .json(&serde_json::json!([]))
        .send()
        .await
        .unwrap();
}

/// A unit of two deployed servers behind the Caddy `c` (load balancer `edge`), whose members
/// the Caddy then lost (a config reload).
async fn behind_a_forgetful_lb(c: &Caddy) -> Fixture {
    let f = Fixture::new().await;
    f.e.lb_add(
        "edge",
        &flotilla::ops::lbs::LbTarget::Caddy {
            admin: c.admin.clone(),
            route_id: "flotilla".into(),
        },
    )
    .await
    .unwrap();
    f.e.def_create("shop").unwrap();
    f.e.unit_create(&flotilla::ops::units::UnitForm {
        name: "app".into(),
        image: "base:1".into(),
        definition: "shop:1".into(),
        count: 2,
        name_pattern: "app-{n}".into(),
        addresses: "10.77.0.11-10.77.0.60".into(),
        lb: Some("edge".into()),
        policy: Some(flotilla::model::RolloutPolicy {
            drain_timeout_s: 0,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    f.e.unit_run(
        "app",
        flotilla::ops::units::UnitAction::Deploy,
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    assert_eq!(upstreams(&c.admin).await.len(), 2);
    clear_upstreams(&c.admin).await;
    f
}

/// The load balancer's reconcile (one step per unit, no undo): run twice, each step puts the
/// members back as running it once does; a fault at its step fails it, journaled as failed.
#[tokio::test]
async fn lb_reconcile_steps_run_twice_reach_the_same_end_and_can_fail() {
    let c = Caddy::start().await;
    let once = behind_a_forgetful_lb(&c).await;
    let r = once.e.lb_reconcile("edge").await.unwrap();
    assert_eq!(r.added.len(), 2, "{r:?}");
    let expected = upstreams(&c.admin).await;
    assert_eq!(expected.len(), 2);
    assert_eq!(once.steps_of("lb.reconcile"), ["reconcile unit app"]);
    once.e
        .unit_run(
            "app",
            flotilla::ops::units::UnitAction::Delete { force: false },
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
    assert!(upstreams(&c.admin).await.is_empty());

    let twice = behind_a_forgetful_lb(&c).await;
    twice.e.repeat_steps(true);
    twice.e.lb_reconcile("edge").await.unwrap();
    twice.e.repeat_steps(false);
    assert_eq!(upstreams(&c.admin).await, expected);
    assert_eq!(twice.steps_of("lb.reconcile"), ["reconcile unit app"]);

    clear_upstreams(&c.admin).await;
    twice.e.inject_step_fault(Some(StepFault {
        crash: false,
        subject: "*".into(),
        step: Some("reconcile unit app".into()),
    }));
    let err = twice.e.lb_reconcile("edge").await.unwrap_err();
    twice.e.inject_step_fault(None);
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(twice.state_of("lb.reconcile"), "failed");
    // The reconcile holds no lock afterwards: the unit's operations run.
    twice
        .e
        .unit_run(
            "app",
            flotilla::ops::units::UnitAction::Delete { force: false },
            Arc::new(|_| {}),
        )
        .await
        .unwrap();
}
