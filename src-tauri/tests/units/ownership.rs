use crate::common::fixture::quiet;
use crate::fixture::states;
use crate::fixture::Fixture;
use flotilla::ops::units::{Fault, UnitAction};
use flotilla::plan::Step;
use std::sync::Arc;

#[tokio::test]
async fn a_domain_of_the_same_name_that_is_not_the_units_is_left_alone() {
    use flotilla::hypervisor::DomainSpec;
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let h1 = f.e.host_show("h1").unwrap();
    // Someone made "shop-1" on h1 by hand, with a disk named as Flotilla names a server's.
    let disk =
        f.e.hypervisor
            .volume_create_blank(&h1.uri, &h1.pool, "shop-1-disk.qcow2", 1 << 20)
            .await
            .unwrap();
    f.e.hypervisor
        .domain_define(
            &h1.uri,
            &DomainSpec {
                disks: vec![flotilla::hypervisor::DiskSpec {
                    path: disk.path,
                    format: flotilla::hypervisor::DiskFormat::Raw,
                    readonly: false,
                    cdrom: false,
                }],
                ..hand_made("shop-1")
            },
        )
        .await
        .unwrap();
    f.e.hypervisor
        .domain_start(&h1.uri, "shop-1")
        .await
        .unwrap();
    let before = f.snapshot().await;
    let err =
        f.e.unit_run("shop", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(
        err.to_string()
            .contains("already has a domain named shop-1"),
        "{err}"
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "the foreign domain and its disk are untouched, nothing else left"
    );
    assert!(before.contains("h1 domain shop-1 running=Some(true)"));
    assert!(before.contains("h1 volume shop-1-disk.qcow2"));
}

/// A disk left in a pool under a server's name (an earlier inventory, a copy by hand) is never
/// booted as the server's disk and never deleted by an undo: the deploy stops before it makes
/// anything, and says which volume is in the way.
#[tokio::test]
async fn an_orphaned_disk_with_a_servers_name_is_refused_and_kept() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("shop", 2)).unwrap();
    let server = f.e.unit_show("shop").unwrap().servers[1].clone();
    let host = f.e.host_show(&server.host).unwrap();
    for name in [
        format!("{}-disk.qcow2", server.name),
        format!("{}-seed.img", server.name),
    ] {
        f.e.hypervisor
            .volume_create_blank(&host.uri, &host.pool, &name, 1 << 20)
            .await
            .unwrap();
        let before = f.snapshot().await;
        let err =
            f.e.unit_run("shop", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "already has a volume {name} that Flotilla did not create for server {}",
                server.name
            )),
            "{err}"
        );
        assert_eq!(
            f.snapshot().await,
            before,
            "the orphan is kept, nothing made"
        );
        f.e.hypervisor
            .volume_delete(&host.uri, &host.pool, &name)
            .await
            .unwrap();
    }
    // Without the orphans the same deploy goes through.
    f.run("shop", UnitAction::Deploy).await.unwrap();
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
}

/// A deploy that failed once its server had booted, and whose undo could not run (in T2 the
/// host's sshd was dead), leaves the server's disk, seed and domain on the host, recorded as
/// its own. The next deploy uses that disk again; the guest on it may have kept the version's
/// instance id (cloud-init keeps it on the disk and runs install, config files and start once
/// per id), so the seed gets a fresh instance id: a new seed, where a disk the deploy made
/// itself gets the version's own.
#[tokio::test]
async fn a_deploy_onto_a_disk_a_failed_deploy_left_writes_a_fresh_instance_id() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 1)).unwrap();
    let server = f.e.unit_show("app").unwrap().servers[0].clone();
    let host = f.e.host_show(&server.host).unwrap();
    let seed = format!("{}-seed.img", server.name);
    let seed_sha256 = || f.e.hypervisor.volume_sha256(&host.uri, &host.pool, &seed);
    // Its domain ran (the guest booted from the disk), then the deploy failed; no undo can be
    // recorded, so none runs: everything stays, as on a host that cannot be reached.
    f.e.inject_fault(Some(Fault {
        crash: false,
        server: "*".into(),
        step: Some(Step::WaitHealthy),
    }));
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER no_undo BEFORE INSERT ON operation_steps WHEN NEW.status = 'undo_started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    f.e.inject_fault(None);
    db.execute_batch("DROP TRIGGER no_undo").unwrap();
    let left = f.hosts_snapshot().await;
    for what in [
        format!("domain {} running=Some(true)", server.name),
        format!("volume {}-disk.qcow2", server.name),
        format!("volume {seed}"),
    ] {
        assert!(left.contains(&what), "{what} left: {left}");
    }
    assert_eq!(states(&f.e, "app"), ["app-1=planned"]);
    let first = seed_sha256().await.unwrap();

    f.run("app", UnitAction::Deploy).await.unwrap();
    assert_eq!(states(&f.e, "app"), ["app-1=running"]);
    let second = seed_sha256().await.unwrap();
    assert_ne!(
        second, first,
        "the seed on the disk the failed deploy left has a new instance id"
    );

    // A deploy on a disk it made itself writes the version's own instance id: the same seed
    // as the first deploy's.
    f.run("app", UnitAction::Delete { force: true })
        .await
        .unwrap();
    f.e.unit_create(&f.form("app", 1)).unwrap();
    assert_eq!(
        f.e.unit_show("app").unwrap().servers[0],
        server,
        "registered alike"
    );
    f.run("app", UnitAction::Deploy).await.unwrap();
    let fresh = seed_sha256().await.unwrap();
    assert_eq!(
        fresh, first,
        "a disk made by the deploy: the version's own id"
    );
}

