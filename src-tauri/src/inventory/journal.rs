//! Tables `operations` and `operation_steps`: the journal. Every step transition is written
//! here before it is reported, so after a crash the next start knows where an operation was.

use super::{corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE operations (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        target      TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'aborted')),
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        error       TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX operations_target ON operations(target, state);
    CREATE TABLE operation_steps (
        id           INTEGER PRIMARY KEY,
        operation_id INTEGER NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
        step         TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed', 'undo_started', 'undone')),
        detail       TEXT NOT NULL DEFAULT '',
        at           TEXT NOT NULL
    ) STRICT;";

/// Migration: a failed undo is journaled too (SQLite cannot widen a CHECK in place, so the
/// table is copied).
pub(super) const UNDO_FAILED: &str = "CREATE TABLE operation_steps_new (
        id           INTEGER PRIMARY KEY,
        operation_id INTEGER NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
        step         TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed', 'undo_started', 'undone', 'undo_failed')),
        detail       TEXT NOT NULL DEFAULT '',
        at           TEXT NOT NULL
    ) STRICT;
    INSERT INTO operation_steps_new (id, operation_id, step, status, detail, at)
        SELECT id, operation_id, step, status, detail, at FROM operation_steps;
    DROP TABLE operation_steps;
    ALTER TABLE operation_steps_new RENAME TO operation_steps;
    CREATE INDEX operation_steps_operation ON operation_steps(operation_id);";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Started,
    Succeeded,
    Failed,
    UndoStarted,
    Undone,
    /// The undo did not work: the detail says why; what it should have removed may be left.
    UndoFailed,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::UndoStarted => "undo_started",
            Self::Undone => "undone",
            Self::UndoFailed => "undo_failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Started,
            Self::Succeeded,
            Self::Failed,
            Self::UndoStarted,
            Self::Undone,
            Self::UndoFailed,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// Compares with the stored name (`status == "succeeded"`), as tests and front ends read it.
impl PartialEq<&str> for StepStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// How a unit operation names the journal row of a server's step: `<server>: <step>`
/// (`app-2: define`). Other operations name their steps in words (`start the builder`).
pub fn step_name(server: &str, step: &str) -> String {
    format!("{server}{SERVER_SEPARATOR}{step}")
}

const SERVER_SEPARATOR: &str = ": ";

/// The part of an operation's target that names a unit (`unit/app`).
const UNIT_TARGET: &str = "unit/";

/// One row of an operation's journal, read back typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The server a unit operation's step acted on (its row is named [`step_name`]); `None`
    /// for the steps of other operations and for a unit operation's own steps.
    pub server: Option<String>,
    /// The step: the server's step without the server (`define`), or the row's whole name.
    pub step: String,
    pub status: StepStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct OperationStep {
    pub step: String,
    pub status: StepStatus,
    pub detail: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Operation {
    pub id: i64,
    pub kind: String,
    pub target: String,
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: String,
    pub steps: Vec<OperationStep>,
}

impl Inventory {
    /// Begins an operation of this process that is not resumed after a crash (no arguments).
    pub fn operation_begin(&self, kind: &str, target: &str) -> Result<i64, InventoryError> {
        self.operation_begin_with(kind, target, "")
    }

    pub fn operation_step(
        &self,
        id: i64,
        step: &str,
        status: StepStatus,
        detail: &str,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "INSERT INTO operation_steps (operation_id, step, status, detail, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, step, status.as_str(), detail, now_rfc3339()],
            )
            .map_err(query_err("journal a step"))?;
        Ok(())
    }

    pub fn operation_finish(
        &self,
        id: i64,
        state: &str,
        error: &str,
    ) -> Result<(), InventoryError> {
        // An operation that ends holds no pin on any host object any more.
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "finish an operation")?;
        tx.execute(
            "UPDATE operations SET state = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, state, error, now_rfc3339()],
        )
        .map_err(query_err("finish an operation"))?;
        tx.execute("DELETE FROM host_pins WHERE operation_id = ?1", [id])
            .map_err(query_err("finish an operation"))?;
        tx.commit().map_err(query_err("finish an operation"))?;
        Ok(())
    }

    /// The newest `limit` operations with their steps, newest first.
    pub fn operation_list(&self, limit: u32) -> Result<Vec<Operation>, InventoryError> {
        self.count_read("operation_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, kind, target, state, started_at, finished_at, error FROM operations
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(query_err("list operations"))?;
        let mut ops: Vec<Operation> = stmt
            .query_map([limit], |r| {
                Ok(Operation {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    target: r.get(2)?,
                    state: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    error: r.get(6)?,
                    steps: Vec::new(),
                })
            })
            .map_err(query_err("list operations"))?
            .collect::<Result<_, _>>()
            .map_err(query_err("list operations"))?;
        let min_id = ops.last().map_or(0, |o| o.id);
        let mut stmt = conn
            .prepare(
                "SELECT id, operation_id, step, status, detail, at FROM operation_steps
                 WHERE operation_id >= ?1 ORDER BY id",
            )
            .map_err(query_err("list operation steps"))?;
        let steps = stmt
            .query_map([min_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(3)?,
                    OperationStep {
                        step: r.get(2)?,
                        status: StepStatus::Started,
                        detail: r.get(4)?,
                        at: r.get(5)?,
                    },
                ))
            })
            .map_err(query_err("list operation steps"))?;
        for s in steps {
            let (row, id, status, step) = s.map_err(query_err("list operation steps"))?;
            if let Some(op) = ops.iter_mut().find(|o| o.id == id) {
                let status = step_status(row, &status)?;
                op.steps.push(OperationStep { status, ..step });
            }
        }
        Ok(ops)
    }

    /// The operation still marked running on `target`, if any (one per target at a time).
    pub fn operation_running_on(&self, target: &str) -> Result<Option<i64>, InventoryError> {
        self.conn()
            .query_row(
                "SELECT id FROM operations WHERE target = ?1 AND state = 'running' ORDER BY id DESC LIMIT 1",
                [target],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("find a running operation"))
    }
}

