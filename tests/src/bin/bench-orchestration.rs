//! Benchmark (not a test): the operations engine's own cost. Deploys, stops, starts and deletes
//! a unit of N servers across H hosts of libvirt's test driver (no guests boot, so what remains
//! is Flotilla: planning, journaling every step, the inventory, the per-host workers), and runs
//! the same libvirt calls directly — one define + start per server, in parallel per host — as
//! the baseline. Prints one `key value` per line for tests/rig/bench-units.sh.
//! Run: cargo run --release -p flotilla-tests --bin bench-orchestration -- 500 20
#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark: a panic is the report

use flotilla::hypervisor::{BootSpec, DiskFormat, DiskSpec, DomainSpec, DomainType, NicSpec};
use flotilla::model::{BridgeName, Firmware, LibvirtUri, MacAddr};
use flotilla::ops::hosts::HostInput;
use flotilla::ops::images::{BootInput, ImportRequest};
use flotilla::ops::units::{UnitAction, UnitForm};
use std::sync::Arc;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("SERVERS HOSTS"))
        .collect();
    let (servers, hosts) = (
        args.first().copied().unwrap_or(500),
        args.get(1).copied().unwrap_or(20),
    );
    let dir = tempfile::tempdir().unwrap();
    let e = flotilla_tests::engine_in(dir.path());
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/test-node.xml");
    let mut uris = Vec::new();
    for i in 1..=hosts {
        let node = dir.path().join(format!("h{i}.xml"));
        // 64 GiB per host so memory is not what limits placement.
        let xml = std::fs::read_to_string(&fixture)
            .unwrap()
            .replace("<memory>8388608</memory>", "<memory>67108864</memory>");
        std::fs::write(&node, xml).unwrap();
        let uri = format!("test://{}", node.display());
        e.host_add(&HostInput {
            name: format!("h{i}"),
            uri: uri.clone(),
            pool: None,
            bridge: Some("br0".into()),
            accept_host_key: None,
        })
        .await
        .unwrap();
        e.host_set_network(&format!("h{i}"), "10.0.0.0/16", "10.0.0.1", "")
            .unwrap();
        uris.push(uri);
    }
    let disk = dir.path().join("m.qcow2");
    assert!(std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("64M")
        .status()
        .unwrap()
        .success());
    e.image_import(
        &ImportRequest {
            image: "base".into(),
            file: disk,
            notes: String::new(),
            boot: BootInput::Disk(Firmware::Bios),
        },
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    e.def_create("app").unwrap();

    let t = Instant::now();
    e.unit_create(&UnitForm {
        name: "big".into(),
        image: "base:1".into(),
        definition: "app:1".into(),
        count: servers,
        name_pattern: "big-{n}".into(),
        addresses: "10.0.1.1-10.0.250.250".into(),
        size: Some(flotilla::model::ServerSize {
            cpus: 1,
            memory_mib: 128,
            disk_gib: 0,
        }),
        ..Default::default()
    })
    .unwrap();
    println!("create {:.3}", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let plan = e.unit_plan("big", &UnitAction::Deploy).unwrap();
    assert_eq!(plan.servers.len(), servers as usize);
    println!("plan {:.3}", t.elapsed().as_secs_f64());
    let quiet: flotilla::ops::units::StepFn = Arc::new(|_| {});
    for (key, action) in [
        ("deploy", UnitAction::Deploy),
        (
            "stop",
            UnitAction::Stop {
                servers: vec![],
                force: false,
            },
        ),
        ("start", UnitAction::Start { servers: vec![] }),
        ("delete", UnitAction::Delete { force: false }),
    ] {
        let t = Instant::now();
        e.unit_run("big", action, quiet.clone()).await.unwrap();
        println!("{key} {:.3}", t.elapsed().as_secs_f64());
    }
    let steps: usize = e
        .inventory
        .operation_list(10)
        .unwrap()
        .iter()
        .map(|o| o.steps.len())
        .sum();
    println!("journal_rows {steps}");

    // Baseline: the same define + start per server, straight to libvirt, 4 at a time per host.
    let hv = &e.hypervisor;
    let t = Instant::now();
    let per_host = servers.div_ceil(hosts);
    let mut all = Vec::new();
    for (h, uri) in uris.iter().enumerate() {
        let uri = LibvirtUri::parse(uri).unwrap();
        all.push(async move {
            let names: Vec<String> = (0..per_host).map(|i| format!("raw-{h}-{i}")).collect();
            for chunk in names.chunks(4) {
                let jobs = chunk.iter().map(|name| {
                    let uri = uri.clone();
                    async move {
                        let spec = DomainSpec {
                            name: name.clone(),
                            domain_type: DomainType::Test,
                            vcpus: 1,
                            memory_mib: 128,
                            boot: BootSpec::Disk {
                                uefi: false,
                                cdrom_first: false,
                            },
                            disks: vec![DiskSpec {
                                path: format!("/var/lib/libvirt/images/{name}.qcow2"),
                                format: DiskFormat::Qcow2,
                                readonly: false,
                                cdrom: false,
                            }],
                            nics: vec![NicSpec {
                                mac: MacAddr::new([0x52, 0x54, 0, 9, h as u8, name.len() as u8]),
                                bridge: BridgeName::parse("br0").unwrap(),
                            }],
                            serial_log: None,
                            metadata: vec![],
                            vnc: false,
                            guest_agent: false,
                        };
                        hv.domain_define(&uri, &spec).await.unwrap();
                        hv.domain_start(&uri, name).await.unwrap();
                    }
                });
                futures_join(jobs).await;
            }
        });
    }
    futures_join(all).await;
    println!("raw_define_start {:.3}", t.elapsed().as_secs_f64());
}

/// Runs futures concurrently on this task (the libvirt calls go to per-host threads).
async fn futures_join<F: std::future::Future<Output = ()>>(futs: impl IntoIterator<Item = F>) {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut futs = futs;
    std::future::poll_fn(move |cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
