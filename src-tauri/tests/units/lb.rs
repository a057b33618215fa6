use crate::common::fixture::quiet;
use crate::common::lb::upstreams;
use crate::common::lb::Caddy;
use crate::fixture::Fixture;
use flotilla::ops::units::{Fault, UnitAction};
use flotilla::ops::OpError;
use flotilla::plan::Step;

#[tokio::test]
async fn a_unit_behind_a_real_caddy() {
    use flotilla::ops::lbs::LbTarget;
    let c = Caddy::start().await;
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
    let c = Caddy::start().await;
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
async fn two_units_never_share_a_caddy_upstream_list() {
    use flotilla::ops::lbs::LbTarget;
    let c = Caddy::start().await;
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
    let c = Caddy::start().await;
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
