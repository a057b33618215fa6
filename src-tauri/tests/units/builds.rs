use crate::fixture::Fixture;
use flotilla::ops::Engine;
use std::sync::Arc;

/// A build request for image `web` from `base:1` on h1 (test driver).
fn build_web() -> flotilla::ops::builder::BuildRequest {
    flotilla::ops::builder::BuildRequest {
        image: "web".into(),
        host: "h1".into(),
        from: flotilla::ops::builder::BuildFrom::Version("base:1".into()),
        cpus: 1,
        memory_mib: 128,
        disk_bytes: None,
        script: vec![],
        address: None,
        domain_type: flotilla::hypervisor::DomainType::Test,
    }
}

/// The journal of the newest operation of `kind`: (step, status) in order.
fn journal_of(e: &Engine, kind: &str) -> Vec<(String, String)> {
    let ops = e.inventory.operation_list(50).unwrap();
    let op = ops.iter().find(|o| o.kind == kind).unwrap();
    e.inventory.operation_steps(op.id).unwrap()
}

/// A build runs on the executor: each step is journaled before it acts, and a failure undoes
/// every step that began, newest first, each journaled — the base copy (shared) is kept.
#[tokio::test]
async fn a_failed_build_undoes_each_step_it_began_newest_first() {
    let f = Fixture::new().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'start the builder' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.image_build(&build_web(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("journal"), "{err}");
    let journal = journal_of(&f.e, "image.build");
    let undone: Vec<&str> = journal
        .iter()
        .filter(|(_, st)| st == "undone")
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(
        undone,
        [
            "define the builder",
            "upload flotilla-builder-web-seed.img",
            "create the disk",
            "ensure the base on the host",
        ],
        "{journal:?}"
    );
    assert!(
        !journal.iter().any(|(s, _)| s == "start the builder"),
        "a step the journal could not record did not run: {journal:?}"
    );
    let h1 = f.e.host_show("h1").unwrap();
    assert!(f
        .e
        .hypervisor
        .domain_flotilla_metadata(&h1.uri, "flotilla-builder-web")
        .await
        .unwrap()
        .is_none());
    let vols = f.hosts_snapshot().await;
    assert!(!vols.contains("flotilla-builder-web"), "{vols}");
    assert!(vols.contains("base"), "the shared base copy stays: {vols}");
    assert!(f.e.builder_list().unwrap().is_empty());
}

/// An undo the journal cannot record does not run (nor the older ones), is reported, and
/// keeps the builder so that `builder-abort` can finish the job.
#[tokio::test]
async fn a_build_whose_undo_cannot_be_recorded_is_kept_for_abort() {
    let f = Fixture::new().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_start BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'start the builder' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;
         CREATE TRIGGER fail_undo BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'create the disk' AND NEW.status = 'undo_started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.image_build(&build_web(), Arc::new(|_| {}))
            .await
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("builder-abort web") && msg.contains("create the disk"),
        "{msg}"
    );
    assert_eq!(
        flotilla::error::ApiError::from(&err).code,
        flotilla::error::ErrorCode::OperationFailed
    );
    let vols = f.hosts_snapshot().await;
    assert!(
        vols.contains("flotilla-builder-web-disk.qcow2"),
        "not undone without a record: {vols}"
    );
    assert!(
        !vols.contains("flotilla-builder-web-seed.img"),
        "newer steps were undone: {vols}"
    );
    assert_eq!(f.e.builder_list().unwrap().len(), 1, "kept for abort");
    db.execute_batch("DROP TRIGGER fail_start; DROP TRIGGER fail_undo")
        .unwrap();
    f.e.builder_abort("web").await.unwrap();
    let vols = f.hosts_snapshot().await;
    assert!(!vols.contains("flotilla-builder-web"), "{vols}");
    assert!(f.e.builder_list().unwrap().is_empty());
}

/// Image distribution runs on the executor: a copy that does not match the library's sha256
/// is removed by the journaled undo of its upload, and nothing is recorded.
#[tokio::test]
async fn a_copy_that_fails_verification_is_undone_by_the_journal() {
    let f = Fixture::new().await;
    let v = f.e.image_show("base:1").unwrap();
    let file = f.dir.path().join("library").join(&v.file);
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&file, perms).unwrap();
    // The library file changes after it was recorded (a bad disk, a hand edit).
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let err =
        f.e.image_ensure("base:1", "h1", Arc::new(|_| {}))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    let journal = journal_of(&f.e, "image.ensure");
    let statuses: Vec<String> = journal.iter().map(|(s, st)| format!("{s} {st}")).collect();
    assert_eq!(
        statuses,
        [
            "upload base:v1 on h1 started",
            "upload base:v1 on h1 succeeded",
            "verify base:v1 on h1 started",
            "verify base:v1 on h1 failed",
            "upload base:v1 on h1 undo_started",
            "upload base:v1 on h1 undone",
        ]
    );
    assert!(!f.hosts_snapshot().await.contains(&v.volume_name()));
    assert!(f.e.image_show("base:1").unwrap().copies.is_empty());
}
