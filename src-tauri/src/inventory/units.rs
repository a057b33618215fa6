//! Tables `units` and `unit_versions`. Their first-wave migration (`CREATE`, applied as one)
//! also made `lbs`, `servers` and `unit_locks` and the hosts' network columns, whose code lives
//! in their own modules. Foreign keys pin what units use: a host with servers, an image or
//! definition version of a unit version, a load balancer a unit is bound to cannot be removed.

use super::servers::{NewServer, Server};
use super::{conflict, now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{RolloutPolicy, ServerSize};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "ALTER TABLE hosts ADD COLUMN network TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN gateway TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN domain_type TEXT NOT NULL DEFAULT '';
    ALTER TABLE operations ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE operations ADD COLUMN pid_start TEXT NOT NULL DEFAULT '';
    ALTER TABLE operations ADD COLUMN args_json TEXT NOT NULL DEFAULT '';
    CREATE TABLE lbs (
        id        INTEGER PRIMARY KEY,
        name      TEXT NOT NULL UNIQUE,
        kind      TEXT NOT NULL CHECK (kind IN ('haproxy', 'caddy')),
        endpoint  TEXT NOT NULL,
        route_id  TEXT NOT NULL DEFAULT '',
        added_at  TEXT NOT NULL
    ) STRICT;
    CREATE TABLE units (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        lb_id           INTEGER REFERENCES lbs(id) ON DELETE RESTRICT,
        lb_pool         TEXT NOT NULL DEFAULT '',
        name_pattern    TEXT NOT NULL DEFAULT '',
        addresses       TEXT NOT NULL DEFAULT '',
        policy_json     TEXT NOT NULL,
        current_version INTEGER NOT NULL,
        created_at      TEXT NOT NULL
    ) STRICT;
    CREATE TABLE unit_versions (
        id                    INTEGER PRIMARY KEY,
        unit_id               INTEGER NOT NULL REFERENCES units(id) ON DELETE CASCADE,
        version               INTEGER NOT NULL CHECK (version > 0),
        image_version_id      INTEGER NOT NULL REFERENCES image_versions(id) ON DELETE RESTRICT,
        definition_version_id INTEGER NOT NULL REFERENCES definition_versions(id) ON DELETE RESTRICT,
        cpus                  INTEGER NOT NULL,
        memory_mib            INTEGER NOT NULL,
        disk_gib              INTEGER NOT NULL,
        created_at            TEXT NOT NULL,
        UNIQUE (unit_id, version)
    ) STRICT;
    CREATE TABLE servers (
        id         INTEGER PRIMARY KEY,
        unit_id    INTEGER NOT NULL REFERENCES units(id) ON DELETE CASCADE,
        name       TEXT NOT NULL UNIQUE,
        host_id    INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        address    TEXT NOT NULL UNIQUE,
        mac        TEXT NOT NULL UNIQUE,
        state      TEXT NOT NULL CHECK (state IN ('planned', 'running', 'stopped')),
        version    INTEGER,
        lb_state   TEXT NOT NULL DEFAULT 'none' CHECK (lb_state IN ('none', 'maint', 'drain', 'ready')),
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX servers_unit ON servers(unit_id);
    CREATE INDEX servers_host ON servers(host_id);
    CREATE TABLE unit_locks (
        unit_id      INTEGER PRIMARY KEY REFERENCES units(id) ON DELETE CASCADE,
        operation_id INTEGER NOT NULL REFERENCES operations(id)
    ) STRICT;";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitVersion {
    pub version: u32,
    pub image: String,
    pub image_version: u32,
    pub definition: String,
    pub definition_version: u32,
    pub size: ServerSize,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Unit {
    pub name: String,
    pub lb: Option<String>,
    pub lb_pool: String,
    /// Pattern for new server names (`shop-{n}`); empty when servers were named one by one.
    pub name_pattern: String,
    /// Addresses new servers take from (`10.77.0.11-10.77.0.40`).
    pub addresses: String,
    pub policy: RolloutPolicy,
    pub current_version: u32,
    pub versions: Vec<UnitVersion>,
    pub servers: Vec<Server>,
    pub created_at: String,
}

impl Unit {
    pub fn current(&self) -> Option<&UnitVersion> {
        self.versions
            .iter()
            .find(|v| v.version == self.current_version)
    }

    /// The version recorded by `unit update` that not every server runs yet (the newest one
    /// after the current), if any.
    pub fn pending(&self) -> Option<&UnitVersion> {
        self.versions
            .iter()
            .filter(|v| v.version > self.current_version)
            .max_by_key(|v| v.version)
    }

    pub fn version(&self, version: u32) -> Option<&UnitVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// The content of a new unit version.
#[derive(Debug, Clone)]
pub struct NewUnitVersion {
    pub image: (String, u32),
    pub definition: (String, u32),
    pub size: ServerSize,
}

/// A unit to create with its first version and servers.
#[derive(Debug, Clone)]
pub struct NewUnit {
    pub name: String,
    pub lb: Option<(String, String)>,
    pub name_pattern: String,
    pub addresses: String,
    pub policy: RolloutPolicy,
    pub image: (String, u32),
    pub definition: (String, u32),
    pub size: ServerSize,
    pub servers: Vec<NewServer>,
}

impl Inventory {
    /// Creates a unit, its version 1 and its servers, all or nothing.
    pub fn unit_insert(&self, new: &NewUnit) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin unit creation")?;
        let lb_id: Option<i64> = match &new.lb {
            Some((lb, _)) => Some(
                tx.query_row("SELECT id FROM lbs WHERE name = ?1", [lb], |r| r.get(0))
                    .optional()
                    .map_err(query_err("find a load balancer"))?
                    .ok_or_else(|| InventoryError::NotFound {
                        kind: "load balancer",
                        name: lb.clone(),
                    })?,
            ),
            None => None,
        };
        let policy = serde_json::to_string(&new.policy).map_err(|e| InventoryError::Corrupt {
            what: "unit policy".into(),
            source: Some(Box::new(e)),
        })?;
        tx.execute(
            "INSERT INTO units (name, lb_id, lb_pool, name_pattern, addresses, policy_json, current_version, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
            params![
                new.name,
                lb_id,
                new.lb.as_ref().map(|l| l.1.as_str()).unwrap_or(""),
                new.name_pattern,
                new.addresses,
                policy,
                now_rfc3339()
            ],
        )
        .map_err(|e| conflict(e, "unit", new.name.clone()))?;
        let unit_id = tx.last_insert_rowid();
        let first = NewUnitVersion {
            image: new.image.clone(),
            definition: new.definition.clone(),
            size: new.size,
        };
        Self::unit_version_insert_in(&tx, unit_id, 1, &first)?;
        for s in &new.servers {
            Self::server_insert_in(&tx, unit_id, s)?;
        }
        tx.commit().map_err(query_err("create a unit"))
    }

    fn unit_version_insert_in(
        tx: &rusqlite::Transaction<'_>,
        unit_id: i64,
        version: u32,
        new: &NewUnitVersion,
    ) -> Result<(), InventoryError> {
        let image_id: i64 = tx
            .query_row(
                "SELECT v.id FROM image_versions v JOIN images i ON i.id = v.image_id
                 WHERE i.name = ?1 AND v.version = ?2",
                params![new.image.0, new.image.1],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("find an image version"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "image version",
                name: format!("{}:v{}", new.image.0, new.image.1),
            })?;
        let def_id: i64 = tx
            .query_row(
                "SELECT v.id FROM definition_versions v JOIN definitions d ON d.id = v.definition_id
                 WHERE d.name = ?1 AND v.version = ?2",
                params![new.definition.0, new.definition.1],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("find a definition version"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "definition version",
                name: format!("{}:v{}", new.definition.0, new.definition.1),
            })?;
        tx.execute(
            "INSERT INTO unit_versions (unit_id, version, image_version_id, definition_version_id, cpus, memory_mib, disk_gib, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                unit_id,
                version,
                image_id,
                def_id,
                new.size.cpus,
                new.size.memory_mib,
                new.size.disk_gib,
                now_rfc3339()
            ],
        )
        .map_err(query_err("record a unit version"))?;
        Ok(())
    }

    /// Records the next version of a unit as pending (the unit keeps running its current
    /// one). A pending version no server runs yet is replaced; one a rollout has begun to put
    /// on servers is refused until that rollout finishes or is rolled back.
    pub fn unit_version_add(
        &self,
        unit: &str,
        new: &NewUnitVersion,
    ) -> Result<u32, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin a unit update")?;
        let (unit_id, current): (i64, u32) = tx
            .query_row(
                "SELECT id, current_version FROM units WHERE name = ?1",
                [unit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(query_err("find a unit"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit",
                name: unit.to_owned(),
            })?;
        let in_use: Option<u32> = tx
            .query_row(
                "SELECT MAX(version) FROM servers WHERE unit_id = ?1 AND version > ?2",
                params![unit_id, current],
                |r| r.get(0),
            )
            .map_err(query_err("find a rollout in progress"))?;
        if let Some(v) = in_use {
            return Err(InventoryError::RolloutInProgress {
                unit: unit.to_owned(),
                version: v,
            });
        }
        // A rollout running (or interrupted) before any server passed its gate: its version
        // stays as it is until it ends, is resumed or unwound.
        let rolling: Option<u32> = tx
            .query_row(
                "SELECT MAX(v.version) FROM unit_locks l JOIN operations o ON o.id = l.operation_id
                 JOIN unit_versions v ON v.unit_id = l.unit_id
                 WHERE l.unit_id = ?1 AND o.state = 'running' AND o.kind IN ('rollout', 'rollback')",
                [unit_id],
                |r| r.get(0),
            )
            .map_err(query_err("find a rollout in progress"))?;
        if let Some(v) = rolling {
            return Err(InventoryError::RolloutInProgress {
                unit: unit.to_owned(),
                version: v,
            });
        }
        // Numbers are never reused: a replaced pending version's number stays taken (hosts
        // may hold its payload under that number).
        let next: u32 = tx
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(version) FROM unit_versions WHERE unit_id = ?1), 0),
                            (SELECT version_seq FROM units WHERE id = ?1)) + 1",
                [unit_id],
                |r| r.get(0),
            )
            .map_err(query_err("number a unit version"))?;
        tx.execute(
            "UPDATE units SET version_seq = ?2 WHERE id = ?1",
            params![unit_id, next],
        )
        .map_err(query_err("number a unit version"))?;
        tx.execute(
            "DELETE FROM unit_versions WHERE unit_id = ?1 AND version > ?2",
            params![unit_id, current],
        )
        .map_err(query_err("replace a pending unit version"))?;
        Self::unit_version_insert_in(&tx, unit_id, next, new)?;
        tx.commit().map_err(query_err("record a unit version"))?;
        Ok(next)
    }

    /// Replaces the unit's policy.
    pub fn unit_set_policy(
        &self,
        unit: &str,
        policy: &crate::model::RolloutPolicy,
    ) -> Result<(), InventoryError> {
        let json = serde_json::to_string(policy).map_err(|e| InventoryError::Corrupt {
            what: "unit policy".into(),
            source: Some(Box::new(e)),
        })?;
        let n = self
            .conn()
            .execute(
                "UPDATE units SET policy_json = ?2 WHERE name = ?1",
                params![unit, json],
            )
            .map_err(query_err("set a unit's policy"))?;
        if n == 0 {
            return Err(InventoryError::NotFound {
                kind: "unit",
                name: unit.to_owned(),
            });
        }
        Ok(())
    }

    /// Forgets the versions after the current one that no server runs (after a rollback).
    pub fn unit_versions_drop_pending(&self, unit: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM unit_versions
                 WHERE unit_id = (SELECT id FROM units WHERE name = ?1)
                   AND version > (SELECT current_version FROM units WHERE name = ?1)
                   AND version NOT IN (SELECT version FROM servers
                        WHERE unit_id = (SELECT id FROM units WHERE name = ?1) AND version IS NOT NULL)",
                [unit],
            )
            .map_err(query_err("forget a rolled-back unit version"))?;
        Ok(())
    }

    /// Records the layer the load balancer's health check of the unit's servers was last
    /// seen to run at (`http`, `tcp`, `tls`).
    pub fn unit_set_lb_checks(&self, unit: &str, layer: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE units SET lb_checks = ?2 WHERE name = ?1",
                params![unit, layer],
            )
            .map_err(query_err("record the load balancer's check"))?;
        Ok(())
    }

    /// The layer last recorded by `unit_set_lb_checks`; empty when not seen yet.
    pub fn unit_lb_checks(&self, unit: &str) -> Result<String, InventoryError> {
        self.count_read("unit_lb_checks");
        self.conn()
            .query_row("SELECT lb_checks FROM units WHERE name = ?1", [unit], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(query_err("read the load balancer's check"))
    }

    /// Makes `version` the unit's current version (every server runs it).
    pub fn unit_set_current(&self, unit: &str, version: u32) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE units SET current_version = ?2 WHERE name = ?1",
                params![unit, version],
            )
            .map_err(query_err("set a unit's version"))?;
        Ok(())
    }

    pub(super) fn unit_id_in(
        conn: &rusqlite::Connection,
        unit: &str,
    ) -> Result<i64, InventoryError> {
        conn.query_row("SELECT id FROM units WHERE name = ?1", [unit], |r| r.get(0))
            .optional()
            .map_err(query_err("find a unit"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit",
                name: unit.to_owned(),
            })
    }

    /// Every unit with its versions and servers, in three queries.
    pub fn unit_list(&self) -> Result<Vec<Unit>, InventoryError> {
        self.count_read("unit_list");
        self.units_where("1 = 1", params![])
    }

    /// One unit with its versions and servers, read by name.
    pub fn unit_get(&self, name: &str) -> Result<Unit, InventoryError> {
        self.count_read("unit_get");
        self.units_where("u.name = ?1", params![name])?
            .pop()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit",
                name: name.to_owned(),
            })
    }

    /// The units that pass `filter` (on `units u`) with their versions and servers: three
    /// queries in one read transaction, so the three agree.
    fn units_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Unit>, InventoryError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(query_err("list units"))?;
        let servers = Self::servers_in(&tx, filter, args)?;
        let mut stmt = tx
            .prepare(&format!(
                "SELECT u.name, l.name, u.lb_pool, u.name_pattern, u.addresses, u.policy_json,
                        u.current_version, u.created_at
                 FROM units u LEFT JOIN lbs l ON l.id = u.lb_id WHERE {filter} ORDER BY u.name"
            ))
            .map_err(query_err("list units"))?;
        let rows = stmt
            .query_map(args, |r| {
                let name: String = r.get(0)?;
                let policy: String = r.get(5)?;
                let policy = match serde_json::from_str(&policy) {
                    Ok(p) => p,
                    Err(e) => {
                        return Ok(Err(InventoryError::Corrupt {
                            what: format!("table units, row '{name}', column policy_json"),
                            source: Some(Box::new(e)),
                        }))
                    }
                };
                Ok(Ok(Unit {
                    name,
                    lb: r.get(1)?,
                    lb_pool: r.get(2)?,
                    name_pattern: r.get(3)?,
                    addresses: r.get(4)?,
                    policy,
                    current_version: r.get(6)?,
                    versions: Vec::new(),
                    servers: Vec::new(),
                    created_at: r.get(7)?,
                }))
            })
            .map_err(query_err("list units"))?;
        let mut units = Vec::new();
        for row in rows {
            units.push(row.map_err(query_err("list units"))??);
        }
        drop(stmt);
        let mut stmt = tx
            .prepare(&format!(
                "SELECT u.name, uv.version, i.name, iv.version, d.name, dv.version, uv.cpus,
                        uv.memory_mib, uv.disk_gib, uv.created_at
                 FROM unit_versions uv JOIN units u ON u.id = uv.unit_id
                 JOIN image_versions iv ON iv.id = uv.image_version_id JOIN images i ON i.id = iv.image_id
                 JOIN definition_versions dv ON dv.id = uv.definition_version_id
                 JOIN definitions d ON d.id = dv.definition_id
                 WHERE {filter}
                 ORDER BY u.name, uv.version"
            ))
            .map_err(query_err("list unit versions"))?;
        let versions = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    UnitVersion {
                        version: r.get(1)?,
                        image: r.get(2)?,
                        image_version: r.get(3)?,
                        definition: r.get(4)?,
                        definition_version: r.get(5)?,
                        size: ServerSize {
                            cpus: r.get(6)?,
                            memory_mib: r.get(7)?,
                            disk_gib: r.get(8)?,
                        },
                        created_at: r.get(9)?,
                    },
                ))
            })
            .map_err(query_err("list unit versions"))?;
        let index: std::collections::HashMap<String, usize> = units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        for v in versions {
            let (unit, v) = v.map_err(query_err("list unit versions"))?;
            if let Some(&i) = index.get(&unit) {
                units[i].versions.push(v);
            }
        }
        for s in servers {
            if let Some(&i) = index.get(&s.unit) {
                units[i].servers.push(s);
            }
        }
        Ok(units)
    }

    /// Removes a unit's records (versions and servers go with it).
    pub fn unit_delete(&self, name: &str) -> Result<(), InventoryError> {
        let n = self
            .conn()
            .execute("DELETE FROM units WHERE name = ?1", [name])
            .map_err(query_err("remove a unit"))?;
        if n == 0 {
            return Err(InventoryError::NotFound {
                kind: "unit",
                name: name.to_owned(),
            });
        }
        Ok(())
    }
}

