use crate::common::fixture::quiet;
use crate::common::fixture::test_node;
use crate::common::lb::upstreams;
use crate::common::lb::Caddy;
use crate::fixture::Fixture;
use flotilla::ops::hosts::HostInput;
use flotilla::ops::units::{Fault, UnitAction};
use flotilla::ops::{Engine, OpError};
use flotilla::plan::{server_steps, OpKind, Step};

/// Records host states as a monitor would (this process holds the monitor lease).
pub(crate) fn monitor_says(e: &Engine, states: &[(&str, flotilla::model::HostState)]) {
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
pub(crate) fn monitor_says_seen(
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
pub(crate) async fn one_host_failed(f: &Fixture) {
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
pub(crate) fn recover() -> UnitAction {
    UnitAction::Recover {
        from: Vec::new(),
        host_is_off: Vec::new(),
    }
}

/// A recovery with the admin's confirmation that h1 is off.
pub(crate) fn recover_off() -> UnitAction {
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
    let c = Caddy::start().await;
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
    std::fs::copy(test_node(), &node).unwrap();
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
    let c = Caddy::start().await;
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
