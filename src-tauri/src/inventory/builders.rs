//! Table `builders`: builder VMs, one per image at a time, from `image build` until capture or
//! abort. The row is written before anything is created on the host, so a crash leaves a
//! record of what to remove.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{Builder, HostName, ImageName};
use rusqlite::{params, OptionalExtension, Row};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE builders (
        image            TEXT PRIMARY KEY,
        host_id          INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        base_version_id  INTEGER REFERENCES image_versions(id) ON DELETE RESTRICT,
        iso              TEXT,
        domain           TEXT NOT NULL UNIQUE,
        volumes_json     TEXT NOT NULL,
        cpus             INTEGER NOT NULL,
        memory_mib       INTEGER NOT NULL,
        disk_bytes       INTEGER NOT NULL,
        boot_json        TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('building', 'running', 'capturing')),
        captured_version INTEGER,
        serial_log       TEXT NOT NULL,
        created_at       TEXT NOT NULL
    ) STRICT;";

const COLUMNS: &str = "b.image, h.name,
    (SELECT i.name || ':v' || v.version FROM image_versions v JOIN images i ON i.id = v.image_id
     WHERE v.id = b.base_version_id),
    b.iso, b.domain, b.volumes_json, b.cpus, b.memory_mib, b.disk_bytes, b.boot_json, b.state,
    b.captured_version, b.serial_log, b.created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Result<Builder, InventoryError>> {
    let image: String = row.get(0)?;
    let corrupt = |what: &str| InventoryError::Corrupt {
        what: format!("builder of '{image}': {what}"),
        source: None,
    };
    let host: String = row.get(1)?;
    let volumes: String = row.get(5)?;
    let boot: String = row.get(9)?;
    let b = (|| {
        Ok(Builder {
            image: ImageName::parse(&image).map_err(|_| corrupt("image"))?,
            host: HostName::parse(&host).map_err(|_| corrupt("host"))?,
            base: row.get(2).map_err(|_| corrupt("base"))?,
            iso: row.get(3).map_err(|_| corrupt("iso"))?,
            domain: row.get(4).map_err(|_| corrupt("domain"))?,
            volumes: serde_json::from_str(&volumes).map_err(|_| corrupt("volumes"))?,
            cpus: row.get(6).map_err(|_| corrupt("cpus"))?,
            memory_mib: row
                .get::<_, i64>(7)
                .map(i64::unsigned_abs)
                .map_err(|_| corrupt("memory"))?,
            disk_bytes: row
                .get::<_, i64>(8)
                .map(i64::unsigned_abs)
                .map_err(|_| corrupt("disk"))?,
            boot: serde_json::from_str(&boot).map_err(|_| corrupt("boot"))?,
            state: row.get(10).map_err(|_| corrupt("state"))?,
            captured_version: row.get(11).map_err(|_| corrupt("captured_version"))?,
            serial_log: row.get(12).map_err(|_| corrupt("serial_log"))?,
            created_at: row.get(13).map_err(|_| corrupt("created_at"))?,
        })
    })();
    Ok(b)
}

impl Inventory {
    /// Records a new builder. Refuses a second builder for the same image.
    pub fn builder_insert(
        &self,
        b: &Builder,
        base_version: Option<(&ImageName, u32)>,
    ) -> Result<Builder, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin builder insert")?;
        if let Some(holder) = tx
            .query_row(
                "SELECT h.name FROM builders b JOIN hosts h ON h.id = b.host_id WHERE b.image = ?1",
                [b.image.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(query_err("look up a builder"))?
        {
            return Err(InventoryError::Duplicate {
                kind: "builder for image",
                name: format!("{} (on host {holder}; capture or abort it first)", b.image),
            });
        }
        let base_id: Option<i64> = match base_version {
            None => None,
            Some((image, version)) => tx
                .query_row(
                    "SELECT v.id FROM image_versions v JOIN images i ON i.id = v.image_id WHERE i.name = ?1 AND v.version = ?2",
                    params![image.as_str(), version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(query_err("read the base version"))?,
        };
        let json = |v: Result<String, serde_json::Error>| {
            v.map_err(|e| InventoryError::Corrupt {
                what: "builder to store".into(),
                source: Some(Box::new(e)),
            })
        };
        tx.execute(
            "INSERT INTO builders (image, host_id, base_version_id, iso, domain, volumes_json, cpus,
                 memory_mib, disk_bytes, boot_json, state, serial_log, created_at)
             SELECT ?1, id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'building', ?10, ?11 FROM hosts WHERE name = ?12",
            params![
                b.image.as_str(),
                base_id,
                b.iso,
                b.domain,
                json(serde_json::to_string(&b.volumes))?,
                b.cpus,
                i64::try_from(b.memory_mib).unwrap_or(i64::MAX),
                i64::try_from(b.disk_bytes).unwrap_or(i64::MAX),
                json(serde_json::to_string(&b.boot))?,
                b.serial_log,
                now_rfc3339(),
                b.host.as_str()
            ],
        )
        .map_err(query_err("insert a builder"))?;
        let row = Self::builder_get_in(&tx, &b.image)?;
        tx.commit().map_err(query_err("commit builder insert"))?;
        Ok(row)
    }

    fn builder_get_in(
        conn: &rusqlite::Connection,
        image: &ImageName,
    ) -> Result<Builder, InventoryError> {
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM builders b JOIN hosts h ON h.id = b.host_id WHERE b.image = ?1"),
            [image.as_str()],
            from_row,
        )
        .optional()
        .map_err(query_err("read a builder"))?
        .ok_or_else(|| InventoryError::NotFound {
            kind: "builder for image",
            name: image.to_string(),
        })?
    }

    pub fn builder_get(&self, image: &ImageName) -> Result<Builder, InventoryError> {
        self.count_read("builder_get");
        Self::builder_get_in(&self.conn(), image)
    }

    pub fn builder_list(&self) -> Result<Vec<Builder>, InventoryError> {
        self.count_read("builder_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM builders b JOIN hosts h ON h.id = b.host_id ORDER BY b.image"))
            .map_err(query_err("list builders"))?;
        let rows = stmt
            .query_map([], from_row)
            .map_err(query_err("list builders"))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(query_err("list builders"))??);
        }
        Ok(out)
    }

    pub fn builder_set_state(&self, image: &ImageName, state: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE builders SET state = ?2 WHERE image = ?1",
                params![image.as_str(), state],
            )
            .map_err(query_err("update a builder"))?;
        Ok(())
    }

    pub fn builder_set_captured(
        &self,
        image: &ImageName,
        version: u32,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE builders SET captured_version = ?2 WHERE image = ?1",
                params![image.as_str(), version],
            )
            .map_err(query_err("update a builder"))?;
        Ok(())
    }

    pub fn builder_delete(&self, image: &ImageName) -> Result<(), InventoryError> {
        self.conn()
            .execute("DELETE FROM builders WHERE image = ?1", [image.as_str()])
            .map_err(query_err("delete a builder"))?;
        Ok(())
    }
}
