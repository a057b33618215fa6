//! T1: the one placement rule, seen from both sides. The Impact view's replacement host for
//! each server a failed host takes is the host `unit recover` re-creates it on (libvirt's test
//! driver, a real inventory).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::fixture::{add_host, engine_in, import_base, node_copy, qcow2, quiet};
use flotilla::inventory::{MonitorLease, MonitorRecord};
use flotilla::model::{HostState, ServerSize};
use flotilla::ops::units::{ServerForm, UnitAction, UnitForm};
use flotilla::ops::Engine;
use std::path::Path;

/// Three test-driver hosts (8 GiB each) with the lab's network, a master image and a
/// definition.
async fn three_hosts(dir: &Path) -> Engine {
    let e = engine_in(dir);
    for h in ["h1", "h2", "h3"] {
        add_host(&e, h, &node_copy(dir, h)).await;
        e.host_set_network(h, "10.77.0.0/24", "10.77.0.1", "")
            .unwrap();
    }
    let disk = dir.join("master.qcow2");
    qcow2(&disk, "64M");
    import_base(&e, disk, String::new()).await;
    e.def_create("shop").unwrap();
    e
}

/// Registers and deploys unit `name` of servers `memory_mib` each, named one by one with
/// their hosts: (server, address, host).
async fn unit(e: &Engine, name: &str, memory_mib: u32, servers: &[(&str, &str, &str)]) {
    e.unit_create(&UnitForm {
        name: name.into(),
        image: "base:1".into(),
        definition: "shop:1".into(),
        size: Some(ServerSize {
            cpus: 1,
            memory_mib,
            disk_gib: 0,
        }),
        servers: servers
            .iter()
            .map(|(n, a, h)| ServerForm {
                name: (*n).into(),
                address: (*a).into(),
                host: (*h).into(),
            })
            .collect(),
        policy: Some(flotilla::model::RolloutPolicy {
            drain_timeout_s: 0,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    e.unit_run(name, UnitAction::Deploy, quiet()).await.unwrap();
}

/// The monitor says what each host is (one lease, as one monitor writing it).
fn monitor_says(e: &Engine, states: &[(&str, HostState)]) {
    let mut me = MonitorLease::mine("test");
    me.token = "the test".into();
    let held = e.inventory.monitor_lease_take(&me, 600_000, "").unwrap();
    assert!(held.is_none(), "{held:?}");
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let records: Vec<MonitorRecord> = states
        .iter()
        .map(|(h, s)| MonitorRecord {
            host: (*h).into(),
            state: *s,
            since: now.clone(),
            detail: "set by the test".into(),
            not_running: Vec::new(),
            probed_at: now.clone(),
            last_seen: now.clone(),
        })
        .collect();
    assert!(e
        .inventory
        .monitor_write(&me, &records, "", 600_000)
        .unwrap());
}

/// h1 fails with servers of two units of different sizes on it. The survivors differ in free
/// memory and in how many servers of each unit they hold, so a rule that looked at free memory
/// alone (the Impact view's before the one rule) would put `big-1` on h3, where `unit recover`
/// (the fewest of the unit first) puts it on h2.
#[tokio::test]
async fn the_impact_views_replacement_host_is_the_one_recover_picks() {
    let dir = tempfile::tempdir().unwrap();
    let e = three_hosts(dir.path()).await;
    // big: 1024 MiB, one on h1 and one on h3.
    unit(
        &e,
        "big",
        1024,
        &[("big-1", "10.77.0.11", "h1"), ("big-2", "10.77.0.12", "h3")],
    )
    .await;
    // small: 256 MiB, two on h1 and one on h2.
    unit(
        &e,
        "small",
        256,
        &[
            ("small-1", "10.77.0.21", "h1"),
            ("small-2", "10.77.0.22", "h1"),
            ("small-3", "10.77.0.23", "h2"),
        ],
    )
    .await;
    // fill: 4096 MiB on h2, untouched by h1's loss: h2 has the least memory left.
    unit(&e, "fill", 4096, &[("fill-1", "10.77.0.31", "h2")]).await;
    monitor_says(
        &e,
        &[
            ("h1", HostState::Failed),
            ("h2", HostState::Ready),
            ("h3", HostState::Ready),
        ],
    );

    // What the Impact view says: every lost server replaceable, and where each goes.
    let report = e.impact(&[]).unwrap();
    assert_eq!(report.impact.failed_hosts, ["h1"]);
    assert!(
        report.impact.units.iter().all(|u| u.replaceable),
        "{:?}",
        report.impact.units
    );
    let shown = e.impact_replacements(&[]).unwrap();
    let shown: Vec<(String, String, String)> = shown
        .into_iter()
        .map(|r| (r.unit, r.server, r.host))
        .collect();
    // small (two of three lost, below its minimum) first: both to h3, the host with none of
    // small and the most memory left; then big-1 to h2, which has no server of big, though h3
    // still has more memory left.
    let want = |u: &str, s: &str, h: &str| (u.to_owned(), s.to_owned(), h.to_owned());
    assert_eq!(
        shown,
        [
            want("small", "small-1", "h3"),
            want("small", "small-2", "h3"),
            want("big", "big-1", "h2"),
        ]
    );

    // What `unit recover` does, unit by unit in the order the Impact view planned them: the
    // plan it shows and where the servers end up are the Impact view's hosts.
    let mut units: Vec<String> = shown.iter().map(|(u, _, _)| u.clone()).collect();
    units.dedup();
    let mut recovered = Vec::new();
    for u in &units {
        let action = UnitAction::Recover {
            from: Vec::new(),
            host_is_off: vec!["h1".into()],
        };
        let plan = e.unit_plan(u, &action).unwrap();
        let planned: Vec<(String, String, String)> = plan
            .servers
            .iter()
            .map(|s| (u.clone(), s.server.clone(), s.host.clone()))
            .collect();
        e.unit_run_planned(u, action, Some(&plan.fingerprint), quiet())
            .await
            .unwrap();
        let now = e.unit_show(u).unwrap();
        for (_, server, host) in &planned {
            let s = now.servers.iter().find(|s| s.name == *server).unwrap();
            assert_eq!(&s.host, host, "{server} runs where its plan said");
        }
        recovered.extend(planned);
    }
    assert_eq!(recovered, shown);
}
