//! T2: a master updated through a builder VM on the lab. The test plays the admin through the
//! builder's seed script: it changes the master's version marker. Capture makes v2 (made from
//! v1); v2 goes to host 2 once; a server booted from v2 shows the new marker over HTTP.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::error::{ApiError, ErrorCode};
use flotilla::hypervisor::{DomainType, HvConfig};
use flotilla::model::{BootMode, Firmware, LibvirtUri, PoolName};
use flotilla::ops::builder::{BuildFrom, BuildRequest, CaptureRequest};
use flotilla::ops::images::{BootInput, ImportRequest, ProgressFn};
use flotilla::ops::Engine;
use flotilla_tests::{engine_in, GuestRun, Lab};
use std::sync::Arc;
use std::time::Duration;

fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

async fn engine_with_base(lab: &Lab, dir: &std::path::Path, image: &str) -> Engine {
    let e = engine_in(dir);
    lab.add_hosts(&e, &[1, 2]).await;
    let g = lab.guest();
    e.image_import(
        &ImportRequest {
            image: image.into(),
            file: g.join("master.qcow2"),
            notes: "the lab's base master".into(),
            boot: BootInput::Kernel {
                kernel: g.join("vmlinuz"),
                initrd: Some(g.join("initrd.img")),
                cmdline: "console=ttyS0 root=LABEL=root".into(),
            },
        },
        quiet(),
    )
    .await
    .unwrap();
    e
}

fn build(image: &str, script: &[&str]) -> BuildRequest {
    BuildRequest {
        image: image.into(),
        host: "lab-h1".into(),
        from: BuildFrom::Version(image.into()),
        cpus: 1,
        memory_mib: 128,
        disk_bytes: None,
        script: script.iter().map(|s| s.to_string()).collect(),
        address: None,
        domain_type: DomainType::Qemu,
    }
}

