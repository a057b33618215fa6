use crate::common::fixture::quiet;
use crate::common::lb::upstreams;
use crate::common::lb::Caddy;
use crate::fixture::Fixture;
use flotilla::ops::units::{Fault, UnitAction, UnitUpdate};
use flotilla::ops::OpError;
use flotilla::plan::{server_steps, OpKind};

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
    let c = Caddy::start().await;
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
    let c = Caddy::start().await;
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
