//! Table `unit_locks`: one operation per unit at a time. Created by the first wave's units
//! migration (`units::CREATE`).

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};

impl Inventory {
    /// Takes the unit's lock for `operation`; returns the operation holding it when taken.
    pub fn unit_lock(&self, unit: &str, operation: i64) -> Result<Option<i64>, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin locking a unit")?;
        let unit_id = Self::unit_id_in(&tx, unit)?;
        let holder: Option<i64> = tx
            .query_row(
                "SELECT operation_id FROM unit_locks WHERE unit_id = ?1",
                [unit_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("read a unit lock"))?;
        if let Some(h) = holder {
            if h != operation && !Self::reconcile_gone(&tx, h)? {
                return Ok(Some(h));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO unit_locks (unit_id, operation_id) VALUES (?1, ?2)",
            params![unit_id, operation],
        )
        .map_err(query_err("lock a unit"))?;
        tx.commit().map_err(query_err("lock a unit"))?;
        Ok(None)
    }

    /// A lock held by an `lb.reconcile` whose process is gone is stale: a reconcile has nothing
    /// to resume or unwind (it only puts back what the inventory says), so the lock is taken
    /// over and the reconcile marked aborted. Any other operation keeps its lock until it is
    /// resumed or unwound.
    fn reconcile_gone(tx: &rusqlite::Transaction<'_>, holder: i64) -> Result<bool, InventoryError> {
        let row: Option<(String, String, u32, String)> = tx
            .query_row(
                "SELECT kind, state, pid, pid_start FROM operations WHERE id = ?1",
                [holder],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(query_err("read a unit lock's operation"))?;
        let Some((kind, state, pid, start)) = row else {
            return Ok(false);
        };
        if kind != "lb.reconcile"
            || (state == "running"
                && super::journal::process_start(pid).as_deref() == Some(start.as_str()))
        {
            return Ok(false);
        }
        tx.execute(
            "UPDATE operations SET state = 'aborted', error = 'interrupted', finished_at = ?2
             WHERE id = ?1 AND state = 'running'",
            params![holder, now_rfc3339()],
        )
        .map_err(query_err("abort a stale reconcile"))?;
        Ok(true)
    }

    pub fn unit_unlock(&self, operation: i64) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM unit_locks WHERE operation_id = ?1",
                [operation],
            )
            .map_err(query_err("unlock a unit"))?;
        Ok(())
    }
}
