use crate::common::fixture::quiet;
use crate::fixture::states;
use crate::fixture::Fixture;
use flotilla::ops::units::{Fault, UnitAction};
use flotilla::ops::{Engine, OpError};
use flotilla::plan::Step;

#[tokio::test]
async fn a_crash_between_steps_can_be_resumed_or_unwound() {
    for resume in [true, false] {
        let f = Fixture::new().await;
        f.e.unit_create(&f.form("app", 2)).unwrap();
        let before = f.snapshot().await;
        f.e.inject_fault(Some(Fault {
            crash: true,
            server: "app-2".into(),
            step: Some(Step::Define),
        }));
        let err =
            f.e.unit_run("app", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(matches!(err, OpError::Crashed), "{err}");
        f.e.inject_fault(None);
        let interrupted = f.e.interrupted_operations().unwrap();
        assert_eq!(interrupted.len(), 1);
        assert_eq!(interrupted[0].unit, "app");
        let id = interrupted[0].operation;
        // The unit stays locked until the interrupted operation is dealt with.
        let busy =
            f.e.unit_run("app", UnitAction::Deploy, quiet())
                .await
                .unwrap_err();
        assert!(matches!(busy, OpError::Busy { .. }), "{busy}");
        if resume {
            f.e.operation_resume(id, quiet()).await.unwrap();
            assert_eq!(states(&f.e, "app"), ["app-1=running", "app-2=running"]);
        } else {
            let r = f.e.operation_unwind(id, quiet()).await.unwrap();
            assert!(r.ok, "{r}");
            assert_eq!(f.snapshot().await, before);
            f.run("app", UnitAction::Deploy).await.unwrap();
        }
        assert!(f.e.interrupted_operations().unwrap().is_empty());
    }
}

/// Two processes (two engines on one data directory) take up the same interrupted
/// operation at once, one to resume it and one to unwind it: exactly one does, the other is
/// told it is not interrupted any more; a second unwind changes nothing.
#[tokio::test]
async fn resume_and_unwind_race_and_exactly_one_wins() {
    for round in 0..4 {
        let f = Fixture::new().await;
        f.e.unit_create(&f.form("app", 2)).unwrap();
        let before = f.snapshot().await;
        f.e.inject_fault(Some(Fault {
            crash: true,
            server: "app-2".into(),
            step: Some(Step::Define),
        }));
        let _ = f.e.unit_run("app", UnitAction::Deploy, quiet()).await;
        f.e.inject_fault(None);
        let id = f.e.interrupted_operations().unwrap()[0].operation;
        if round >= 2 {
            // A second process (its own inventory connection and hypervisor connections; the
            // test driver gives it its own copy of the hosts, so only who wins is compared).
            let other = Engine::open(f.dir.path(), "test").unwrap();
            let (a, b) = tokio::join!(
                f.e.operation_resume(id, quiet()),
                other.operation_unwind(id, quiet())
            );
            assert!(a.is_ok() != b.is_ok(), "{:?} {:?}", a.err(), b.err());
            continue;
        }
        let (resumed, unwound) = if round % 2 == 0 {
            tokio::join!(
                f.e.operation_resume(id, quiet()),
                f.e.operation_unwind(id, quiet())
            )
        } else {
            let (u, r) = tokio::join!(
                f.e.operation_unwind(id, quiet()),
                f.e.operation_resume(id, quiet())
            );
            (r, u)
        };
        assert!(
            resumed.is_ok() != unwound.is_ok(),
            "exactly one wins: resume {:?}, unwind {:?}",
            resumed.as_ref().err().map(ToString::to_string),
            unwound.as_ref().err().map(ToString::to_string)
        );
        let loser = resumed.err().or(unwound.err()).unwrap();
        assert!(
            loser.to_string().contains("not found") || loser.to_string().contains("does not exist"),
            "{loser}"
        );
        if states(&f.e, "app") == ["app-1=running", "app-2=running"] {
            // The resume won.
            f.run("app", UnitAction::Delete { force: true })
                .await
                .unwrap();
        } else {
            assert_eq!(f.snapshot().await, before, "the unwind won: as before");
        }
        assert!(f.e.interrupted_operations().unwrap().is_empty());
        let again = f.snapshot().await;
        let twice = f.e.operation_unwind(id, quiet()).await.unwrap_err();
        assert!(matches!(
            flotilla::error::ApiError::from(&twice).code,
            flotilla::error::ErrorCode::NotFound
        ));
        assert_eq!(f.snapshot().await, again, "a second unwind changes nothing");
    }
}

/// The journal is written before a step acts: when that write fails (a full disk, a broken
/// database), the step does not run, the operation stops and what it did is undone.
#[tokio::test]
async fn a_step_the_journal_cannot_record_does_not_run() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    let before = f.snapshot().await;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON operation_steps
         WHEN NEW.step = 'app-2: define' AND NEW.status = 'started'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("could not write the journal"),
        "{err}"
    );
    db.execute_batch("DROP TRIGGER full_disk").unwrap();
    assert_eq!(
        f.snapshot().await,
        before,
        "nothing ran unrecorded, the rest undone"
    );
    f.run("app", UnitAction::Deploy).await.unwrap();
}

