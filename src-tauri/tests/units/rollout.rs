use crate::common::fixture::quiet;
use crate::fixture::Fixture;
use flotilla::inventory::Inventory;
use flotilla::ops::units::{Fault, StepFn, UnitAction, UnitUpdate};
use flotilla::ops::{Engine, OpError};
use flotilla::plan::Step;
use std::sync::Arc;

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
