//! T2: hosts on real libvirtd daemons — facts, and a host that dies and comes back. Uses lab
//! host 2 (the smoke test uses host 1).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::hypervisor::HvConfig;
use flotilla::inventory::{Actor, Inventory};
use flotilla::model::{BridgeCheck, HostStatus};
use flotilla::ops::hosts::HostInput;
use flotilla::ops::Engine;
use flotilla_tests::Lab;

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_lab_host_is_registered_goes_unreachable_when_killed_and_recovers() {
    let lab = Lab::from_env();
    let engine = Engine::with(
        Inventory::open_in_memory().unwrap(),
        HvConfig::default(),
        Actor::new("test"),
        std::path::PathBuf::from("/nonexistent/flotilla-library"),
    );
    let host = engine
        .host_add(&HostInput {
            name: "lab-h2".into(),
            uri: lab.host_uri(2),
            pool: None,
            bridge: Some("br0".into()),
            accept_host_key: None,
        })
        .await
        .unwrap();
    assert_eq!(host.status, HostStatus::Ok);
    let facts = host.facts.unwrap();
    assert_eq!(facts.hypervisor, "QEMU");
    assert!(
        facts.libvirt_version.starts_with("9."),
        "{}",
        facts.libvirt_version
    );
    assert_eq!(
        facts.bridge,
        BridgeCheck::Found,
        "br0 is a bridge interface of the host"
    );
    assert!(facts.pool.unwrap().capacity_bytes > 0);

    // A bridge that is not there is reported with the ones that are.
    let err = engine
        .host_add(&HostInput {
            name: "lab-h2-bad".into(),
            // Another spelling of the same host (a second registration of one URI is refused).
            uri: format!("{}&no_verify=0", lab.host_uri(2)),
            pool: None,
            bridge: Some("br7".into()),
            accept_host_key: None,
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("bridge 'br7' does not exist"),
        "{err}"
    );

    lab.run(&["kill-host", "2"]);
    let down = engine.host_check("lab-h2").await.unwrap();
    assert_eq!(
        down.status,
        HostStatus::Unreachable,
        "{}",
        down.status_detail
    );
    assert!(
        down.status_detail.contains("lab-h2") || down.status_detail.contains("libvirt-sock"),
        "{}",
        down.status_detail
    );

    lab.run(&["revive-host", "2"]);
    // The same engine (and hypervisor adapter) reconnects by itself.
    let up = engine.host_check("lab-h2").await.unwrap();
    assert_eq!(up.status, HostStatus::Ok, "{}", up.status_detail);
}