/// Flotilla dies after the last step of an operation but before it released the unit: the
/// next operation on the unit finds the work done, closes the old one and goes ahead — no
/// lock that only an edit of the database could clear.
#[tokio::test]
async fn a_crash_before_the_unlock_is_closed_by_the_next_operation() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "*".into(),
        step: None,
    }));
    let err =
        f.e.unit_run("app", UnitAction::Deploy, quiet())
            .await
            .unwrap_err();
    assert!(matches!(err, OpError::Crashed), "{err}");
    f.e.inject_fault(None);
    assert_eq!(states(&f.e, "app"), ["app-1=running", "app-2=running"]);
    let ops = f.e.inventory.operation_list(10).unwrap();
    assert_eq!(ops[0].state, "running", "the deploy never ended");
    let stop = UnitAction::Stop {
        servers: vec![],
        force: false,
    };
    f.run("app", stop).await.unwrap();
    assert_eq!(states(&f.e, "app"), ["app-1=stopped", "app-2=stopped"]);
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    let ops = f.e.inventory.operation_list(10).unwrap();
    let deploy = ops.iter().find(|o| o.kind == "deploy").unwrap();
    assert_eq!(deploy.state, "succeeded");
    assert!(
        deploy.error.contains("before it released the unit"),
        "{}",
        deploy.error
    );

    // A delete that died after removing the unit: nothing is left to resume or unwind, and
    // it is not offered as interrupted.
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "*".into(),
        step: None,
    }));
    let _ = f.run("app", UnitAction::Delete { force: true }).await;
    f.e.inject_fault(None);
    assert!(f.e.unit_show("app").is_err(), "the unit is gone");
    assert!(f.e.interrupted_operations().unwrap().is_empty());
    let ops = f.e.inventory.operation_list(10).unwrap();
    assert_eq!(
        ops.iter().find(|o| o.kind == "delete").unwrap().state,
        "succeeded"
    );
}

/// A resume or unwind that fails before it ends the operation it took over gives it back: it
/// is offered again (not held by a process that gave up on it).
#[tokio::test]
async fn a_failed_unwind_gives_the_operation_back() {
    let f = Fixture::new().await;
    f.e.unit_create(&f.form("app", 2)).unwrap();
    let before = f.snapshot().await;
    f.e.inject_fault(Some(Fault {
        crash: true,
        server: "app-2".into(),
        step: Some(Step::Define),
    }));
    let _ = f.e.unit_run("app", UnitAction::Deploy, quiet()).await;
    f.e.inject_fault(None);
    let id = f.e.interrupted_operations().unwrap()[0].operation;
    let db = rusqlite::Connection::open(f.dir.path().join("inventory.sqlite3")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER broken BEFORE UPDATE OF state ON operations WHEN NEW.state = 'aborted'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    assert!(f.e.operation_unwind(id, quiet()).await.is_err());
    let again = f.e.interrupted_operations().unwrap();
    assert_eq!(again.len(), 1, "offered again");
    assert_eq!(again[0].operation, id);
    db.execute_batch("DROP TRIGGER broken").unwrap();
    f.e.operation_unwind(id, quiet()).await.unwrap();
    assert_eq!(f.snapshot().await, before);
}
