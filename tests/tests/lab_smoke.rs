//! T2 smoke test: a real QEMU guest on lab host 1, built only with Flotilla's own code —
//! uploads into the host's pool, a linked-clone overlay, a NoCloud seed from `guest/`, a domain
//! with a fixed MAC on the bridge — answering HTTP with its seeded hostname and the master's
//! version marker. Then everything is removed and the host is as before.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::guest::{write_seed_disk, NicConfig, SeedSpec};
use flotilla::hypervisor::{
    BootSpec, DiskFormat, DiskSpec, DomainSpec, DomainType, HvConfig, Hypervisor, NicSpec,
};
use flotilla::model::{BridgeName, HostName, Ipv4Cidr, LibvirtUri, MacAddr, PoolName};
use flotilla_tests::Lab;
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

    let tag = format!("smoke-{}", std::process::id());
    let started = Instant::now();
    let outcome = boot_and_fetch(&lab, &hv, &uri, &pool, &tag).await;
    let elapsed = started.elapsed();

    if std::env::var_os("FLOTILLA_LAB_KEEP").is_some() {
        panic!("FLOTILLA_LAB_KEEP is set: left domain {tag} and its volumes on lab host 1 ({outcome:?})");
    }
    // Clean up whatever happened above, then check the host is as before.
    hv.domain_destroy(&uri, &tag).await.unwrap();
    hv.domain_undefine(&uri, &tag).await.unwrap();
    for suffix in [
        "disk.qcow2",
        "seed.img",
        "master.qcow2",
        "vmlinuz",
        "initrd.img",
    ] {
        hv.volume_delete(&uri, &pool, &format!("{tag}-{suffix}"))
            .await
            .unwrap();
    }
    let serial = lab.serial_log(1, &format!("{tag}.serial"));
    let _ = std::fs::remove_file(lab.dir().join(format!("h1/log/qemu/{tag}.serial")));

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

async fn boot_and_fetch(
    lab: &Lab,
    hv: &Hypervisor,
    uri: &LibvirtUri,
    pool: &PoolName,
    tag: &str,
) -> Result<(String, Duration), String> {
    let guest = lab.guest();
    let mut paths = std::collections::HashMap::new();
    for (file, format) in [
        ("master.qcow2", DiskFormat::Qcow2),
        ("vmlinuz", DiskFormat::Raw),
        ("initrd.img", DiskFormat::Raw),
    ] {
        let vol = hv
            .volume_upload(
                uri,
                pool,
                &format!("{tag}-{file}"),
                guest.join(file),
                format,
                |_, _| {},
            )
            .await
            .map_err(|e| format!("upload {file}: {e:?}"))?;
        paths.insert(file, vol.path);
    }
    let disk = hv
        .volume_create_overlay(
            uri,
            pool,
            &format!("{tag}-disk.qcow2"),
            &format!("{tag}-master.qcow2"),
            DiskFormat::Qcow2,
        )
        .await
        .map_err(|e| format!("overlay: {e:?}"))?;

    let mac = MacAddr::parse("52:54:00:77:00:fe").unwrap();
    let address = Ipv4Cidr::parse("10.77.0.250/24").unwrap();
    let seed_dir = tempfile::tempdir().unwrap();
    let seed_file = seed_dir.path().join("seed.img");
    write_seed_disk(
        &SeedSpec {
            instance_id: format!("{tag}-1"),
            hostname: HostName::parse("smoke-web").unwrap(),
            nics: vec![NicConfig {
                mac,
                address,
                gateway: Some(lab.get("FLOTILLA_LAB_GATEWAY").parse().unwrap()),
            }],
            nameservers: vec![],
            runcmd: vec!["/opt/middleware/httpd-start".into()],
        },
        &seed_file,
    )
    .map_err(|e| format!("seed: {e}"))?;
    let seed = hv
        .volume_upload(
            uri,
            pool,
            &format!("{tag}-seed.img"),
            seed_file,
            DiskFormat::Raw,
            |_, _| {},
        )
        .await
        .map_err(|e| format!("upload seed: {e:?}"))?;

    hv.domain_define(
        uri,
        &DomainSpec {
            name: tag.to_owned(),
            domain_type: DomainType::Qemu,
            vcpus: 1,
            memory_mib: 128,
            boot: BootSpec::Kernel {
                kernel: paths["vmlinuz"].clone(),
                initrd: Some(paths["initrd.img"].clone()),
                cmdline: "console=ttyS0 root=LABEL=root".into(),
            },
            disks: vec![
                DiskSpec {
                    path: disk.path,
                    format: DiskFormat::Qcow2,
                    readonly: false,
                },
                DiskSpec {
                    path: seed.path,
                    format: DiskFormat::Raw,
                    readonly: true,
                },
            ],
            nics: vec![NicSpec {
                mac,
                bridge: BridgeName::parse("br0").unwrap(),
            }],
            serial_log: Some(format!("/var/log/libvirt/qemu/{tag}.serial")),
            metadata: vec![("test".into(), "lab smoke".into())],
        },
    )
    .await
    .map_err(|e| format!("define: {e:?}"))?;
    hv.domain_start(uri, tag)
        .await
        .map_err(|e| format!("start: {e:?}"))?;
    let booted = Instant::now();
    let url = format!("http://{}/", address.addr());
    let limit = if std::env::var_os("FLOTILLA_LAB_KEEP").is_some() {
        20
    } else {
        180
    };
    while booted.elapsed() < Duration::from_secs(limit) {
        if let Some(page) = lab.http_get(&url) {
            return Ok((page, booted.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("{url} did not answer within {limit} s"))
}
