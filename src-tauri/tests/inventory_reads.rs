//! T1: how many times an operation reads the inventory. A rollout of a 4-server unit on
//! libvirt's test driver, with the inventory's read counter (feature `test-hooks`). The bounds
//! are what the engine reads today: a change that reads the unit (or the whole inventory)
//! more often fails here; one that reads less lowers them.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::fixture::{add_host, engine_in, import_base, node_copy, qcow2, quiet};
use flotilla::ops::units::{UnitAction, UnitForm, UnitUpdate};
use flotilla::ops::Engine;
use std::path::Path;

/// Two test-driver hosts with the lab's network, a master image, a definition, and unit `app`
/// of `count` servers, deployed.
async fn deployed_unit(dir: &Path, count: u32) -> Engine {
    let e = engine_in(dir);
    for h in ["h1", "h2"] {
        add_host(&e, h, &node_copy(dir, h)).await;
        e.host_set_network(h, "10.77.0.0/24", "10.77.0.1", "")
            .unwrap();
    }
    let disk = dir.join("master.qcow2");
    qcow2(&disk, "64M");
    import_base(&e, disk, String::new()).await;
    e.def_create("shop").unwrap();
    e.unit_create(&UnitForm {
        name: "app".into(),
        image: "base:1".into(),
        definition: "shop:1".into(),
        count,
        name_pattern: "app-{n}".into(),
        addresses: "10.77.0.11-10.77.0.60".into(),
        policy: Some(flotilla::model::RolloutPolicy {
            drain_timeout_s: 0,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    e.unit_run("app", UnitAction::Deploy, quiet())
        .await
        .unwrap();
    e
}

/// A rollout of a definition change to 4 servers: each server moves to v2, and the operation
/// reads the inventory no more than it does today (`UNIT_GETS`, `UNIT_LISTS`, `ALL_READS`).
#[tokio::test]
async fn a_rollout_of_four_servers_reads_the_unit_a_bounded_number_of_times() {
    let dir = tempfile::tempdir().unwrap();
    let e = deployed_unit(dir.path(), 4).await;
    let now = e.def_show("shop", None).unwrap();
    let text = now.text.replacen("[env]", "[env]\nRELEASE = \"next\"", 1);
    e.def_set_text("shop", &text, Some(now.version.version))
        .unwrap();
    e.unit_update(
        "app",
        &UnitUpdate {
            definition: Some("shop".into()),
            ..Default::default()
        },
    )
    .unwrap();

    e.inventory.reads_reset();
    e.unit_run(
        "app",
        UnitAction::Rollout {
            back: false,
            canary: None,
            policy: None,
        },
        quiet(),
    )
    .await
    .unwrap();
    let reads = e.inventory.reads();
    eprintln!("inventory reads of a 4-server rollout: {reads:?}");

    let u = e.unit_show("app").unwrap();
    assert_eq!(u.current_version, 2);
    assert_eq!(u.servers.len(), 4);
    assert!(u.servers.iter().all(|s| s.version == Some(2)), "{u:?}");

    assert!(reads.of("unit_get") <= UNIT_GETS, "{reads:?}");
    assert!(reads.of("unit_list") <= UNIT_LISTS, "{reads:?}");
    assert!(reads.total() <= ALL_READS, "{reads:?}");
}

// What a 4-server rollout reads today (issue 21: each of these is to come down as the
// operation reads one snapshot of its unit). Before `unit_get` read by key, each of its calls
// read every unit (13 whole-inventory reads of units per rollout).
/// The unit read by key: the run (3), each batch's end (1), the end of the rollout (1),
/// releasing the masters and payloads no one uses any more (6).
const UNIT_GETS: u64 = 11;
/// Every unit read: releasing a master checks that no other unit uses it.
const UNIT_LISTS: u64 = 2;
/// Every inventory read of the rollout.
const ALL_READS: u64 = 54;
