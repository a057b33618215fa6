use crate::common::fixture::quiet;
use crate::fixture::Fixture;
use crate::recover::monitor_says;
use crate::recover::monitor_says_seen;
use crate::recover::one_host_failed;
use crate::recover::recover;
use crate::recover::recover_off;
use flotilla::ops::units::UnitAction;
use flotilla::plan::Step;
use std::sync::Arc;

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

/// The isolation response is recorded per server from the seed its deploy wrote, and stays as
/// that seed has it when the unit's policy turns it off. Hostile values are refused and change
/// nothing. (A recovery counting on it: `an_isolation_fence_waits_…`,
/// `an_automatic_recovery_needs_…`.)
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

/// Power fencing: a unit whose lost host has a BMC (the lab's Redfish stand-in, powering the
/// test-driver host) is recovered without anyone's confirmation — automatically — and the
/// recovery powers the host off first: ForceOff, the power state read back as Off, recorded
/// with the BMC's words in the fence step's journal row and the host's fence record.
#[tokio::test]
async fn a_recovery_powers_its_lost_host_off_through_its_bmc_first() {
    let f = Fixture::new().await;
    let node = f.dir.path().join("h1.xml");
    let bmc = crate::common::bmc::BmcStandIn::start(f.dir.path(), &node, "bmc-Pw-41", None);
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
    let bmc = crate::common::bmc::BmcStandIn::start(f.dir.path(), &node, "the-right-one", None);
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
