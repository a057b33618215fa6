//! Tables `images`, `image_versions`, `image_copies`: master images, their immutable versions
//! (files in the library folder), and which version is present on which host.

use super::{corrupt_value, now_rfc3339, query_err, Dependent, Inventory, InventoryError};
use crate::model::{HostName, ImageName, ImageVersion, ImageVersionCopy, NewImageVersion};
use rusqlite::{params, OptionalExtension, Row};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE images (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE image_versions (
        id           INTEGER PRIMARY KEY,
        image_id     INTEGER NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
        version      INTEGER NOT NULL CHECK (version > 0),
        file         TEXT NOT NULL UNIQUE,
        sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
        format       TEXT NOT NULL CHECK (format = 'qcow2'),
        virtual_size INTEGER NOT NULL,
        actual_size  INTEGER NOT NULL,
        parent_id    INTEGER REFERENCES image_versions(id) ON DELETE RESTRICT,
        origin       TEXT NOT NULL,
        boot_json    TEXT NOT NULL,
        seal_json    TEXT NOT NULL,
        notes        TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        UNIQUE (image_id, version)
    ) STRICT;
    -- A version is immutable: only its notes may change.
    CREATE TRIGGER image_versions_immutable
        BEFORE UPDATE OF image_id, version, file, sha256, format, virtual_size, actual_size,
                         parent_id, origin, boot_json, seal_json, created_at ON image_versions
        BEGIN SELECT RAISE(ABORT, 'image versions are immutable'); END;
    CREATE TABLE image_copies (
        version_id  INTEGER NOT NULL REFERENCES image_versions(id) ON DELETE RESTRICT,
        host_id     INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        volume      TEXT NOT NULL,
        path        TEXT NOT NULL,
        verified_at TEXT NOT NULL,
        PRIMARY KEY (version_id, host_id)
    ) STRICT;";

const VERSION_COLUMNS: &str = "i.name, v.version, v.file, v.sha256, v.format, v.virtual_size,
    v.actual_size, (SELECT p.version FROM image_versions p WHERE p.id = v.parent_id), v.origin,
    v.boot_json, v.seal_json, v.notes, v.created_at";

fn version_from_row(row: &Row<'_>) -> rusqlite::Result<Result<ImageVersion, InventoryError>> {
    let name: String = row.get(0)?;
    let version: i64 = row.get(1)?;
    let corrupt =
        |what: &str, e: Box<dyn std::error::Error + Send + Sync>| InventoryError::Corrupt {
            what: format!("image '{name}' v{version}: {what}"),
            source: Some(e),
        };
    let boot: String = row.get(9)?;
    let seal: String = row.get(10)?;
    let parent: Option<i64> = row.get(7)?;
    Ok((|| {
        Ok(ImageVersion {
            image: ImageName::parse(&name).map_err(|e| corrupt("name", Box::new(e)))?,
            version: u32::try_from(version).map_err(|e| corrupt("version", Box::new(e)))?,
            file: row.get(2).map_err(|e| corrupt("file", Box::new(e)))?,
            sha256: row.get(3).map_err(|e| corrupt("sha256", Box::new(e)))?,
            format: row.get(4).map_err(|e| corrupt("format", Box::new(e)))?,
            virtual_size: row
                .get::<_, i64>(5)
                .map(|v| v.unsigned_abs())
                .map_err(|e| corrupt("size", Box::new(e)))?,
            actual_size: row
                .get::<_, i64>(6)
                .map(|v| v.unsigned_abs())
                .map_err(|e| corrupt("size", Box::new(e)))?,
            parent: parent
                .map(u32::try_from)
                .transpose()
                .map_err(|e| corrupt("parent", Box::new(e)))?,
            origin: row.get(8).map_err(|e| corrupt("origin", Box::new(e)))?,
            boot: serde_json::from_str(&boot).map_err(|e| corrupt("boot", Box::new(e)))?,
            seal: serde_json::from_str(&seal).map_err(|e| corrupt("seal", Box::new(e)))?,
            notes: row.get(11).map_err(|e| corrupt("notes", Box::new(e)))?,
            created_at: row
                .get(12)
                .map_err(|e| corrupt("created_at", Box::new(e)))?,
            copies: Vec::new(),
        })
    })())
}

impl Inventory {
    /// The next version number of `image` (1 for a new image).
    pub fn image_next_version(&self, image: &ImageName) -> Result<u32, InventoryError> {
        let max: Option<i64> = self
            .conn()
            .query_row(
                "SELECT max(v.version) FROM image_versions v JOIN images i ON i.id = v.image_id
                 WHERE i.name = ?1",
                [image.as_str()],
                |r| r.get(0),
            )
            .map_err(query_err("read image versions"))?;
        let max = max.unwrap_or(0);
        let max = u32::try_from(max).map_err(|_| {
            corrupt_value(
                "image_versions",
                image.as_str(),
                "version",
                &max.to_string(),
            )
        })?;
        Ok(max + 1)
    }

    /// Records a new version (creating the image on its first version). Refuses a version
    /// number that exists (two imports racing) and a parent that does not.
    pub fn image_version_insert(
        &self,
        new: &NewImageVersion,
    ) -> Result<ImageVersion, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin image version insert")?;
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO images (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![new.image.as_str(), now],
        )
        .map_err(query_err("insert an image"))?;
        let image_id: i64 = tx
            .query_row(
                "SELECT id FROM images WHERE name = ?1",
                [new.image.as_str()],
                |r| r.get(0),
            )
            .map_err(query_err("read an image"))?;
        let parent_id: Option<i64> = match new.parent {
            None => None,
            Some(p) => Some(
                tx.query_row(
                    "SELECT id FROM image_versions WHERE image_id = ?1 AND version = ?2",
                    params![image_id, p],
                    |r| r.get(0),
                )
                .optional()
                .map_err(query_err("read a parent version"))?
                .ok_or_else(|| InventoryError::NotFound {
                    kind: "image version",
                    name: format!("{}:v{p}", new.image),
                })?,
            ),
        };
        let json = |v: Result<String, serde_json::Error>| {
            v.map_err(|e| InventoryError::Corrupt {
                what: format!("{}:v{} to store", new.image, new.version),
                source: Some(Box::new(e)),
            })
        };
        let (boot, seal) = (
            json(serde_json::to_string(&new.boot))?,
            json(serde_json::to_string(&new.seal))?,
        );
        let inserted = tx.execute(
            "INSERT INTO image_versions (image_id, version, file, sha256, format, virtual_size,
                 actual_size, parent_id, origin, boot_json, seal_json, notes, created_at)
             VALUES (?1, ?2, ?3, ?4, 'qcow2', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                image_id,
                new.version,
                new.file,
                new.sha256,
                i64::try_from(new.virtual_size).unwrap_or(i64::MAX),
                i64::try_from(new.actual_size).unwrap_or(i64::MAX),
                parent_id,
                new.origin,
                boot,
                seal,
                new.notes,
                now
            ],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(InventoryError::Duplicate {
                    kind: "image version",
                    name: format!("{}:v{}", new.image, new.version),
                })
            }
            other => other.map_err(query_err("insert an image version"))?,
        };
        let v = Self::image_version_get_in(&tx, &new.image, new.version)?;
        tx.commit().map_err(query_err("commit image version"))?;
        Ok(v)
    }

    fn image_version_get_in(
        conn: &rusqlite::Connection,
        image: &ImageName,
        version: u32,
    ) -> Result<ImageVersion, InventoryError> {
        let mut v = conn
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM image_versions v JOIN images i ON i.id = v.image_id
                     WHERE i.name = ?1 AND v.version = ?2"
                ),
                params![image.as_str(), version],
                version_from_row,
            )
            .optional()
            .map_err(query_err("read an image version"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "image version",
                name: format!("{image}:v{version}"),
            })??;
        v.copies = Self::image_copies_of(conn, image, version)?;
        Ok(v)
    }

    fn image_copies_of(
        conn: &rusqlite::Connection,
        image: &ImageName,
        version: u32,
    ) -> Result<Vec<ImageVersionCopy>, InventoryError> {
        let mut stmt = conn
            .prepare(
                "SELECT h.name, c.volume, c.path, c.verified_at FROM image_copies c
                 JOIN hosts h ON h.id = c.host_id
                 JOIN image_versions v ON v.id = c.version_id JOIN images i ON i.id = v.image_id
                 WHERE i.name = ?1 AND v.version = ?2 ORDER BY h.name",
            )
            .map_err(query_err("read image copies"))?;
        let rows = stmt
            .query_map(params![image.as_str(), version], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(query_err("read image copies"))?;
        let mut out = Vec::new();
        for row in rows {
            let (host, volume, path, verified_at) = row.map_err(query_err("read image copies"))?;
            out.push(ImageVersionCopy {
                host: HostName::parse(&host).map_err(|e| InventoryError::Corrupt {
                    what: format!("copy of {image}:v{version}"),
                    source: Some(Box::new(e)),
                })?,
                volume,
                path,
                verified_at,
            });
        }
        Ok(out)
    }

    pub fn image_version_get(
        &self,
        image: &ImageName,
        version: u32,
    ) -> Result<ImageVersion, InventoryError> {
        self.count_read("image_version_get");
        Self::image_version_get_in(&self.conn(), image, version)
    }

    /// The newest version of an image.
    pub fn image_version_latest(&self, image: &ImageName) -> Result<ImageVersion, InventoryError> {
        self.count_read("image_version_latest");
        let next = self.image_next_version(image)?;
        if next == 1 {
            return Err(InventoryError::NotFound {
                kind: "image",
                name: image.to_string(),
            });
        }
        Self::image_version_get_in(&self.conn(), image, next - 1)
    }

    /// Every version of every image, by image name then version.
    pub fn image_version_list(&self) -> Result<Vec<ImageVersion>, InventoryError> {
        self.count_read("image_version_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM image_versions v JOIN images i ON i.id = v.image_id
                 ORDER BY i.name, v.version"
            ))
            .map_err(query_err("list image versions"))?;
        let rows = stmt
            .query_map([], version_from_row)
            .map_err(query_err("list image versions"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(query_err("list image versions"))??);
        }
        drop(stmt);
        // One query for all copies, not one per version.
        let mut stmt = conn
            .prepare(
                "SELECT i.name, v.version, h.name, c.volume, c.path, c.verified_at
                 FROM image_copies c JOIN hosts h ON h.id = c.host_id
                 JOIN image_versions v ON v.id = c.version_id JOIN images i ON i.id = v.image_id
                 ORDER BY h.name",
            )
            .map_err(query_err("read image copies"))?;
        let copies = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(query_err("read image copies"))?;
        for c in copies {
            let (image, version, host, volume, path, verified_at) =
                c.map_err(query_err("read image copies"))?;
            let host = HostName::parse(&host).map_err(|e| InventoryError::Corrupt {
                what: format!("table image_copies, copy of {image}:v{version}, column host"),
                source: Some(Box::new(e)),
            })?;
            if let Some(v) = out
                .iter_mut()
                .find(|v| v.image.as_str() == image && v.version == version)
            {
                v.copies.push(ImageVersionCopy {
                    host,
                    volume,
                    path,
                    verified_at,
                });
            }
        }
        Ok(out)
    }

    /// Records that a verified copy of a version is on a host.
    pub fn image_copy_record(
        &self,
        image: &ImageName,
        version: u32,
        host: &HostName,
        volume: &str,
        path: &str,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "INSERT INTO image_copies (version_id, host_id, volume, path, verified_at)
                 SELECT v.id, h.id, ?4, ?5, ?6 FROM image_versions v
                 JOIN images i ON i.id = v.image_id, hosts h
                 WHERE i.name = ?1 AND v.version = ?2 AND h.name = ?3
                 ON CONFLICT (version_id, host_id) DO UPDATE
                 SET volume = excluded.volume, path = excluded.path, verified_at = excluded.verified_at",
                params![image.as_str(), version, host.as_str(), volume, path, now_rfc3339()],
            )
            .map_err(query_err("record an image copy"))?;
        Ok(())
    }

    /// Forgets that a version is on a host (its volume is gone).
    pub fn image_copy_forget(
        &self,
        image: &ImageName,
        version: u32,
        host: &HostName,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM image_copies WHERE host_id = (SELECT id FROM hosts WHERE name = ?3)
                 AND version_id = (SELECT v.id FROM image_versions v JOIN images i
                                   ON i.id = v.image_id WHERE i.name = ?1 AND v.version = ?2)",
                params![image.as_str(), version, host.as_str()],
            )
            .map_err(query_err("forget an image copy"))?;
        Ok(())
    }

    /// Row ids of a version and of its image.
    fn image_version_ids(
        conn: &rusqlite::Connection,
        image: &ImageName,
        version: u32,
    ) -> Result<(i64, i64), InventoryError> {
        conn.query_row(
            "SELECT v.id, v.image_id FROM image_versions v JOIN images i ON i.id = v.image_id
             WHERE i.name = ?1 AND v.version = ?2",
            params![image.as_str(), version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(query_err("read an image version"))?
        .ok_or_else(|| InventoryError::NotFound {
            kind: "image version",
            name: format!("{image}:v{version}"),
        })
    }

    /// What references a version, apart from its copies on hosts (a later version made from it,
    /// a unit version).
    pub fn image_version_users(
        &self,
        image: &ImageName,
        version: u32,
    ) -> Result<Vec<Dependent>, InventoryError> {
        self.count_read("image_version_users");
        let conn = self.conn();
        let (id, _) = Self::image_version_ids(&conn, image, version)?;
        Ok(Self::dependents(&conn, "image_versions", id)?
            .into_iter()
            .filter(|d| d.table != "image_copies")
            .collect())
    }

    /// Deletes a version's record. Refused while anything but host copies references it (a
    /// later version made from it, a unit version); the caller removes host copies first.
    pub fn image_version_delete(
        &self,
        image: &ImageName,
        version: u32,
    ) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin image version removal")?;
        let (id, image_id) = Self::image_version_ids(&tx, image, version)?;
        let users: Vec<Dependent> = Self::dependents(&tx, "image_versions", id)?;
        if !users.is_empty() {
            return Err(InventoryError::InUse {
                kind: "image version",
                name: format!("{image}:v{version}"),
                users,
            });
        }
        tx.execute("DELETE FROM image_versions WHERE id = ?1", [id])
            .map_err(query_err("delete an image version"))?;
        tx.execute(
            "DELETE FROM images WHERE id = ?1 AND NOT EXISTS
                 (SELECT 1 FROM image_versions WHERE image_id = ?1)",
            [image_id],
        )
        .map_err(query_err("delete an empty image"))?;
        tx.commit()
            .map_err(query_err("commit image version removal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BootMode, Firmware};

    fn new_version(image: &str, version: u32, parent: Option<u32>) -> NewImageVersion {
        NewImageVersion {
            image: ImageName::parse(image).unwrap(),
            version,
            file: format!("{image}/v{version}.qcow2"),
            sha256: "a".repeat(64),
            virtual_size: 1 << 30,
            actual_size: 1 << 20,
            parent,
            origin: "test".into(),
            boot: BootMode::Disk {
                firmware: Firmware::Bios,
            },
            seal: vec![],
            notes: String::new(),
        }
    }

    #[test]
    fn versions_number_up_and_keep_their_lineage() {
        let inv = Inventory::open_in_memory().unwrap();
        let web = ImageName::parse("web").unwrap();
        assert_eq!(inv.image_next_version(&web).unwrap(), 1);
        inv.image_version_insert(&new_version("web", 1, None))
            .unwrap();
        let v2 = inv
            .image_version_insert(&new_version("web", 2, Some(1)))
            .unwrap();
        assert_eq!(v2.parent, Some(1));
        assert_eq!(inv.image_next_version(&web).unwrap(), 3);
        assert_eq!(inv.image_version_latest(&web).unwrap().version, 2);
        let dup = inv.image_version_insert(&new_version("web", 2, None));
        assert!(
            matches!(dup, Err(InventoryError::Duplicate { .. })),
            "{dup:?}"
        );
        let orphan = inv.image_version_insert(&new_version("web", 3, Some(9)));
        assert!(
            matches!(orphan, Err(InventoryError::NotFound { .. })),
            "{orphan:?}"
        );
        assert_eq!(inv.image_version_list().unwrap().len(), 2);
    }

    #[test]
    fn a_version_cannot_be_changed_in_place() {
        let inv = Inventory::open_in_memory().unwrap();
        inv.image_version_insert(&new_version("web", 1, None))
            .unwrap();
        let err = inv
            .conn()
            .execute("UPDATE image_versions SET sha256 = ?1", [&"b".repeat(64)])
            .unwrap_err();
        assert!(err.to_string().contains("immutable"), "{err}");
        inv.conn()
            .execute("UPDATE image_versions SET notes = 'still editable'", [])
            .unwrap();
    }

    #[test]
    fn a_version_others_are_made_from_cannot_be_deleted() {
        let inv = Inventory::open_in_memory().unwrap();
        let web = ImageName::parse("web").unwrap();
        inv.image_version_insert(&new_version("web", 1, None))
            .unwrap();
        inv.image_version_insert(&new_version("web", 2, Some(1)))
            .unwrap();
        let users = inv.image_version_users(&web, 1).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].table, "image_versions");
        let err = inv.image_version_delete(&web, 1).unwrap_err();
        assert!(matches!(err, InventoryError::InUse { .. }), "{err}");
        inv.image_version_delete(&web, 2).unwrap();
        inv.image_version_delete(&web, 1).unwrap();
        assert!(inv.image_version_list().unwrap().is_empty());
        assert_eq!(
            inv.image_next_version(&web).unwrap(),
            1,
            "the empty image is gone"
        );
    }

    #[test]
    fn copies_are_recorded_per_host_and_pin_the_host() {
        let inv = Inventory::open_in_memory().unwrap();
        let web = ImageName::parse("web").unwrap();
        inv.image_version_insert(&new_version("web", 1, None))
            .unwrap();
        let host = inv
            .host_insert(&crate::inventory::NewHost {
                name: HostName::parse("h1").unwrap(),
                uri: crate::model::LibvirtUri::parse("test:///x.xml").unwrap(),
                pool: crate::model::PoolName::parse("default").unwrap(),
                bridge: crate::model::BridgeName::parse("br0").unwrap(),
                status: crate::model::HostStatus::Ok,
                status_detail: String::new(),
                facts: crate::inventory::hosts::tests::sample_facts(),
            })
            .unwrap();
        inv.image_copy_record(&web, 1, &host.name, "vol", "/pool/vol")
            .unwrap();
        let v = inv.image_version_get(&web, 1).unwrap();
        assert_eq!(v.copies.len(), 1);
        assert_eq!(v.copies[0].host, host.name);
        assert_eq!(inv.image_version_list().unwrap()[0].copies, v.copies);
        assert!(
            inv.image_version_users(&web, 1).unwrap().is_empty(),
            "copies are not users"
        );
        let err = inv.host_delete(&host.name).unwrap_err();
        assert!(err.to_string().contains("1 copies on hosts"), "{err}");
        inv.image_copy_forget(&web, 1, &host.name).unwrap();
        inv.host_delete(&host.name).unwrap();
    }
}
