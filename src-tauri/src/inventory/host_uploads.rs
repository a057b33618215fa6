//! Table `host_uploads`: uploads of shared objects (master copies, payload and kernel files)
//! that this inventory began and has not finished. It is written **before** the first byte
//! goes to the host and removed once the upload is verified and recorded (or its half file
//! removed). So an unrecorded volume of such a name is this inventory's interrupted upload
//! only when a row here says so; without one it is someone else's (another Flotilla
//! inventory's copy, a file put there by hand) and is never deleted or replaced.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE host_uploads (
        host       TEXT NOT NULL,
        volume     TEXT NOT NULL,
        started_at TEXT NOT NULL,
        PRIMARY KEY (host, volume)
    ) STRICT;";

impl Inventory {
    /// Records that an upload of `volume` to `host` begins.
    pub fn host_upload_begin(&self, host: &str, volume: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO host_uploads (host, volume, started_at) VALUES (?1, ?2, ?3)",
                params![host, volume, now_rfc3339()],
            )
            .map_err(query_err("record an upload"))?;
        Ok(())
    }

    /// Whether an upload of `volume` to `host` began and did not finish.
    pub fn host_upload_pending(&self, host: &str, volume: &str) -> Result<bool, InventoryError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM host_uploads WHERE host = ?1 AND volume = ?2",
                params![host, volume],
                |_| Ok(()),
            )
            .optional()
            .map_err(query_err("read an upload"))?
            .is_some())
    }

    /// The upload ended: verified and recorded, or its half file removed.
    pub fn host_upload_end(&self, host: &str, volume: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM host_uploads WHERE host = ?1 AND volume = ?2",
                params![host, volume],
            )
            .map_err(query_err("end an upload"))?;
        Ok(())
    }
}
