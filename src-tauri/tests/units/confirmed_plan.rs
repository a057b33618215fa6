use crate::common::fixture::quiet;
use crate::fixture::states;
use crate::fixture::Fixture;
use flotilla::ops::units::UnitAction;
use flotilla::ops::OpError;

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