/// Imports a raw disk of `size` bytes with an MBR signature (so the import accepts it; it boots
/// nowhere): zeros, or incompressible pseudo-random data when `random`.
async fn import_raw_disk(
    e: &Engine,
    dir: &std::path::Path,
    image: &str,
    size: usize,
    random: bool,
    firmware: Firmware,
) {
    let raw = dir.join(format!("{image}.raw"));
    let mut bytes = vec![0u8; size];
    if random {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in bytes.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    std::fs::write(&raw, &bytes).unwrap();
    drop(bytes);
    e.image_import(
        &ImportRequest {
            image: image.into(),
            file: raw,
            notes: String::new(),
            boot: BootInput::Disk(firmware),
        },
        quiet(),
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_master_is_updated_through_a_builder_and_v2_serves_the_new_marker() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_base(&lab, dir.path(), "tiny").await;
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    let pool = PoolName::parse("default").unwrap();

    let b = e
        .image_build(
            &build(
                "tiny",
                &["echo base-v2 > /etc/flotilla-master-version", "sync"],
            ),
            quiet(),
        )
        .await
        .unwrap();
    assert_eq!(b.state, "running");
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        Some(true)
    );
    assert!(e
        .builder_console(&b)
        .await
        .unwrap()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    // Wait until the script has run: the guest says "ready" on its serial console, which
    // Flotilla reads through libvirt.
    let mut console = String::new();
    for _ in 0..240 {
        console = e.builder_serial("tiny", 64 * 1024).await.unwrap();
        if console.contains("flotilla-guest: ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(console.contains("runcmd: echo base-v2"), "{console}");

    let v2 = e
        .image_capture(
            &CaptureRequest {
                image: "tiny".into(),
                seal_cloud_init: false,
                seal_sysprep: false,
                force: false,
                shutdown_timeout: Duration::from_secs(90),
                notes: "marker v2".into(),
            },
            quiet(),
        )
        .await
        .unwrap_or_else(|err| panic!("{err}\n{console}"));
    assert_eq!((v2.version, v2.parent), (2, Some(1)), "lineage");
    assert!(
        v2.origin.contains("builder on host lab-h1"),
        "{}",
        v2.origin
    );
    assert!(v2.seal.is_empty(), "no seal is claimed");
    assert!(
        matches!(v2.boot, BootMode::Kernel { .. }),
        "boots like its base"
    );
    assert!(e.builder_list().unwrap().is_empty(), "the builder is gone");
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        None
    );
    for v in &b.volumes {
        assert_eq!(
            e.hypervisor.volume_get(&uri, &pool, v).await.unwrap(),
            None,
            "{v} removed"
        );
    }

    let first = e.image_ensure("tiny:2", "lab-h2", quiet()).await.unwrap();
    assert!(first.bytes_copied > 0);
    let again = e.image_ensure("tiny:2", "lab-h2", quiet()).await.unwrap();
    assert_eq!(again.bytes_copied, 0, "ensured twice, copied once");

    // Boot a server from v2 and read the marker over HTTP.
    let files = tempfile::tempdir().unwrap();
    let lib = dir.path().join("library");
    let BootMode::Kernel {
        kernel_file,
        initrd_file,
        ..
    } = &v2.boot
    else {
        unreachable!()
    };
    for (from, to) in [
        (v2.file.clone(), "master.qcow2"),
        (kernel_file.clone(), "vmlinuz"),
        (initrd_file.clone().unwrap(), "initrd.img"),
    ] {
        std::os::unix::fs::symlink(lib.join(from), files.path().join(to)).unwrap();
    }
    let hv = HvConfig::default();
    let hv = flotilla::hypervisor::Hypervisor::new(hv);
    let run = GuestRun {
        host: 2,
        tag: format!("v2check-{}", std::process::id()),
        image: files.path().to_owned(),
        cmdline: "console=ttyS0 root=LABEL=root".into(),
        memory_mib: 128,
        hostname: "from-v2".into(),
        mac: "52:54:00:77:00:fc".into(),
        address: "10.77.0.248/24".into(),
        runcmd: vec!["/opt/middleware/httpd-start".into()],
        boot_limit: Duration::from_secs(180),
        payload: None,
        http_path: "/".into(),
    };
    let outcome = run.boot_and_fetch(&lab, &hv).await;
    let console = run.cleanup(&lab, &hv).await;
    let (page, _) = outcome.unwrap_or_else(|err| panic!("{err}\n{console}"));
    assert!(page.contains("master base-v2"), "{page}");
    assert!(page.contains("<h1>from-v2</h1>"), "{page}");

    e.image_delete("tiny:2").await.unwrap();
    e.image_delete("tiny:1").await.unwrap();
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_builder_that_ignores_shutdown_gets_a_clear_error_then_is_discarded() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_base(&lab, dir.path(), "stubborn").await;
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    let pool = PoolName::parse("default").unwrap();
    let before = e.hypervisor.volume_list(&uri, &pool).await.unwrap().len();
    // The guest stops listening to the power button.
    let b = e
        .image_build(&build("stubborn", &["killall acpid"]), quiet())
        .await
        .unwrap();
    for _ in 0..240 {
        let console = e.builder_serial("stubborn", 4096).await.unwrap();
        if console.contains("flotilla-guest: ready") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let err = e
        .image_capture(
            &CaptureRequest {
                image: "stubborn".into(),
                seal_cloud_init: false,
                seal_sysprep: false,
                force: false,
                shutdown_timeout: Duration::from_secs(5),
                notes: String::new(),
            },
            quiet(),
        )
        .await
        .unwrap_err();
    let api = ApiError::from(err);
    assert_eq!(api.code, ErrorCode::Timeout, "{}", api.message);
    assert!(
        api.message.contains("--force"),
        "says what to do: {}",
        api.message
    );
    assert_eq!(e.image_list().unwrap().len(), 1, "no half version");
    assert_eq!(
        e.builder_show("stubborn").unwrap().state,
        "running",
        "still there to resume"
    );

    let again = e
        .image_build(&build("stubborn", &[]), quiet())
        .await
        .unwrap_err();
    assert_eq!(
        ApiError::from(again).code,
        ErrorCode::AlreadyExists,
        "one builder per image"
    );

    e.builder_abort("stubborn").await.unwrap();
    assert!(e.builder_list().unwrap().is_empty());
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        None
    );
    // Only the base version's copy (kept on purpose: it is a verified library copy) remains.
    assert_eq!(
        e.hypervisor.volume_list(&uri, &pool).await.unwrap().len(),
        before + 1
    );
    e.image_delete("stubborn:1").await.unwrap();
    assert_eq!(
        e.hypervisor.volume_list(&uri, &pool).await.unwrap().len(),
        before
    );
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_seal_that_cannot_be_done_is_refused_not_claimed() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with_base(&lab, dir.path(), "sealme").await;
    let b = e.image_build(&build("sealme", &[]), quiet()).await.unwrap();
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    let capture = |cloud_init: bool, sysprep: bool| CaptureRequest {
        image: "sealme".into(),
        seal_cloud_init: cloud_init,
        seal_sysprep: sysprep,
        force: true,
        shutdown_timeout: Duration::from_secs(30),
        notes: String::new(),
    };
    // The tiny guest has no QEMU guest agent: cloud-init clean cannot run there.
    let err = ApiError::from(
        e.image_capture(&capture(true, false), quiet())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, ErrorCode::SealFailed, "{}", err.message);
    assert!(err.message.contains("guest agent"), "{}", err.message);
    assert_eq!(e.image_list().unwrap().len(), 1, "nothing captured");
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        Some(true),
        "not shut down"
    );
    assert_eq!(e.builder_show("sealme").unwrap().state, "running");
    if !flotilla::library::tool_available("virt-sysprep") {
        let err = ApiError::from(
            e.image_capture(&capture(false, true), quiet())
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, ErrorCode::SealFailed);
        assert!(
            err.message.contains("virt-sysprep is not installed"),
            "{}",
            err.message
        );
    }
    // Without sealing the capture works and the version says it is not sealed.
    let v = e
        .image_capture(&capture(false, false), quiet())
        .await
        .unwrap();
    assert!(v.seal.is_empty());
    e.image_delete("sealme:2").await.unwrap();
    e.image_delete("sealme:1").await.unwrap();
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_capture_killed_midway_leaves_no_half_version_and_can_be_resumed() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_in(dir.path());
    lab.add_hosts(&e, &[1]).await;
    // A disk big enough that capture takes a while (it does not boot: random data).
    import_raw_disk(&e, dir.path(), "crashy", 384 << 20, true, Firmware::Bios).await;
    let b = e
        .image_build(
            &BuildRequest {
                memory_mib: 64,
                ..build("crashy", &[])
            },
            quiet(),
        )
        .await
        .unwrap();

    // Another process captures; it is killed once it has started writing into the library.
    let ctl = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/flotillactl");
    let mut child = std::process::Command::new(&ctl)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["image", "capture", "crashy", "--force", "--timeout", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("{}: {err}", ctl.display()));
    let lib = dir.path().join("library/crashy");
    let partial = || {
        std::fs::read_dir(&lib)
            .map(|d| {
                d.flatten()
                    .any(|f| f.file_name().to_string_lossy().ends_with(".partial"))
            })
            .unwrap_or(false)
    };
    for _ in 0..1500 {
        if partial() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(partial(), "the capture started writing");
    child.kill().unwrap();
    let _ = child.wait();

    assert_eq!(e.image_list().unwrap().len(), 1, "no half version recorded");
    let files: Vec<String> = std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    assert_eq!(files, ["v1.qcow2"], "no v2 file that looks complete");
    assert!(
        e.builder_show("crashy").is_ok(),
        "the builder is still there to resume or discard"
    );

    // Resume: capture again.
    let v2 = e
        .image_capture(
            &CaptureRequest {
                image: "crashy".into(),
                seal_cloud_init: false,
                seal_sysprep: false,
                force: true,
                shutdown_timeout: Duration::from_secs(1),
                notes: "after a crash".into(),
            },
            quiet(),
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    // Only real versions look like versions. (A qemu-img child orphaned by the kill may still
    // create its `.partial` temp file after this capture cleaned the folder; such a file never
    // looks like a version and the next write into the folder removes it.)
    let versions: Vec<String> = std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".partial"))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(versions, ["v1.qcow2", "v2.qcow2"]);
    assert!(e.builder_list().unwrap().is_empty());
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        None
    );
    e.image_delete("crashy:2").await.unwrap();
    e.image_delete("crashy:1").await.unwrap();
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_builder_from_an_installer_iso_gets_a_blank_disk_and_the_cdrom() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_in(dir.path());
    lab.add_hosts(&e, &[1]).await;
    // Shaped like an installer (ISO 9660 signature); it boots nowhere, which is fine here.
    let iso = dir.path().join("installer.iso");
    let mut bytes = vec![0u8; 2 << 20];
    bytes[32769..32774].copy_from_slice(b"CD001");
    std::fs::write(&iso, &bytes).unwrap();
    let not_iso = dir.path().join("notes.iso");
    std::fs::write(&not_iso, vec![b'x'; 1 << 20]).unwrap();

    let req = |path: &std::path::Path| BuildRequest {
        from: BuildFrom::Iso(path.to_owned()),
        disk_bytes: Some(1 << 30),
        memory_mib: 64,
        ..build("fresh", &[])
    };
    let err = ApiError::from(e.image_build(&req(&not_iso), quiet()).await.unwrap_err());
    assert_eq!(err.code, ErrorCode::InvalidInput);
    assert!(err.message.contains("not an ISO 9660"), "{}", err.message);
    assert!(e.builder_list().unwrap().is_empty(), "nothing half-made");

    let b = e.image_build(&req(&iso), quiet()).await.unwrap();
    assert_eq!(b.iso.as_deref(), Some(iso.to_str().unwrap()));
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    let pool = PoolName::parse("default").unwrap();
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        Some(true)
    );
    let disk = e
        .hypervisor
        .volume_get(&uri, &pool, &format!("{}-disk.qcow2", b.domain))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        disk.capacity_bytes,
        1 << 30,
        "a blank disk of the asked size"
    );
    assert!(e
        .hypervisor
        .volume_get(&uri, &pool, &format!("{}-installer.iso", b.domain))
        .await
        .unwrap()
        .is_some());
    e.builder_abort("fresh").await.unwrap();
    for v in &b.volumes {
        assert_eq!(
            e.hypervisor.volume_get(&uri, &pool, v).await.unwrap(),
            None,
            "{v}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_uefi_builder_starts_and_is_removed_with_its_nvram() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine_in(dir.path());
    lab.add_hosts(&e, &[1]).await;
    import_raw_disk(&e, dir.path(), "efi", 16 << 20, false, Firmware::Uefi).await;
    let b = e
        .image_build(
            &BuildRequest {
                memory_mib: 256,
                ..build("efi", &[])
            },
            quiet(),
        )
        .await
        .unwrap();
    let uri = LibvirtUri::parse(&lab.host_uri(1)).unwrap();
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        Some(true),
        "OVMF firmware found and booted"
    );
    e.builder_abort("efi").await.unwrap();
    assert_eq!(
        e.hypervisor
            .domain_is_running(&uri, &b.domain)
            .await
            .unwrap(),
        None,
        "undefined with its NVRAM"
    );
    e.image_delete("efi:1").await.unwrap();
}
