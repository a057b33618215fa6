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

    /// Whether a lock is stale and may be taken over: its operation ended (it died between
    /// its end and its unlock, or the unlock failed) or no longer exists; or it is an
    /// `lb.reconcile` whose process is gone — a reconcile has nothing to resume or unwind (it
    /// only puts back what the inventory says), so it is marked aborted. Any other operation
    /// that is still `running` keeps its lock until it is resumed or unwound.
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
            return Ok(true);
        };
        if state != "running" {
            return Ok(true);
        }
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

    /// Hands the lock of operation `from` to `to` (a resume takes over what it resumes),
    /// with no moment in between where another operation could take it.
    pub fn unit_lock_handover(&self, from: i64, to: i64) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE unit_locks SET operation_id = ?2 WHERE operation_id = ?1",
                params![from, to],
            )
            .map_err(query_err("hand a unit lock over"))?;
        Ok(())
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

/// Migration: a pause asked for a unit's running rollout (by any process), honoured at the
/// next safe point between batches.
pub(super) const PAUSE: &str =
    "ALTER TABLE units ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;";

impl Inventory {
    /// The operation that holds `unit` (running, or interrupted and not yet resumed or
    /// unwound), if any.
    pub fn unit_locked_by(&self, unit: &str) -> Result<Option<i64>, InventoryError> {
        self.conn()
            .query_row(
                "SELECT l.operation_id FROM unit_locks l JOIN units u ON u.id = l.unit_id
                 WHERE u.name = ?1",
                [unit],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("find the unit's operation"))
    }

    /// Asks the rollout that holds `unit` to pause at its next safe point. Refused when no
    /// rollout holds the unit.
    pub fn unit_request_pause(&self, unit: &str) -> Result<i64, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "ask for a pause")?;
        let unit_id = Self::unit_id_in(&tx, unit)?;
        let holder: Option<(i64, String)> = tx
            .query_row(
                "SELECT o.id, o.kind FROM unit_locks l JOIN operations o ON o.id = l.operation_id
                 WHERE l.unit_id = ?1 AND o.state = 'running'",
                [unit_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(query_err("find the unit's operation"))?;
        let Some((op, _)) = holder.filter(|(_, kind)| kind == "rollout" || kind == "rollback")
        else {
            return Err(InventoryError::NotFound {
                kind: "running rollout of unit",
                name: unit.to_owned(),
            });
        };
        tx.execute(
            "UPDATE units SET pause_requested = 1 WHERE id = ?1",
            [unit_id],
        )
        .map_err(query_err("ask for a pause"))?;
        tx.commit().map_err(query_err("ask for a pause"))?;
        Ok(op)
    }

    /// Whether a pause was asked for the unit's rollout.
    pub fn unit_pause_requested(&self, unit: &str) -> Result<bool, InventoryError> {
        self.conn()
            .query_row(
                "SELECT pause_requested FROM units WHERE name = ?1",
                [unit],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v != 0)
            .map_err(query_err("read a pause request"))
    }

    /// Forgets a pause request (a rollout begins, or paused).
    pub fn unit_clear_pause(&self, unit: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE units SET pause_requested = 0 WHERE name = ?1",
                [unit],
            )
            .map_err(query_err("clear a pause request"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::inventory::Inventory;

    /// A lock whose operation ended (it died between its end and its unlock, or the unlock
    /// failed) does not keep the unit busy; one whose operation still runs does.
    #[test]
    fn a_lock_of_an_operation_that_ended_is_taken_over() {
        let inv = Inventory::open_in_memory().unwrap();
        inv.execute_batch_for_test(
            "INSERT INTO units (id, name, policy_json, current_version, created_at)
             VALUES (1, 'shop', '{}', 1, '')",
        );
        let a = inv.operation_begin_with("stop", "unit/shop", "{}").unwrap();
        let b = inv
            .operation_begin_with("start", "unit/shop", "{}")
            .unwrap();
        assert_eq!(inv.unit_lock("shop", a).unwrap(), None);
        assert_eq!(inv.unit_lock("shop", b).unwrap(), Some(a), "a runs: busy");
        inv.operation_finish(a, "succeeded", "").unwrap();
        assert_eq!(
            inv.unit_lock("shop", b).unwrap(),
            None,
            "a ended: b takes it"
        );
        let c = inv.operation_begin_with("stop", "unit/shop", "{}").unwrap();
        assert_eq!(inv.unit_lock("shop", c).unwrap(), Some(b));
        // A resume hands its lock over with no gap.
        inv.unit_lock_handover(b, c).unwrap();
        assert_eq!(inv.unit_lock("shop", c).unwrap(), None);
        assert_eq!(inv.unit_lock("shop", b).unwrap(), Some(c));
    }
}
