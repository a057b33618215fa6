//! Table `host_objects`: files Flotilla put on a host and verified there (a unit version's
//! payload disk and kernel files). A volume of that name without a record is an interrupted
//! upload.

use super::{query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE host_objects (
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        volume  TEXT NOT NULL,
        sha256  TEXT NOT NULL CHECK (length(sha256) = 64),
        PRIMARY KEY (host_id, volume)
    ) STRICT;";

impl Inventory {
    /// The sha256 recorded for a verified volume on a host.
    pub fn host_object_get(
        &self,
        host: &str,
        volume: &str,
    ) -> Result<Option<String>, InventoryError> {
        self.conn()
            .query_row(
                "SELECT o.sha256 FROM host_objects o JOIN hosts h ON h.id = o.host_id
                 WHERE h.name = ?1 AND o.volume = ?2",
                params![host, volume],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("read a host object"))
    }

    /// Verified volumes recorded on a host, by name.
    pub fn host_object_list(&self, host: &str) -> Result<Vec<String>, InventoryError> {
        self.count_read("host_object_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT o.volume FROM host_objects o JOIN hosts h ON h.id = o.host_id
                 WHERE h.name = ?1 ORDER BY o.volume",
            )
            .map_err(query_err("list host objects"))?;
        let rows = stmt
            .query_map([host], |r| r.get(0))
            .map_err(query_err("list host objects"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(query_err("list host objects"));
        rows
    }

    pub fn host_object_record(
        &self,
        host: &str,
        volume: &str,
        sha256: &str,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO host_objects (host_id, volume, sha256)
                 SELECT id, ?2, ?3 FROM hosts WHERE name = ?1",
                params![host, volume, sha256],
            )
            .map_err(query_err("record a host object"))?;
        Ok(())
    }

    pub fn host_object_forget(&self, host: &str, volume: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM host_objects WHERE volume = ?2
                 AND host_id = (SELECT id FROM hosts WHERE name = ?1)",
                params![host, volume],
            )
            .map_err(query_err("forget a host object"))?;
        Ok(())
    }
}
