//! Table `host_fences`: proof that a lost host's servers are off, and who or what gave it —
//! its BMC powered it off and read the power state back, the isolation response of its guests
//! had the time to act, or the admin confirmed it. A recovery re-creates servers of a lost host
//! only behind such a record. It lasts for one loss of the host: it is removed when the host is
//! ready again (or removed from the inventory).
//!
//! The migration also adds what fencing needs elsewhere: per server the isolation response its
//! guest was given and when it was taken out of rotation because its host was lost; per host
//! when the monitor last saw it alive; the monitor lease's PID namespace.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{FenceMethod, HostFence};
use rusqlite::{params, OptionalExtension};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE host_fences (
        host_id    INTEGER PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
        method     TEXT NOT NULL CHECK (method IN ('power', 'isolation', 'confirmed')),
        by_whom    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        at         TEXT NOT NULL,
        operation  INTEGER
    ) STRICT;
    ALTER TABLE servers ADD COLUMN isolation_s INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE servers ADD COLUMN fenced_at TEXT NOT NULL DEFAULT '';
    ALTER TABLE host_monitor ADD COLUMN last_seen TEXT NOT NULL DEFAULT '';
    ALTER TABLE monitor_lease ADD COLUMN pid_ns TEXT NOT NULL DEFAULT '';";

impl Inventory {
    /// Records that `host`'s servers are off (replacing an earlier record of this loss).
    pub fn host_fence_record(&self, fence: &HostFence) -> Result<(), InventoryError> {
        let changed = self
            .conn()
            .execute(
                "INSERT INTO host_fences (host_id, method, by_whom, detail, at, operation)
                 SELECT id, ?2, ?3, ?4, ?5, ?6 FROM hosts WHERE name = ?1
                 ON CONFLICT(host_id) DO UPDATE SET method = ?2, by_whom = ?3, detail = ?4,
                     at = ?5, operation = ?6",
                params![
                    fence.host,
                    fence.method.as_str(),
                    fence.by,
                    fence.detail,
                    if fence.at.is_empty() {
                        now_rfc3339()
                    } else {
                        fence.at.clone()
                    },
                    fence.operation
                ],
            )
            .map_err(query_err("record a host's fence"))?;
        if changed == 0 {
            return Err(InventoryError::NotFound {
                kind: "host",
                name: fence.host.clone(),
            });
        }
        Ok(())
    }

    /// The fence recorded for `host` during its current loss, if any.
    pub fn host_fence_get(&self, host: &str) -> Result<Option<HostFence>, InventoryError> {
        self.count_read("host_fence_get");
        self.host_fence_of(host)
    }

    fn host_fence_of(&self, host: &str) -> Result<Option<HostFence>, InventoryError> {
        let row: Option<(String, String, String, String, Option<i64>)> = self
            .conn()
            .query_row(
                "SELECT f.method, f.by_whom, f.detail, f.at, f.operation
                 FROM host_fences f JOIN hosts h ON h.id = f.host_id WHERE h.name = ?1",
                [host],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(query_err("read a host's fence"))?;
        row.map(|(method, by, detail, at, operation)| {
            Ok(HostFence {
                host: host.to_owned(),
                method: FenceMethod::parse(&method).ok_or_else(|| InventoryError::Corrupt {
                    what: format!("the fence method of host '{host}'"),
                    source: None,
                })?,
                by,
                detail,
                at,
                operation,
            })
        })
        .transpose()
    }

    /// Every recorded fence.
    pub fn host_fence_list(&self) -> Result<Vec<HostFence>, InventoryError> {
        self.count_read("host_fence_list");
        let names: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare(
                    "SELECT h.name FROM host_fences f JOIN hosts h ON h.id = f.host_id ORDER BY h.name",
                )
                .map_err(query_err("list the hosts' fences"))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(query_err("list the hosts' fences"))?
                .collect::<Result<Vec<String>, _>>()
                .map_err(query_err("list the hosts' fences"))?;
            rows
        };
        let mut out = Vec::new();
        for n in names {
            out.extend(self.host_fence_of(&n)?);
        }
        Ok(out)
    }

    /// The host is ready again: its fence belonged to the loss that ended.
    pub fn host_fence_clear(&self, host: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM host_fences WHERE host_id = (SELECT id FROM hosts WHERE name = ?1)",
                [host],
            )
            .map_err(query_err("clear a host's fence"))?;
        Ok(())
    }

    /// Records (RFC 3339) or clears (empty) when the server was taken out of rotation because
    /// its host was lost.
    pub fn server_set_fenced(&self, server: &str, at: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET fenced_at = ?2 WHERE name = ?1",
                params![server, at],
            )
            .map_err(query_err("record a server's fencing"))?;
        Ok(())
    }

    /// Records the isolation response (seconds; 0: none) the server's guest was given by the
    /// seed it boots with.
    pub fn server_set_isolation(&self, server: &str, seconds: u32) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET isolation_s = ?2 WHERE name = ?1",
                params![server, seconds],
            )
            .map_err(query_err("record a server's isolation response"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::hosts::tests::sample_facts;
    use crate::inventory::NewHost;
    use crate::model::{BridgeName, HostName, HostStatus, LibvirtUri, PoolName};

    #[test]
    fn a_fence_is_recorded_read_replaced_and_cleared_per_host() {
        let inv = Inventory::open_in_memory().unwrap();
        for (i, h) in ["h1", "h2"].iter().enumerate() {
            inv.host_insert(&NewHost {
                name: HostName::parse(h).unwrap(),
                uri: LibvirtUri::parse(&format!("test:///n{i}.xml")).unwrap(),
                pool: PoolName::parse("default").unwrap(),
                bridge: BridgeName::parse("br0").unwrap(),
                status: HostStatus::Ok,
                status_detail: String::new(),
                facts: sample_facts(),
            })
            .unwrap();
        }
        assert_eq!(inv.host_fence_get("h1").unwrap(), None);
        let f = HostFence {
            host: "h1".into(),
            method: FenceMethod::Confirmed,
            by: "alice".into(),
            detail: "alice confirmed that h1 is off".into(),
            at: String::new(),
            operation: Some(7),
        };
        inv.host_fence_record(&f).unwrap();
        let got = inv.host_fence_get("h1").unwrap().unwrap();
        assert_eq!(
            (got.method, got.by.as_str()),
            (FenceMethod::Confirmed, "alice")
        );
        assert!(!got.at.is_empty());
        inv.host_fence_record(&HostFence {
            method: FenceMethod::Power,
            by: "BMC".into(),
            ..f.clone()
        })
        .unwrap();
        assert_eq!(inv.host_fence_list().unwrap().len(), 1);
        assert_eq!(
            inv.host_fence_get("h1").unwrap().unwrap().method,
            FenceMethod::Power
        );
        assert!(matches!(
            inv.host_fence_record(&HostFence {
                host: "nope".into(),
                ..f.clone()
            }),
            Err(InventoryError::NotFound { .. })
        ));
        inv.host_fence_clear("h1").unwrap();
        assert_eq!(inv.host_fence_get("h1").unwrap(), None);
        assert_eq!(inv.host_fence_get("h2").unwrap(), None);
    }
}
