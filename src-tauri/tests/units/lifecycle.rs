use crate::common::fixture::quiet;
use crate::fixture::states;
use crate::fixture::Fixture;
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla::ops::OpError;
use flotilla::plan::{server_steps, OpKind, Step};
use std::sync::Arc;

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
