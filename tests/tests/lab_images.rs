//! T2: master image versions distributed to a real lab host through libvirt storage streams,
//! and an import into a library whose disk is full. Run as root (scripts/test.sh).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use flotilla::error::{ApiError, ErrorCode};
use flotilla::hypervisor::DiskFormat;
use flotilla::model::{LibvirtUri, PoolName};
use flotilla::ops::hosts::HostInput;
use flotilla::ops::images::{BootInput, ImportRequest, ProgressFn};
use flotilla::ops::Engine;
use flotilla_tests::Lab;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn engine(data: &std::path::Path) -> Engine {
    flotilla_tests::engine_in(data)
}

fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

#[tokio::test]
#[ignore = "needs the lab: run `tests/rig/lab up` as root, or scripts/test.sh"]
async fn a_version_is_copied_to_a_host_once_and_verified() {
    let lab = Lab::from_env();
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    e.host_add(&HostInput {
        name: "lab-h2".into(),
        uri: lab.host_uri(2),
        pool: None,
        bridge: Some("br0".into()),
        accept_host_key: None,
    })
    .await
    .unwrap();
    let guest = lab.guest();
    let v = e
        .image_import(
            &ImportRequest {
                image: "tiny".into(),
                file: guest.join("master.qcow2"),
                notes: String::new(),
                boot: BootInput::Kernel {
                    kernel: guest.join("vmlinuz"),
                    initrd: Some(guest.join("initrd.img")),
                    cmdline: "console=ttyS0 root=LABEL=root".into(),
                },
            },
            quiet(),
        )
        .await
        .unwrap();
    let uri = LibvirtUri::parse(&lab.host_uri(2)).unwrap();
    let pool = PoolName::parse("default").unwrap();
    // A half-finished upload from an earlier, interrupted run: not a copy.
    let stale = dir.path().join("stale.raw");
    std::fs::write(&stale, vec![1u8; 4096]).unwrap();
    e.hypervisor
        .volume_upload(
            &uri,
            &pool,
            &v.volume_name(),
            stale,
            DiskFormat::Raw,
            |_, _| {},
        )
        .await
        .unwrap();
    // Without a record that this inventory began that upload, the volume is someone else's
    // (another inventory's copy of a same-named image, a file by hand): refused, kept.
    let stale_sum = e
        .hypervisor
        .volume_sha256(&uri, &pool, &v.volume_name())
        .await
        .unwrap();
    let err = e.image_ensure("tiny", "lab-h2", quiet()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("that this inventory did not put there"),
        "{err}"
    );
    assert_eq!(
        e.hypervisor
            .volume_sha256(&uri, &pool, &v.volume_name())
            .await
            .unwrap(),
        stale_sum,
        "the foreign volume is untouched"
    );
    // With it (an earlier run of this inventory was killed mid-upload), it is replaced.
    e.inventory
        .host_upload_begin("lab-h2", &v.volume_name())
        .unwrap();

    let phases = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = phases.clone();
    let first = e
        .image_ensure(
            "tiny",
            "lab-h2",
            Arc::new(move |p| seen.lock().unwrap().push(p.phase)),
        )
        .await
        .unwrap();
    assert_eq!(first.bytes_copied, v.actual_size);
    assert!(phases.lock().unwrap().contains(&"uploading".to_string()));
    assert!(phases.lock().unwrap().contains(&"verifying".to_string()));
    assert_eq!(
        e.hypervisor
            .volume_sha256(&uri, &pool, &v.volume_name())
            .await
            .unwrap(),
        v.sha256,
        "the stale volume was replaced by the real version"
    );
    let second = e.image_ensure("tiny:1", "lab-h2", quiet()).await.unwrap();
    assert_eq!(
        second.bytes_copied, 0,
        "a verified copy is not copied again"
    );
    assert_eq!(e.image_show("tiny").unwrap().copies.len(), 1);

    // Deleting the volume behind Flotilla's back: the next ensure notices and copies again.
    e.hypervisor
        .volume_delete(&uri, &pool, &v.volume_name())
        .await
        .unwrap();
    let third = e.image_ensure("tiny", "lab-h2", quiet()).await.unwrap();
    assert_eq!(third.bytes_copied, v.actual_size);

    // The host holds a copy: it cannot be removed; deleting the version removes the copy.
    let err = ApiError::from(e.host_remove("lab-h2").unwrap_err());
    assert_eq!(err.code, ErrorCode::InUse, "{}", err.message);
    e.image_delete("tiny:1").await.unwrap();
    assert_eq!(
        e.hypervisor
            .volume_get(&uri, &pool, &v.volume_name())
            .await
            .unwrap(),
        None
    );
    e.host_remove("lab-h2").unwrap();
}

#[tokio::test]
#[ignore = "mounts a small tmpfs: run as root (scripts/test.sh)"]
async fn an_import_into_a_full_library_says_so_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("library");
    std::fs::create_dir(&library).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "flotilla-test",
            library.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 4 MiB tmpfs (needs root)");
    let image = dir.path().join("big.raw");
    let mut bytes = vec![0x5au8; 8 << 20];
    bytes[510] = 0x55;
    bytes[511] = 0xAA;
    std::fs::write(&image, &bytes).unwrap();
    let e = engine(dir.path());
    let err = e
        .image_import(
            &ImportRequest {
                image: "big".into(),
                file: image,
                notes: String::new(),
                boot: BootInput::Disk(flotilla::model::Firmware::Bios),
            },
            quiet(),
        )
        .await
        .unwrap_err();
    let api = ApiError::from(err);
    let leftovers: Vec<_> = std::fs::read_dir(library.join("big"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let _ = Command::new("umount").arg(&library).status();
    assert_eq!(api.code, ErrorCode::NoSpace, "{}", api.message);
    assert!(api.message.contains("bytes free"), "{}", api.message);
    assert!(e.image_list().unwrap().is_empty());
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
