//! Opt-in T2 (slow: ~2 min image build, ~1 min boot): the seed Flotilla writes works with the
//! real cloud-init of a Debian 12 image (RIG.md), not only with the lab's tiny guest —
//! hostname from meta-data, the static address on the NIC matched by MAC, runcmd.
//! Run: `FLOTILLA_TEST_CLOUD_INIT=1 scripts/test.sh`, or with the lab up:
//! `cargo test -p flotilla-tests --test lab_real_cloud_init -- --ignored`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::hypervisor::{HvConfig, Hypervisor};
use flotilla_tests::{GuestRun, Lab};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[tokio::test]
#[ignore = "slow and opt-in: needs the lab and a real cloud-init image (tests/rig/build-cloud-guest.sh)"]
async fn real_cloud_init_applies_flotillas_seed() {
    let lab = Lab::from_env();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/build-cloud-guest.sh");
    let built = Command::new(&script).output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());
    let hv = Hypervisor::new(HvConfig::default());
    let run = GuestRun {
        host: 2,
        tag: format!("cloudinit-{}", std::process::id()),
        image,
        cmdline: "root=LABEL=root rw console=ttyS0 net.ifnames=0".into(),
        memory_mib: 512,
        hostname: "cloud-web".into(),
        mac: "52:54:00:77:00:fd".into(),
        address: "10.77.0.249/24".into(),
        runcmd: vec![
            "mkdir -p /srv/www".into(),
            "hostname > /srv/www/index.html".into(),
            "cd /srv/www && setsid nohup python3 -m http.server 80 > /dev/null 2>&1 &".into(),
        ],
        boot_limit: Duration::from_secs(300),
        payload: None,
        http_path: "/".into(),
    };
    let outcome = run.boot_and_fetch(&lab, &hv).await;
    let serial = run.cleanup(&lab, &hv).await;
    let (page, boot) = outcome.unwrap_or_else(|e| panic!("{e}\n--- serial console ---\n{serial}"));
    assert_eq!(
        page.trim(),
        "cloud-web",
        "hostname set by cloud-init from the seed"
    );
    println!("real cloud-init: boot to HTTP {:.0} s", boot.as_secs_f64());
}
