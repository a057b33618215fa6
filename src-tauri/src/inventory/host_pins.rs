//! Table `host_pins`: which operations rely on a shared object on a host (a master copy, a unit
//! version's payload or kernel files) right now, and which one is writing or deleting it.
//!
//! Several units and operations — in this process or another — share one copy on a host. An
//! operation pins what it uses before it looks at it (`use`), takes `write` to upload it (one
//! writer at a time: two uploads of the same copy never delete each other's file) and `delete`
//! to remove it (only when nobody else uses or writes it). A pin lasts while its operation is
//! `running`; a `write` or `delete` of a process that died is stale and ignored. Pins name the
//! host by name and reference no other table: a stale pin never blocks removing a host.

use super::journal::process_alive;
use super::{query_err, Inventory, InventoryError};
use rusqlite::params;

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE host_pins (
        host         TEXT NOT NULL,
        volume       TEXT NOT NULL,
        operation_id INTEGER NOT NULL,
        mode         TEXT NOT NULL CHECK (mode IN ('use', 'write', 'delete')),
        PRIMARY KEY (host, volume, operation_id, mode)
    ) STRICT;
    CREATE INDEX host_pins_operation ON host_pins(operation_id);";

/// How an operation holds a shared object on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinMode {
    /// Relies on it: it must not be deleted meanwhile.
    Use,
    /// Uploads it: no other writer, no deleter.
    Write,
    /// Removes it: nobody else may use or write it.
    Delete,
}

impl PinMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Use => "use",
            Self::Write => "write",
            Self::Delete => "delete",
        }
    }

    /// Whether a pin `other` held by another live operation stops this one.
    fn blocked_by(self, other: &str) -> bool {
        match self {
            Self::Use => other == "delete",
            Self::Write => other == "write" || other == "delete",
            Self::Delete => true,
        }
    }
}

impl Inventory {
    /// Pins `volume` on `host` for operation `op`, unless another live operation's pin stands
    /// in the way: then `Ok(Some(holder))` and nothing is written.
    pub fn host_pin(
        &self,
        host: &str,
        volume: &str,
        op: i64,
        mode: PinMode,
    ) -> Result<Option<i64>, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "pin an object on a host")?;
        type Row = (i64, String, String, u32, String, bool);
        let others: Vec<Row> = {
            let mut stmt = tx
                .prepare(
                    "SELECT p.operation_id, p.mode, o.state, o.pid, o.pid_start, o.args_json != ''
                     FROM host_pins p JOIN operations o ON o.id = p.operation_id
                     WHERE p.host = ?1 AND p.volume = ?2 AND p.operation_id != ?3",
                )
                .map_err(query_err("read pins"))?;
            let rows = stmt
                .query_map(params![host, volume, op], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })
                .map_err(query_err("read pins"))?
                .collect::<Result<_, _>>()
                .map_err(query_err("read pins"))?;
            rows
        };
        for (holder, other, state, pid, start, resumable) in others {
            if state != "running" || !mode.blocked_by(&other) {
                continue;
            }
            // A writer or deleter that died holds nothing, nor does a user that cannot be
            // resumed (`image ensure`); a unit operation that died still does (its half-built
            // servers rely on the object until it is resumed or unwound).
            let holds_when_dead = other == "use" && resumable;
            if !holds_when_dead && !process_alive(pid, &start) {
                continue;
            }
            return Ok(Some(holder));
        }
        tx.execute(
            "INSERT OR IGNORE INTO host_pins (host, volume, operation_id, mode) VALUES (?1, ?2, ?3, ?4)",
            params![host, volume, op, mode.as_str()],
        )
        .map_err(query_err("pin an object on a host"))?;
        tx.commit().map_err(query_err("pin an object on a host"))?;
        Ok(None)
    }

    /// Lets go of one pin.
    pub fn host_unpin(
        &self,
        host: &str,
        volume: &str,
        op: i64,
        mode: PinMode,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM host_pins WHERE host = ?1 AND volume = ?2 AND operation_id = ?3 AND mode = ?4",
                params![host, volume, op, mode.as_str()],
            )
            .map_err(query_err("unpin an object on a host"))?;
        Ok(())
    }

    /// Lets go of every pin of an operation (it ended, or was resumed or unwound).
    pub fn host_unpin_all(&self, op: i64) -> Result<(), InventoryError> {
        self.conn()
            .execute("DELETE FROM host_pins WHERE operation_id = ?1", [op])
            .map_err(query_err("unpin an operation's objects"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_block_deleters_and_writers_exclude_each_other() {
        let inv = Inventory::open_in_memory().unwrap();
        let a = inv.operation_begin_with("deploy", "unit/a", "{}").unwrap();
        let b = inv.operation_begin_with("delete", "unit/b", "{}").unwrap();
        let m = "base-v1.qcow2";
        assert_eq!(inv.host_pin("h1", m, a, PinMode::Use).unwrap(), None);
        assert_eq!(
            inv.host_pin("h1", m, b, PinMode::Delete).unwrap(),
            Some(a),
            "a copy another operation uses is not deleted"
        );
        assert_eq!(
            inv.host_pin("h2", m, b, PinMode::Delete).unwrap(),
            None,
            "pins are per host"
        );
        assert_eq!(inv.host_pin("h1", m, a, PinMode::Write).unwrap(), None);
        assert_eq!(
            inv.host_pin("h1", m, b, PinMode::Write).unwrap(),
            Some(a),
            "one writer at a time"
        );
        inv.host_unpin("h1", m, a, PinMode::Write).unwrap();
        assert_eq!(inv.host_pin("h1", m, b, PinMode::Write).unwrap(), None);
        inv.host_unpin_all(b).unwrap();
        inv.operation_finish(a, "succeeded", "").unwrap();
        assert_eq!(
            inv.host_pin("h1", m, b, PinMode::Delete).unwrap(),
            None,
            "pins of a finished operation hold nothing"
        );
        let c = inv.operation_begin_with("deploy", "unit/c", "{}").unwrap();
        assert_eq!(
            inv.host_pin("h1", m, c, PinMode::Use).unwrap(),
            Some(b),
            "nobody starts using what is being deleted"
        );
    }

    #[test]
    fn a_dead_writer_holds_nothing_but_a_dead_user_still_does() {
        let inv = Inventory::open_in_memory().unwrap();
        // An `image ensure` that died (nothing to resume) holds nothing either.
        let ensure = inv.operation_begin("image.ensure", "image/base:1").unwrap();
        inv.host_pin("h1", "q", ensure, PinMode::Use).unwrap();
        inv.operation_orphan(ensure).unwrap();
        let dead = inv.operation_begin_with("deploy", "unit/a", "{}").unwrap();
        inv.host_pin("h1", "p", dead, PinMode::Write).unwrap();
        inv.host_pin("h1", "q", dead, PinMode::Use).unwrap();
        inv.operation_orphan(dead).unwrap();
        let b = inv.operation_begin_with("deploy", "unit/b", "{}").unwrap();
        assert_eq!(inv.host_pin("h1", "p", b, PinMode::Write).unwrap(), None);
        assert_eq!(
            inv.host_pin("h1", "q", b, PinMode::Delete).unwrap(),
            Some(dead),
            "an interrupted deploy's servers may still rely on it until it is unwound"
        );
    }
}