/// The status of journal row `row`; one this build does not know is an error.
fn step_status(row: i64, status: &str) -> Result<StepStatus, InventoryError> {
    StepStatus::parse(status)
        .ok_or_else(|| corrupt_value("operation_steps", &format!("#{row}"), "status", status))
}

/// The start time of process `pid` (field 22 of /proc/PID/stat): with the pid it names one
/// process, so a recycled pid is not mistaken for the one that began an operation.
pub(super) fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// Whether the process that began an operation (`pid`, `pid_start`) still runs.
pub(super) fn process_alive(pid: u32, start: &str) -> bool {
    process_start(pid).as_deref() == Some(start)
}

impl Inventory {
    /// Begins an operation of this process on `target`, with the arguments that resume it.
    pub fn operation_begin_with(
        &self,
        kind: &str,
        target: &str,
        args_json: &str,
    ) -> Result<i64, InventoryError> {
        let pid = std::process::id();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO operations (kind, target, state, started_at, pid, pid_start, args_json)
             VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
            params![
                kind,
                target,
                now_rfc3339(),
                pid,
                process_start(pid).unwrap_or_default(),
                args_json
            ],
        )
        .map_err(query_err("begin an operation"))?;
        Ok(conn.last_insert_rowid())
    }

    /// The kind of operation `id` (`deploy`, `lb.reconcile`, …).
    pub fn operation_kind(&self, id: i64) -> Result<Option<String>, InventoryError> {
        self.conn()
            .query_row("SELECT kind FROM operations WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(query_err("read an operation"))
    }

    /// Marks an operation as belonging to no living process (a simulated crash in tests).
    pub fn operation_orphan(&self, id: i64) -> Result<(), InventoryError> {
        self.conn()
            .execute("UPDATE operations SET pid = 0 WHERE id = ?1", [id])
            .map_err(query_err("orphan an operation"))?;
        Ok(())
    }

    pub fn operation_set_args(&self, id: i64, args_json: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE operations SET args_json = ?2 WHERE id = ?1",
                params![id, args_json],
            )
            .map_err(query_err("record an operation's arguments"))?;
        Ok(())
    }

    /// Operations marked running whose process is gone (Flotilla crashed or was killed):
    /// `(id, kind, target, args_json)`, oldest first.
    pub fn operation_interrupted(
        &self,
    ) -> Result<Vec<(i64, String, String, String)>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, kind, target, args_json, pid, pid_start FROM operations
                 WHERE state = 'running' AND args_json != '' ORDER BY id",
            )
            .map_err(query_err("find interrupted operations"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?),
                    r.get::<_, u32>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(query_err("find interrupted operations"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query_err("find interrupted operations"))?;
        Ok(rows
            .into_iter()
            .filter(|(_, pid, start)| !process_alive(*pid, start))
            .map(|(op, _, _)| op)
            .collect())
    }

    /// Takes an interrupted operation over for this process (to resume, unwind or close it):
    /// `true` for exactly one caller. `false` when it is not interrupted: it ended, its process
    /// still runs, or another process took it over first.
    pub fn operation_claim(&self, id: i64) -> Result<bool, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "take over an operation")?;
        let row: Option<(String, u32, String)> = tx
            .query_row(
                "SELECT state, pid, pid_start FROM operations WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(query_err("take over an operation"))?;
        let Some((state, pid, start)) = row else {
            return Ok(false);
        };
        if state != "running" || process_alive(pid, &start) {
            return Ok(false);
        }
        let me = std::process::id();
        let changed = tx
            .execute(
                "UPDATE operations SET pid = ?2, pid_start = ?3
                 WHERE id = ?1 AND state = 'running' AND pid = ?4 AND pid_start = ?5",
                params![id, me, process_start(me).unwrap_or_default(), pid, start],
            )
            .map_err(query_err("take over an operation"))?;
        tx.commit().map_err(query_err("take over an operation"))?;
        Ok(changed == 1)
    }

    /// Closes operations that cannot be resumed (no arguments: `image ensure`, a builder step)
    /// whose process is gone: they show as aborted, not as running forever, and hold no pin.
    pub fn operation_close_dead(&self) -> Result<Vec<i64>, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "close dead operations")?;
        let rows: Vec<(i64, u32, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT id, pid, pid_start FROM operations
                     WHERE state = 'running' AND args_json = '' AND kind != 'lb.reconcile'",
                )
                .map_err(query_err("find dead operations"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(query_err("find dead operations"))?
                .collect::<Result<_, _>>()
                .map_err(query_err("find dead operations"))?;
            rows
        };
        let mut closed = Vec::new();
        for (id, pid, start) in rows {
            if process_alive(pid, &start) {
                continue;
            }
            tx.execute(
                "UPDATE operations SET state = 'aborted', error = 'its process ended before it did', finished_at = ?2 WHERE id = ?1",
                params![id, now_rfc3339()],
            )
            .map_err(query_err("close a dead operation"))?;
            tx.execute("DELETE FROM host_pins WHERE operation_id = ?1", [id])
                .map_err(query_err("close a dead operation"))?;
            closed.push(id);
        }
        tx.commit().map_err(query_err("close dead operations"))?;
        Ok(closed)
    }

    /// Gives back an operation this process took over but did not end: it is interrupted
    /// again (its process is no longer alive as far as anyone can tell).
    pub fn operation_release_claim(&self, id: i64) -> Result<(), InventoryError> {
        let me = std::process::id();
        self.conn()
            .execute(
                "UPDATE operations SET pid = 0, pid_start = '' WHERE id = ?1 AND state = 'running' AND pid = ?2",
                params![id, me],
            )
            .map_err(query_err("give an operation back"))?;
        Ok(())
    }

    /// The stored arguments of an operation (empty for kinds that are not resumed).
    pub fn operation_args(&self, id: i64) -> Result<String, InventoryError> {
        self.conn()
            .query_row(
                "SELECT args_json FROM operations WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("read an operation"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "operation",
                name: format!("#{id}"),
            })
    }

    /// The journal of one operation as written: `(step, status)` in order. A status this
    /// build does not know is an error. [`Inventory::operation_journal`] reads it typed.
    pub fn operation_steps(&self, id: i64) -> Result<Vec<(String, String)>, InventoryError> {
        self.count_read("operation_steps");
        Ok(self
            .journal_rows(id)?
            .into_iter()
            .map(|(_, name, status)| (name, status.as_str().to_owned()))
            .collect())
    }

    /// The journal of one operation, in order: for a unit operation (target `unit/…`), each
    /// server's step with its server. A status this build does not know is an error.
    pub fn operation_journal(&self, id: i64) -> Result<Vec<JournalEntry>, InventoryError> {
        self.count_read("operation_journal");
        let of_unit = self
            .conn()
            .query_row("SELECT target FROM operations WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(query_err("read an operation"))?
            .is_some_and(|t| t.starts_with(UNIT_TARGET));
        Ok(self
            .journal_rows(id)?
            .into_iter()
            .map(|(_, name, status)| {
                let split = name
                    .split_once(SERVER_SEPARATOR)
                    .filter(|(server, _)| of_unit && !server.is_empty());
                match split {
                    Some((server, step)) => JournalEntry {
                        server: Some(server.to_owned()),
                        step: step.to_owned(),
                        status,
                    },
                    None => JournalEntry {
                        server: None,
                        step: name,
                        status,
                    },
                }
            })
            .collect())
    }

    /// `(row id, step, status)` of an operation's journal rows, in order.
    fn journal_rows(&self, id: i64) -> Result<Vec<(i64, String, StepStatus)>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, step, status FROM operation_steps WHERE operation_id = ?1 ORDER BY id",
            )
            .map_err(query_err("read an operation's steps"))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(query_err("read an operation's steps"))?;
        let mut out = Vec::new();
        for row in rows {
            let (row, step, status) = row.map_err(query_err("read an operation's steps"))?;
            out.push((row, step, step_status(row, &status)?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit operation's rows read back as server, step and status; another operation's
    /// steps keep their words (even with a colon); the first wave's journal reads too.
    #[test]
    fn journal_rows_read_back_typed() {
        let (_dir, inv) = crate::inventory::first_wave_inventory();
        let deploy = inv.operation_list(10).unwrap()[0].id;
        let journal = inv.operation_journal(deploy).unwrap();
        assert!(!journal.is_empty());
        assert!(journal.iter().all(
            |e| e.server.as_deref() == Some("shop-1") || e.server.as_deref() == Some("shop-2")
        ));
        assert!(journal
            .iter()
            .any(|e| e.step == "define" && e.status == StepStatus::Succeeded));

        let op = inv
            .operation_begin_with("rollout", "unit/app", "{}")
            .unwrap();
        inv.operation_step(
            op,
            &step_name("app-1", "swap-version"),
            StepStatus::Started,
            "",
        )
        .unwrap();
        inv.operation_step(op, "app-1: swap-version", StepStatus::UndoFailed, "why")
            .unwrap();
        assert_eq!(
            inv.operation_journal(op).unwrap(),
            [StepStatus::Started, StepStatus::UndoFailed].map(|status| JournalEntry {
                server: Some("app-1".into()),
                step: "swap-version".into(),
                status,
            })
        );
        assert_eq!(
            inv.operation_steps(op).unwrap(),
            [
                ("app-1: swap-version".to_owned(), "started".to_owned()),
                ("app-1: swap-version".to_owned(), "undo_failed".to_owned())
            ]
        );
        let build = inv.operation_begin("image.build", "image/web").unwrap();
        inv.operation_step(
            build,
            "seal: cloud-init clean in the guest",
            StepStatus::Succeeded,
            "",
        )
        .unwrap();
        assert_eq!(
            inv.operation_journal(build).unwrap(),
            [JournalEntry {
                server: None,
                step: "seal: cloud-init clean in the guest".into(),
                status: StepStatus::Succeeded,
            }]
        );
    }

    /// A status this build does not know (a row written with its checks off) is an error
    /// naming the row, in every read of the journal.
    #[test]
    fn a_step_status_this_build_does_not_know_is_an_error() {
        let inv = Inventory::open_in_memory().unwrap();
        let op = inv
            .operation_begin_with("deploy", "unit/app", "{}")
            .unwrap();
        inv.operation_step(op, "app-1: define", StepStatus::Started, "")
            .unwrap();
        inv.execute_batch_for_test(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE operation_steps SET status = 'half-done';",
        );
        let errors = [
            inv.operation_journal(op).unwrap_err(),
            inv.operation_steps(op).unwrap_err(),
            inv.operation_list(10).unwrap_err(),
        ];
        for err in errors {
            assert!(
                err.to_string()
                    .contains("table operation_steps, row #1, column status (\"half-done\")"),
                "{err}"
            );
        }
    }

    /// Many connections (as many processes would have) try to take one interrupted operation
    /// over at the same moment: exactly one gets it, every time.
    #[test]
    fn dead_operations_that_cannot_be_resumed_are_closed() {
        let inv = Inventory::open_in_memory().unwrap();
        let ensure = inv.operation_begin("image.ensure", "image/base:1").unwrap();
        let deploy = inv.operation_begin_with("deploy", "unit/a", "{}").unwrap();
        let alive = inv.operation_begin("image.ensure", "image/base:2").unwrap();
        inv.operation_orphan(ensure).unwrap();
        inv.operation_orphan(deploy).unwrap();
        assert_eq!(inv.operation_close_dead().unwrap(), [ensure]);
        let states: Vec<(i64, String)> = inv
            .operation_list(10)
            .unwrap()
            .into_iter()
            .map(|o| (o.id, o.state))
            .collect();
        assert!(states.contains(&(ensure, "aborted".into())));
        assert!(
            states.contains(&(deploy, "running".into())),
            "resumable: left to the admin"
        );
        assert!(
            states.contains(&(alive, "running".into())),
            "its process runs"
        );
    }

    #[test]
    fn exactly_one_of_many_connections_takes_an_interrupted_operation_over() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let first = Inventory::open_in(dir.path()).unwrap();
            let op = first
                .operation_begin_with("deploy", "unit/shop", "{}")
                .unwrap();
            first.operation_orphan(op).unwrap();
            let n = 6;
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let inv = Inventory::open_in(dir.path()).unwrap();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        barrier.wait();
                        inv.operation_claim(op).unwrap()
                    })
                })
                .collect();
            let won = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(won, 1);
            assert!(
                !first.operation_claim(op).unwrap(),
                "taken: not interrupted any more"
            );
            first.operation_release_claim(op).unwrap();
            assert!(
                first.operation_claim(op).unwrap(),
                "given back: interrupted again"
            );
        }
    }
}
