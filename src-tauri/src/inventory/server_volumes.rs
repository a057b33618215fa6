//! Table `server_volumes`: the volumes a server owns on its host (its disk overlay, its seed,
//! its serial log). A volume is recorded **before** Flotilla creates it; a same-named volume
//! without this record was made by someone else (by hand, another tool, an earlier inventory)
//! and is never adopted, overwritten or deleted.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE server_volumes (
        host_id    INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        volume     TEXT NOT NULL,
        server_id  INTEGER NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        PRIMARY KEY (host_id, volume)
    ) STRICT;
    CREATE INDEX server_volumes_server ON server_volumes(server_id);
    -- Servers deployed before this table existed made their volumes by these names.
    INSERT INTO server_volumes (host_id, volume, server_id, created_at)
        SELECT host_id, name || '-disk.qcow2', id, created_at FROM servers WHERE state != 'planned'
        UNION ALL
        SELECT host_id, name || '-seed.img', id, created_at FROM servers WHERE state != 'planned'
        UNION ALL
        SELECT host_id, name || '.serial', id, created_at FROM servers WHERE state != 'planned';";

impl Inventory {
    /// The server that owns `volume` on `host`, if Flotilla recorded one.
    pub fn server_volume_owner(
        &self,
        host: &str,
        volume: &str,
    ) -> Result<Option<String>, InventoryError> {
        self.conn()
            .query_row(
                "SELECT s.name FROM server_volumes v
                 JOIN servers s ON s.id = v.server_id
                 JOIN hosts h ON h.id = v.host_id
                 WHERE h.name = ?1 AND v.volume = ?2",
                params![host, volume],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("read a server's volume"))
    }

    /// Records that `server` owns `volume` on `host` (before creating it). Refused when another
    /// server owns a volume of that name there.
    pub fn server_volume_record(
        &self,
        server: &str,
        host: &str,
        volume: &str,
    ) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "record a server's volume")?;
        let owner: Option<String> = tx
            .query_row(
                "SELECT s.name FROM server_volumes v JOIN servers s ON s.id = v.server_id
                 JOIN hosts h ON h.id = v.host_id WHERE h.name = ?1 AND v.volume = ?2",
                params![host, volume],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("record a server's volume"))?;
        match owner {
            Some(o) if o == server => return Ok(()),
            Some(o) => {
                return Err(InventoryError::Duplicate {
                    kind: "volume",
                    name: format!("{volume} on host {host} (owned by server {o})"),
                })
            }
            None => {}
        }
        let n = tx
            .execute(
                "INSERT INTO server_volumes (host_id, volume, server_id, created_at)
                 SELECT h.id, ?3, s.id, ?4 FROM hosts h, servers s WHERE h.name = ?1 AND s.name = ?2",
                params![host, server, volume, now_rfc3339()],
            )
            .map_err(query_err("record a server's volume"))?;
        if n == 0 {
            return Err(InventoryError::NotFound {
                kind: "server",
                name: format!("{server} on host {host}"),
            });
        }
        tx.commit().map_err(query_err("record a server's volume"))
    }

    /// The volumes Flotilla recorded as `server`'s, by name.
    pub fn server_volumes_of(&self, server: &str) -> Result<Vec<String>, InventoryError> {
        self.count_read("server_volumes_of");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT v.volume FROM server_volumes v JOIN servers s ON s.id = v.server_id
                 WHERE s.name = ?1 ORDER BY v.volume",
            )
            .map_err(query_err("list a server's volumes"))?;
        let rows = stmt
            .query_map([server], |r| r.get(0))
            .map_err(query_err("list a server's volumes"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(query_err("list a server's volumes"));
        rows
    }

    /// The volumes recorded as `server`'s on `host`.
    pub fn server_volumes_on(
        &self,
        host: &str,
        server: &str,
    ) -> Result<Vec<String>, InventoryError> {
        self.count_read("server_volumes_on");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT v.volume FROM server_volumes v JOIN hosts h ON h.id = v.host_id
                 JOIN servers s ON s.id = v.server_id
                 WHERE h.name = ?1 AND s.name = ?2 ORDER BY v.volume",
            )
            .map_err(query_err("list a server's volumes on a host"))?;
        let rows = stmt
            .query_map([host, server], |r| r.get(0))
            .map_err(query_err("list a server's volumes on a host"))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(query_err("list a server's volumes on a host"));
        rows
    }

    /// Forgets that a volume is a server's (after deleting it).
    pub fn server_volume_forget(&self, host: &str, volume: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM server_volumes
                 WHERE host_id = (SELECT id FROM hosts WHERE name = ?1) AND volume = ?2",
                params![host, volume],
            )
            .map_err(query_err("forget a server's volume"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::inventory::Inventory;

    #[test]
    fn a_volume_has_one_owner_and_goes_with_its_server() {
        let inv = Inventory::open_in_memory().unwrap();
        inv.execute_batch_for_test(
            "INSERT INTO hosts (id, name, uri, pool, bridge, status, added_at, checked_at)
               VALUES (1, 'h1', 'test:///x', 'default', 'br0', 'ok', '', '');
             INSERT INTO units (id, name, policy_json, current_version, created_at)
               VALUES (1, 'web', '{}', 1, '');
             INSERT INTO servers (unit_id, name, host_id, address, mac, state, created_at) VALUES
               (1, 'web-1', 1, '10.0.0.11', '52:54:00:00:00:01', 'planned', ''),
               (1, 'web-2', 1, '10.0.0.12', '52:54:00:00:00:02', 'planned', '');",
        );
        assert_eq!(
            inv.server_volume_owner("h1", "web-1-disk.qcow2").unwrap(),
            None
        );
        inv.server_volume_record("web-1", "h1", "web-1-disk.qcow2")
            .unwrap();
        inv.server_volume_record("web-1", "h1", "web-1-disk.qcow2")
            .unwrap();
        assert_eq!(
            inv.server_volume_owner("h1", "web-1-disk.qcow2")
                .unwrap()
                .as_deref(),
            Some("web-1")
        );
        let err = inv
            .server_volume_record("web-2", "h1", "web-1-disk.qcow2")
            .unwrap_err();
        assert!(err.to_string().contains("owned by server web-1"), "{err}");
        inv.server_delete("web-1").unwrap();
        assert_eq!(
            inv.server_volume_owner("h1", "web-1-disk.qcow2").unwrap(),
            None,
            "a forgotten server owns nothing"
        );
    }
}