/// A master copy another operation relies on (a deploy of another unit, here or in another
/// process) stays on the host when a unit that used it is deleted; two ensures of one copy
/// at once upload it once and both succeed.
#[tokio::test]
async fn shared_copies_are_pinned_while_another_operation_uses_them() {
    use flotilla::inventory::PinMode;
    let f = Fixture::new().await;
    let (a, b) = (
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {})),
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {})),
    );
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.bytes_copied > 0, b.bytes_copied > 0]
            .iter()
            .filter(|c| **c)
            .count(),
        1,
        "one upload; the other found the verified copy: {a:?} {b:?}"
    );

    let mut form = f.form("shop", 1);
    form.hosts = vec!["h1".into()];
    f.e.unit_create(&form).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    // Another process's deploy of another unit holds the copy (as its EnsureMaster does).
    let other =
        f.e.inventory
            .operation_begin_with("deploy", "unit/other", "{}")
            .unwrap();
    let copy = f.e.image_show("base:1").unwrap().volume_name();
    assert_eq!(
        f.e.inventory
            .host_pin("h1", &copy, other, PinMode::Use)
            .unwrap(),
        None
    );
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
    let left = f.hosts_snapshot().await;
    assert!(
        left.contains(&format!("h1 volume {copy}")) && left.contains("copy base:1 on h1"),
        "the copy the other operation uses is kept:\n{left}"
    );
    // Once that operation has ended, the next release removes it.
    f.e.inventory
        .operation_finish(other, "succeeded", "")
        .unwrap();
    f.e.unit_create(&form).unwrap();
    f.run("shop", UnitAction::Deploy).await.unwrap();
    f.run("shop", UnitAction::Delete { force: true })
        .await
        .unwrap();
    assert!(!f.hosts_snapshot().await.contains(&copy));
}

/// A builder's names must be free on its host: a domain or a volume of a builder's name that
/// no builder record accounts for is refused before anything is made, and left alone.
#[tokio::test]
async fn a_builder_never_takes_over_a_domain_or_volume_of_its_name() {
    use flotilla::hypervisor::DomainType;
    use flotilla::ops::builder::{BuildFrom, BuildRequest};
    let f = Fixture::new().await;
    let h1 = f.e.host_show("h1").unwrap();
    let request = || BuildRequest {
        image: "web".into(),
        host: "h1".into(),
        from: BuildFrom::Version("base:1".into()),
        cpus: 1,
        memory_mib: 128,
        disk_bytes: None,
        script: vec![],
        address: None,
        domain_type: DomainType::Test,
    };
    f.e.hypervisor
        .domain_define(&h1.uri, &hand_made("flotilla-builder-web"))
        .await
        .unwrap();
    let before = f.hosts_snapshot().await;
    let err =
        f.e.image_build(&request(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("not a builder Flotilla recorded"),
        "{err}"
    );
    assert_eq!(
        f.hosts_snapshot().await,
        before,
        "the hand-made domain is untouched"
    );
    assert!(f.e.builder_list().unwrap().is_empty());
    f.e.hypervisor
        .domain_undefine(&h1.uri, "flotilla-builder-web")
        .await
        .unwrap();

    f.e.hypervisor
        .volume_create_blank(
            &h1.uri,
            &h1.pool,
            "flotilla-builder-web-disk.qcow2",
            1 << 20,
        )
        .await
        .unwrap();
    let before = f.hosts_snapshot().await;
    let err =
        f.e.image_build(&request(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("flotilla-builder-web-disk.qcow2"),
        "{err}"
    );
    assert_eq!(
        f.hosts_snapshot().await,
        before,
        "the orphaned volume is kept"
    );
}

/// A domain someone made by hand on a test-driver host (no Flotilla metadata of a unit).
fn hand_made(name: &str) -> flotilla::hypervisor::DomainSpec {
    use flotilla::hypervisor::{BootSpec, DomainSpec, DomainType};
    DomainSpec {
        name: name.into(),
        domain_type: DomainType::Test,
        vcpus: 1,
        memory_mib: 64,
        boot: BootSpec::Disk {
            uefi: false,
            cdrom_first: false,
        },
        disks: vec![],
        nics: vec![],
        serial_log: None,
        metadata: vec![("note".into(), "made by hand".into())],
        vnc: false,
        guest_agent: false,
    }
}

/// A master copy or payload of the names Flotilla uses that this inventory did not put on the
/// host (another inventory's copy of a same-named image, a file by hand) is neither deleted
/// nor replaced: the deploy stops and says so, and the volume stays.
#[tokio::test]
async fn a_shared_volume_this_inventory_did_not_upload_is_left_alone() {
    let f = Fixture::new().await;
    let mut form = f.form("shop", 1);
    form.hosts = vec!["h1".into()];
    f.e.unit_create(&form).unwrap();
    let h1 = f.e.host_show("h1").unwrap();
    for name in ["flotilla-base-v1.qcow2", "shop-u1-payload.img"] {
        f.e.hypervisor
            .volume_create_blank(&h1.uri, &h1.pool, name, 1 << 20)
            .await
            .unwrap();
        let before = f.hosts_snapshot().await;
        let err =
            f.e.unit_run("shop", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "already has a volume {name} that this inventory did not put there"
            )),
            "{err}"
        );
        assert_eq!(
            f.hosts_snapshot().await,
            before,
            "{name} is kept, nothing made"
        );
        f.e.hypervisor
            .volume_delete(&h1.uri, &h1.pool, name)
            .await
            .unwrap();
    }
    f.run("shop", UnitAction::Deploy).await.unwrap();
}
