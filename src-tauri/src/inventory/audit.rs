//! Table `audit`: every change anyone made through Flotilla — who, what, when, result.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::params;
use serde::Serialize;

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        via     TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        result  TEXT NOT NULL CHECK (result IN ('ok', 'error')),
        detail  TEXT NOT NULL DEFAULT ''
    ) STRICT;
    CREATE INDEX audit_target ON audit(target);";

/// Who acts: the OS user, and through which front door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: String,
    pub via: &'static str,
}

impl Actor {
    /// The current OS account acting through `via` (`cli`, `gui`). Read from the system, not
    /// from `$USER`, which a service manager or `sudo -E` may leave unset or stale.
    pub fn new(via: &'static str) -> Self {
        let user = whoami::username().unwrap_or_else(|_| "unknown".into());
        Self { user, via }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct AuditEntry {
    pub at: String,
    pub actor: String,
    pub via: String,
    pub action: String,
    pub target: String,
    pub result: AuditResult,
    pub detail: String,
}

impl Inventory {
    pub fn audit_record(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        result: AuditResult,
        detail: &str,
    ) -> Result<(), InventoryError> {
        let result = match result {
            AuditResult::Ok => "ok",
            AuditResult::Error => "error",
        };
        self.conn()
            .execute(
                "INSERT INTO audit (at, actor, via, action, target, result, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    now_rfc3339(),
                    actor.user,
                    actor.via,
                    action,
                    target,
                    result,
                    detail
                ],
            )
            .map_err(query_err("write the audit log"))?;
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn audit_list(&self, limit: u32) -> Result<Vec<AuditEntry>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT at, actor, via, action, target, result, detail
                 FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(query_err("read the audit log"))?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    via: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    result: if r.get::<_, String>(5)? == "ok" {
                        AuditResult::Ok
                    } else {
                        AuditResult::Error
                    },
                    detail: r.get(6)?,
                })
            })
            .map_err(query_err("read the audit log"))?;
        rows.collect::<Result<_, _>>()
            .map_err(query_err("read the audit log"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_newest_first_with_who_and_result() {
        let inv = Inventory::open_in_memory().unwrap();
        let actor = Actor {
            user: "alice".into(),
            via: "gui",
        };
        inv.audit_record(&actor, "host.add", "host/h1", AuditResult::Ok, "")
            .unwrap();
        inv.audit_record(
            &actor,
            "host.remove",
            "host/h1",
            AuditResult::Error,
            "in use",
        )
        .unwrap();
        let log = inv.audit_list(10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].action, "host.remove");
        assert_eq!(log[0].result, AuditResult::Error);
        assert_eq!(log[0].detail, "in use");
        assert_eq!(log[1].actor, "alice");
        assert_eq!(log[1].via, "gui");
        assert_eq!(inv.audit_list(1).unwrap().len(), 1, "limit is honoured");
    }
}