/// Migration: the layer the load balancer's health check of the unit's servers was last seen
/// to run at (a TCP check proves nothing about readiness: the rollout plan warns).
pub(super) const LB_CHECKS: &str =
    "ALTER TABLE units ADD COLUMN lb_checks TEXT NOT NULL DEFAULT '';";

/// Migration: the highest version number a unit ever gave out, so that a dropped pending or
/// rolled-back version's number is never given again.
pub(super) const VERSION_SEQ: &str =
    "ALTER TABLE units ADD COLUMN version_seq INTEGER NOT NULL DEFAULT 0;";

#[cfg(test)]
mod tests {
    use crate::inventory::{first_wave_inventory, InventoryError};

    /// `unit_get` reads one unit by key: the same unit, versions and servers as the list has.
    #[test]
    fn a_unit_read_by_name_is_the_one_in_the_list() {
        let (_dir, inv) = first_wave_inventory();
        inv.execute_batch_for_test(
            "INSERT INTO units (name, policy_json, current_version, created_at)
             VALUES ('empty', '{}', 1, '2026-01-01T00:00:00Z')",
        );
        let list = inv.unit_list().unwrap();
        assert_eq!(list.len(), 2);
        for u in &list {
            assert_eq!(&inv.unit_get(&u.name).unwrap(), u);
        }
        let shop = inv.unit_get("shop").unwrap();
        assert_eq!((shop.versions.len(), shop.servers.len()), (1, 2));
        assert!(matches!(
            inv.unit_get("nope"),
            Err(InventoryError::NotFound { kind: "unit", .. })
        ));
    }

