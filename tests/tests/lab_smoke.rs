//! T2 smoke test: a real QEMU guest on lab host 1, built only with Flotilla's own code —
//! uploads into the host's pool, a linked-clone overlay, a NoCloud seed from `guest/`, a domain
//! with a fixed MAC on the bridge — answering HTTP with its seeded hostname and the master's
//! version marker. Then everything is removed and the host is as before.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::hypervisor::{HvConfig, Hypervisor};
use flotilla::model::{LibvirtUri, PoolName};
use flotilla_tests::{GuestRun, Lab};
use std::time::{Duration, Instant};

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_guest_boots_from_a_linked_clone_and_serves_its_seeded_hostname() {
    let lab = Lab::from_env();
    let hv = Hypervisor::new(HvConfig::default());
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    let pool = PoolName::parse("default").unwrap();
    let volumes_before = hv.volume_list(&uri, &pool).await.unwrap();
    let domains_before = hv.domain_names(&uri).await.unwrap();
    let keep = std::env::var_os("FLOTILLA_LAB_KEEP").is_some();

    let run = GuestRun {
        host: 1,
        tag: format!("smoke-{}", std::process::id()),
        image: lab.guest(),
        cmdline: "console=ttyS0 root=LABEL=root".into(),
        memory_mib: 128,
        hostname: "smoke-web".into(),
        mac: "52:54:00:77:00:fe".into(),
        address: "10.77.0.250/24".into(),
        runcmd: vec!["/opt/middleware/httpd-start".into()],
        boot_limit: Duration::from_secs(if keep { 20 } else { 180 }),
        payload: None,
        http_path: "/".into(),
    };
    let started = Instant::now();
    let outcome = run.boot_and_fetch(&lab, &hv).await;
    let elapsed = started.elapsed();
    if keep {
        panic!(
            "FLOTILLA_LAB_KEEP is set: left {} and its volumes on lab host 1 ({outcome:?})",
            run.tag
        );
    }
    let serial = run.cleanup(&lab, &hv).await;

    let (page, boot_to_http) =
        outcome.unwrap_or_else(|e| panic!("{e}\n--- serial console ---\n{serial}"));
    assert!(
        page.contains("<h1>smoke-web</h1>"),
        "the seeded hostname: {page}\n{serial}"
    );
    assert!(
        page.contains("master base-v1"),
        "the master's marker: {page}"
    );
    assert_eq!(
        hv.volume_list(&uri, &pool).await.unwrap(),
        volumes_before,
        "no volume left"
    );
    assert_eq!(
        hv.domain_names(&uri).await.unwrap(),
        domains_before,
        "no domain left"
    );
    println!(
        "smoke: boot to HTTP {:.1} s, whole test {:.1} s",
        boot_to_http.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}
