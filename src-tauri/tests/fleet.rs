//! T1: live state of the whole fleet asked once per host (libvirt's test driver, a real
//! inventory), the deltas the desktop app pushes to its views, and the views' search.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::fixture::{self, quiet};
use flotilla::model::LibvirtUri;
use flotilla::ops::live::LiveFeed;
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla::ops::Engine;
use std::collections::BTreeMap;

/// Three test-driver hosts, two deployed units of four servers (`fleet-a`, `fleet-b`), one
/// server of `fleet-b` stopped, and a unit with nothing deployed (`fleet-c`).
async fn fleet() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let e = fixture::engine_in(dir.path());
    for h in ["fleet-h1", "fleet-h2", "fleet-h3"] {
        fixture::add_host(&e, h, &fixture::node_copy(dir.path(), h)).await;
        e.host_set_network(h, "10.77.0.0/24", "10.77.0.1", "")
            .unwrap();
    }
    let disk = dir.path().join("master.qcow2");
    fixture::qcow2(&disk, "64M");
    fixture::import_base(&e, disk, String::new()).await;
    e.def_create("shop").unwrap();
    for (unit, first, count) in [("fleet-a", 11, 4), ("fleet-b", 21, 4), ("fleet-c", 31, 2)] {
        e.unit_create(&UnitForm {
            name: unit.into(),
            image: "base:1".into(),
            definition: "shop:1".into(),
            count,
            name_pattern: format!("{unit}-{{n}}"),
            addresses: format!("10.77.0.{first}-10.77.0.{}", first + 8),
            size: Some(flotilla::model::ServerSize {
                cpus: 1,
                memory_mib: 128,
                disk_gib: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    }
    for unit in ["fleet-a", "fleet-b"] {
        e.unit_run(unit, UnitAction::Deploy, quiet()).await.unwrap();
    }
    e.unit_run(
        "fleet-b",
        UnitAction::Stop {
            servers: vec!["fleet-b-2".into()],
            force: true,
        },
        quiet(),
    )
    .await
    .unwrap();
    (dir, e)
}

fn powers(live: &flotilla::ops::live::FleetLive) -> BTreeMap<String, String> {
    live.servers
        .iter()
        .map(|s| (s.server.clone(), s.power.clone()))
        .collect()
}

fn uri_of(e: &Engine, host: &str) -> LibvirtUri {
    e.host_show(host).unwrap().uri
}

#[tokio::test]
async fn every_servers_power_comes_from_one_listing_per_host() {
    let (_dir, e) = fleet().await;
    let live = e.fleet_live().await.unwrap();
    let p = powers(&live);
    assert_eq!(p.len(), 10, "every server of every unit: {p:?}");
    for s in [
        "fleet-a-1",
        "fleet-a-2",
        "fleet-a-3",
        "fleet-a-4",
        "fleet-b-1",
        "fleet-b-3",
        "fleet-b-4",
    ] {
        assert_eq!(p[s], "running", "{s}");
    }
    assert_eq!(p["fleet-b-2"], "shut off");
    assert_eq!(p["fleet-c-1"], "not defined", "never deployed");
    assert_eq!(
        live.hosts_asked, 3,
        "each host asked once, not once per unit or server"
    );
    assert_eq!(live.pools_asked, 0, "no unit has a load balancer");
    assert!(live.unreachable.is_empty());
    // The one-unit view asks the same way and says the same.
    let one = e.unit_live("fleet-b").await.unwrap();
    assert_eq!(one.len(), 4);
    assert!(one.iter().all(|s| p[&s.server] == s.power));
}

#[tokio::test]
async fn the_feed_sends_everything_first_then_only_what_changed() {
    let (_dir, e) = fleet().await;
    let mut feed = LiveFeed::default();
    assert!(feed.snapshot().is_none(), "nothing before the first look");
    let first = feed.update(e.fleet_live().await.unwrap()).unwrap();
    assert!(first.full);
    assert_eq!(first.seq, 1);
    assert_eq!(first.changed.len(), 10);
    assert!(
        feed.update(e.fleet_live().await.unwrap()).is_none(),
        "nothing changed: nothing sent"
    );

    // A server powered off behind Flotilla's back (on its host): exactly that one is sent.
    let host = e
        .inventory
        .server_list()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "fleet-a-3")
        .unwrap()
        .host;
    assert!(e
        .hypervisor
        .domain_destroy(&uri_of(&e, &host), "fleet-a-3")
        .await
        .unwrap());
    let delta = feed.update(e.fleet_live().await.unwrap()).unwrap();
    assert!(!delta.full);
    assert_eq!(delta.seq, 2);
    assert_eq!(delta.changed.len(), 1, "{delta:?}");
    assert_eq!(delta.changed[0].server, "fleet-a-3");
    assert_eq!(delta.changed[0].power, "shut off");

    // A unit deleted: its servers are sent as gone; the snapshot a new view reads agrees.
    e.unit_run("fleet-a", UnitAction::Delete { force: true }, quiet())
        .await
        .unwrap();
    let delta = feed.update(e.fleet_live().await.unwrap()).unwrap();
    let mut gone = delta.gone.clone();
    gone.sort();
    assert_eq!(gone, ["fleet-a-1", "fleet-a-2", "fleet-a-3", "fleet-a-4"]);
    let snap = feed.snapshot().unwrap();
    assert_eq!(snap.seq, 3);
    assert_eq!(snap.changed.len(), 6);
    assert!(snap
        .changed
        .iter()
        .all(|s| !s.server.starts_with("fleet-a-")));
}

#[tokio::test]
async fn a_host_that_cannot_be_listed_is_named_and_only_its_servers_are_unknown() {
    let (dir, e) = fleet().await;
    let mut feed = LiveFeed::default();
    feed.update(e.fleet_live().await.unwrap()).unwrap();
    // fleet-h2 goes away: its node file is gone and its connection closed.
    let uri = uri_of(&e, "fleet-h2");
    e.hypervisor.forget(&uri);
    std::fs::remove_file(dir.path().join("fleet-h2.xml")).unwrap();
    let live = e.fleet_live().await.unwrap();
    assert_eq!(live.unreachable.keys().collect::<Vec<_>>(), ["fleet-h2"]);
    let on_h2: Vec<String> = e
        .inventory
        .server_list()
        .unwrap()
        .into_iter()
        .filter(|s| s.host == "fleet-h2")
        .map(|s| s.name)
        .collect();
    assert!(!on_h2.is_empty(), "placement spread servers onto fleet-h2");
    for s in &live.servers {
        if on_h2.contains(&s.server) {
            assert!(s.power.starts_with("unknown: "), "{s:?}");
        } else {
            assert!(!s.power.starts_with("unknown"), "{s:?}");
        }
    }
    let delta = feed.update(live).unwrap();
    assert_eq!(delta.unreachable.len(), 1);
    assert_eq!(
        delta.changed.len(),
        on_h2.len(),
        "only fleet-h2's servers changed"
    );
}

fn hits(e: &Engine, q: &str) -> Vec<(String, Vec<String>)> {
    e.unit_search(q)
        .unwrap()
        .into_iter()
        .map(|h| (h.unit, h.servers))
        .collect()
}

#[tokio::test]
async fn search_finds_servers_by_name_address_mac_host_and_state() {
    let (_dir, e) = fleet().await;
    let all = e.inventory.server_list().unwrap();
    let b3 = all.iter().find(|s| s.name == "fleet-b-3").unwrap().clone();

    assert_eq!(hits(&e, "").len(), 3, "the empty search finds every unit");
    assert_eq!(
        hits(&e, "fleet-b-3"),
        [("fleet-b".into(), vec!["fleet-b-3".into()])]
    );
    assert_eq!(
        hits(&e, &format!("address:{}", b3.address)),
        [("fleet-b".into(), vec!["fleet-b-3".into()])]
    );
    assert_eq!(
        hits(&e, &b3.mac.to_uppercase().replace(':', "-")),
        [("fleet-b".into(), vec!["fleet-b-3".into()])],
        "a MAC typed in upper case with dashes"
    );
    let on_host: Vec<String> = all
        .iter()
        .filter(|s| s.host == b3.host && s.unit == "fleet-b")
        .map(|s| s.name.clone())
        .collect();
    let found = hits(&e, &format!("unit:fleet-b host:{}", b3.host));
    assert_eq!(found, [("fleet-b".into(), on_host)]);
    assert_eq!(
        hits(&e, "state:stopped"),
        [("fleet-b".into(), vec!["fleet-b-2".into()])]
    );
    assert_eq!(
        hits(&e, "state:planned"),
        [(
            "fleet-c".into(),
            vec!["fleet-c-1".into(), "fleet-c-2".into()]
        )]
    );
    assert!(hits(&e, "no-such-thing").is_empty());

    assert_eq!(e.host_search("fleet-h2").unwrap(), ["fleet-h2"]);
    assert_eq!(e.host_search("state:ok").unwrap().len(), 3);
    assert_eq!(e.host_search("address:fleet-h3.xml").unwrap(), ["fleet-h3"]);
}

#[tokio::test]
async fn hostile_and_huge_searches_are_refused_or_plain_text_and_change_nothing() {
    let (_dir, e) = fleet().await;
    let before = e.inventory.server_list().unwrap();
    for q in [
        "' OR 1=1 --",
        "%",
        "_",
        ".*",
        "\\",
        "fleet-[ab]-1",
        "\"fleet-a\"",
    ] {
        assert!(hits(&e, q).is_empty(), "{q} found something");
        assert!(e.host_search(q).unwrap().is_empty(), "{q} found a host");
    }
    for q in ["x".repeat(10_000), "fleet\u{7}".into(), "colour:red".into()] {
        let err = e.unit_search(&q).unwrap_err();
        let api = flotilla::error::ApiError::from(&err);
        assert_eq!(
            api.code,
            flotilla::error::ErrorCode::InvalidInput,
            "{api:?}"
        );
        assert!(api.message.starts_with("search: "), "{}", api.message);
        assert!(
            api.message.len() < 300,
            "the message stays short: {}",
            api.message
        );
        assert!(e.host_search(&q).is_err());
    }
    assert_eq!(e.inventory.server_list().unwrap().len(), before.len());
    assert_eq!(e.inventory.server_list().unwrap(), before);
}