    /// A policy that does not read is an error naming the table, row and column, not the
    /// default policy.
    #[test]
    fn a_unit_whose_policy_does_not_read_is_an_error() {
        let (_dir, inv) = first_wave_inventory();
        inv.execute_batch_for_test("UPDATE units SET policy_json = 'not json' WHERE name = 'shop'");
        for err in [
            inv.unit_get("shop").unwrap_err(),
            inv.unit_list().unwrap_err(),
        ] {
            assert!(matches!(err, InventoryError::Corrupt { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("table units, row 'shop', column policy_json"),
                "{err}"
            );
        }
    }

    /// A server state, load-balancer kind or BMC password place this build does not know (a
    /// row written with its checks off) is an error naming where it is, not a default.
    #[test]
    fn values_this_build_does_not_know_are_errors() {
        let (_dir, inv) = first_wave_inventory();
        inv.execute_batch_for_test(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE servers SET state = 'sleeping' WHERE name = 'shop-2';",
        );
        let err = inv.unit_get("shop").unwrap_err();
        assert!(
            err.to_string()
                .contains("table servers, row shop-2, column state (\"sleeping\")"),
            "{err}"
        );
        assert!(inv.server_list().is_err());
        inv.execute_batch_for_test(
            "UPDATE servers SET state = 'running';
             INSERT INTO lbs (name, kind, endpoint, added_at) VALUES ('edge', 'nginx', 'x', '');",
        );
        let err = inv.lb_list().unwrap_err();
        assert!(
            err.to_string()
                .contains("table lbs, row edge, column kind (\"nginx\")"),
            "{err}"
        );
        assert!(inv.lb_get("edge").is_err());
        inv.execute_batch_for_test(
            "DELETE FROM lbs;
             UPDATE hosts SET bmc_url = 'https://10.0.0.9', bmc_secret = '' WHERE name = 'h1';",
        );
        let err = inv.host_list().unwrap_err();
        assert!(
            err.to_string()
                .contains("table hosts, row h1, column bmc_secret"),
            "{err}"
        );
    }
}
