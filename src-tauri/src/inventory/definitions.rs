//! Tables `definitions` and `definition_versions`: app-server definition directories and their
//! immutable, content-addressed versions (the files live in `<data dir>/definitions/`).

use super::{corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE definitions (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE definition_versions (
        id            INTEGER PRIMARY KEY,
        definition_id INTEGER NOT NULL REFERENCES definitions(id) ON DELETE RESTRICT,
        version       INTEGER NOT NULL CHECK (version > 0),
        hash          TEXT NOT NULL CHECK (length(hash) = 64),
        change        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        UNIQUE (definition_id, version)
    ) STRICT;
    CREATE TRIGGER definition_versions_immutable BEFORE UPDATE ON definition_versions
        BEGIN SELECT RAISE(ABORT, 'definition versions are immutable'); END;";

/// A recorded version of a definition directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct DefinitionVersion {
    pub name: String,
    pub version: u32,
    /// sha256 over the definition file and every package (name and content).
    pub hash: String,
    /// What changed from the previous version, in words.
    pub change: String,
    pub created_at: String,
}

fn version_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DefinitionVersion> {
    Ok(DefinitionVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        hash: r.get(2)?,
        change: r.get(3)?,
        created_at: r.get(4)?,
    })
}

impl Inventory {
    /// Records the next version of `name` (creating the definition on its first version), but
    /// only if the newest version is still `after` (0: there is none yet). The check and the
    /// insert are one IMMEDIATE transaction, so of two processes that started from the same
    /// version only the first records; the second gets [`InventoryError::Stale`] and no lost
    /// update.
    pub fn definition_version_insert(
        &self,
        name: &str,
        hash: &str,
        change: &str,
        after: u32,
    ) -> Result<DefinitionVersion, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin definition version insert")?;
        let now = now_rfc3339();
        tx.execute(
            "INSERT INTO definitions (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            params![name, now],
        )
        .map_err(query_err("insert a definition"))?;
        let (id, next): (i64, i64) = tx
            .query_row(
                "SELECT d.id, coalesce(max(v.version), 0) + 1 FROM definitions d
                 LEFT JOIN definition_versions v ON v.definition_id = d.id WHERE d.name = ?1 GROUP BY d.id",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(query_err("read a definition"))?;
        let version = |v: i64| {
            u32::try_from(v)
                .map_err(|_| corrupt_value("definition_versions", name, "version", &v.to_string()))
        };
        let newest = version(next - 1)?;
        if newest != after {
            return Err(InventoryError::Stale {
                kind: "definition",
                name: name.to_owned(),
                expected: after,
                newest,
            });
        }
        let recorded = version(next)?;
        tx.execute(
            "INSERT INTO definition_versions (definition_id, version, hash, change, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, next, hash, change, now],
        )
        .map_err(query_err("insert a definition version"))?;
        tx.commit()
            .map_err(query_err("commit definition version"))?;
        Ok(DefinitionVersion {
            name: name.to_owned(),
            version: recorded,
            hash: hash.to_owned(),
            change: change.to_owned(),
            created_at: now,
        })
    }

    /// Every version of `name`, oldest first. Empty when there is no such definition.
    pub fn definition_history(&self, name: &str) -> Result<Vec<DefinitionVersion>, InventoryError> {
        self.count_read("definition_history");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT d.name, v.version, v.hash, v.change, v.created_at FROM definition_versions v
                 JOIN definitions d ON d.id = v.definition_id WHERE d.name = ?1 ORDER BY v.version",
            )
            .map_err(query_err("read definition versions"))?;
        let rows = stmt
            .query_map([name], version_from_row)
            .map_err(query_err("read definition versions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(query_err("read definition versions"))
    }

    /// The newest version of every definition, by name.
    pub fn definition_list(&self) -> Result<Vec<DefinitionVersion>, InventoryError> {
        self.count_read("definition_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT d.name, v.version, v.hash, v.change, v.created_at FROM definition_versions v
                 JOIN definitions d ON d.id = v.definition_id
                 WHERE v.version = (SELECT max(version) FROM definition_versions WHERE definition_id = d.id)
                 ORDER BY d.name",
            )
            .map_err(query_err("list definitions"))?;
        let rows = stmt
            .query_map([], version_from_row)
            .map_err(query_err("list definitions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(query_err("list definitions"))
    }

    pub fn definition_exists(&self, name: &str) -> Result<bool, InventoryError> {
        Ok(self
            .conn()
            .query_row("SELECT 1 FROM definitions WHERE name = ?1", [name], |_| {
                Ok(())
            })
            .optional()
            .map_err(query_err("read a definition"))?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::inventory::{Inventory, InventoryError};

    #[test]
    fn a_version_is_recorded_only_on_top_of_the_newest() {
        let inv = Inventory::open_in_memory().unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(
            inv.definition_version_insert("web", &a, "one", 0)
                .unwrap()
                .version,
            1
        );
        for (after, newest) in [(0, 1), (2, 1)] {
            match inv.definition_version_insert("web", &b, "late", after) {
                Err(InventoryError::Stale {
                    expected,
                    newest: n,
                    ..
                }) => assert_eq!((expected, n), (after, newest)),
                other => panic!("after v{after}: {other:?}"),
            }
        }
        assert_eq!(
            inv.definition_history("web").unwrap().len(),
            1,
            "nothing recorded"
        );
        assert_eq!(
            inv.definition_version_insert("web", &b, "two", 1)
                .unwrap()
                .version,
            2
        );
        let e = inv
            .definition_version_insert("web", &a, "three", 1)
            .unwrap_err();
        assert!(
            e.to_string().contains(
                "definition 'web' changed meanwhile: the change started from v1, the newest is v2"
            ),
            "{e}"
        );
    }
}
