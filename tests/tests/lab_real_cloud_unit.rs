//! Opt-in T2 (slow: ~2 min image build, ~1 min boots): a unit deployed from a disk-booting
//! master with the real cloud-init (Debian 12, BIOS → SYSLINUX → kernel, RIG.md) works as with
//! the lab's tiny guest: two servers behind the lab's HAProxy answer with their hostnames,
//! and delete leaves the hosts and HAProxy as before.
//! Run: `FLOTILLA_TEST_CLOUD_INIT=1 scripts/test.sh`, or with the lab up:
//! `cargo test -p flotilla-tests --test lab_real_cloud_unit -- --ignored`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::model::{Firmware, RolloutPolicy, ServerSize};
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::{UnitAction, UnitForm};
use flotilla_tests::Lab;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

const DEFINITION: &str = r#"
[server]
name = "cloudweb"
kind = "python http.server"
port = 8080

[health]
path = "/health"
interval_s = 2
timeout_s = 1
rise = 1
fall = 2

[hooks]
install = "mkdir -p /srv/www && hostname > /srv/www/index.html && echo ok > /srv/www/health"
start = "cd /srv/www && setsid nohup python3 -m http.server 8080 > /dev/null 2>&1 &"
stop = "pkill -f http.server || true"
"#;

#[tokio::test]
#[ignore = "slow and opt-in: needs the lab and a real cloud-init image (tests/rig/build-cloud-guest.sh)"]
async fn real_cloud_init_unit_deploys_from_a_disk_booting_master() {
    let lab = Lab::from_env();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rig/build-cloud-guest.sh");
    let built = Command::new(&script).output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let image = PathBuf::from(String::from_utf8(built.stdout).unwrap().trim());

    let dir = tempfile::tempdir().unwrap();
    let e = lab.unit_engine(dir.path()).await;
    e.image_import(
        &ImportRequest {
            image: "debian-cloud".into(),
            file: image.join("disk.qcow2"),
            notes: "Debian 12 + cloud-init, BIOS boot".into(),
            boot: BootInput::Disk(Firmware::Bios),
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    e.def_create("cloudweb").unwrap();
    e.def_set_text("cloudweb", DEFINITION, None).unwrap();
    let pool = lab.get("FLOTILLA_LAB_HAPROXY_BACKEND").to_owned();
    e.unit_create(&UnitForm {
        name: "cloudweb".into(),
        image: "debian-cloud:1".into(),
        definition: "cloudweb:2".into(),
        size: Some(ServerSize {
            cpus: 1,
            memory_mib: 512,
            disk_gib: 0,
        }),
        count: 2,
        name_pattern: "cloudweb-{n}".into(),
        addresses: "10.77.0.41-10.77.0.42".into(),
        lb: Some("lab".into()),
        lb_pool: Some(pool.clone()),
        policy: Some(RolloutPolicy {
            health_timeout_s: 400,
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let deployed = e
        .unit_run("cloudweb", UnitAction::Deploy, Arc::new(|_| {}))
        .await;
    let took = started.elapsed();
    let outcome = deployed.map(|_| {
        let url = format!("http://{}/", lab.get("FLOTILLA_LAB_GATEWAY"));
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            if let Some(p) = lab.http_get(&url) {
                seen.insert(p.trim().to_owned());
            }
            if seen.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        seen
    });
    e.unit_run(
        "cloudweb",
        UnitAction::Delete { force: true },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    let seen = outcome.unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        seen,
        ["cloudweb-1", "cloudweb-2"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "both servers answer through HAProxy with the hostname cloud-init set"
    );
    println!(
        "real cloud-init unit: deploy of 2 servers {:.0} s",
        took.as_secs_f64()
    );
}
