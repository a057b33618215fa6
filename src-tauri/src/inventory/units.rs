//! Tables `lbs`, `units`, `unit_versions`, `servers` and `unit_locks`; the hosts' network
//! columns. Foreign keys pin what units use: a host with servers, an image or definition version
//! of a unit version, a load balancer a unit is bound to cannot be removed.

use super::{now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{RolloutPolicy, ServerSize, ServerState};
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
/// Migration: files Flotilla put on a host and verified there (a unit version's payload disk and
/// kernel files): a volume of that name without a record is an interrupted upload.
pub(super) const HOST_OBJECTS: &str = "CREATE TABLE host_objects (
        host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT,
        volume  TEXT NOT NULL,
        sha256  TEXT NOT NULL CHECK (length(sha256) = 64),
        PRIMARY KEY (host_id, volume)
    ) STRICT;";

/// A registered load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct LbInstance {
    pub name: String,
    /// `haproxy` or `caddy`.
    pub kind: String,
    /// `unix:/path`, `tcp:host:port` (HAProxy) or the admin URL (Caddy).
    pub endpoint: String,
    /// Caddy: the `@id` of the reverse_proxy handler whose upstreams Flotilla manages.
    pub route_id: String,
    pub added_at: String,
}

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
pub struct Server {
    pub name: String,
    pub unit: String,
    pub host: String,
    pub address: String,
    pub mac: String,
    pub state: ServerState,
    /// The unit version it was deployed with.
    pub version: Option<u32>,
    /// What the load balancer should hold for it: none, maint, drain or ready.
    pub lb_state: String,
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
}

/// A server to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    pub name: String,
    pub host: String,
    pub address: String,
    pub mac: String,
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

fn conflict(e: rusqlite::Error, kind: &'static str, name: String) -> InventoryError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            InventoryError::Duplicate { kind, name }
        }
        source => InventoryError::Query {
            what: "register a server",
            source,
        },
    }
}

impl Inventory {
    pub fn lb_insert(
        &self,
        name: &str,
        kind: &str,
        endpoint: &str,
        route_id: &str,
    ) -> Result<LbInstance, InventoryError> {
        self.conn()
            .execute(
                "INSERT INTO lbs (name, kind, endpoint, route_id, added_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, kind, endpoint, route_id, now_rfc3339()],
            )
            .map_err(|e| conflict(e, "load balancer", name.to_owned()))?;
        self.lb_get(name)
    }

    pub fn lb_list(&self) -> Result<Vec<LbInstance>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, kind, endpoint, route_id, added_at FROM lbs ORDER BY name")
            .map_err(query_err("list load balancers"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LbInstance {
                    name: r.get(0)?,
                    kind: r.get(1)?,
                    endpoint: r.get(2)?,
                    route_id: r.get(3)?,
                    added_at: r.get(4)?,
                })
            })
            .map_err(query_err("list load balancers"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query_err("list load balancers"));
        rows
    }

    pub fn lb_get(&self, name: &str) -> Result<LbInstance, InventoryError> {
        self.lb_list()?
            .into_iter()
            .find(|l| l.name == name)
            .ok_or_else(|| InventoryError::NotFound {
                kind: "load balancer",
                name: name.to_owned(),
            })
    }

    /// Removes a load balancer; refused while a unit is bound to it.
    pub fn lb_delete(&self, name: &str) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin load balancer removal")?;
        let id: i64 = tx
            .query_row("SELECT id FROM lbs WHERE name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(query_err("find a load balancer"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "load balancer",
                name: name.to_owned(),
            })?;
        let users = Self::dependents(&tx, "lbs", id)?;
        if !users.is_empty() {
            return Err(InventoryError::InUse {
                kind: "load balancer",
                name: name.to_owned(),
                users,
            });
        }
        tx.execute("DELETE FROM lbs WHERE id = ?1", [id])
            .map_err(query_err("remove a load balancer"))?;
        tx.commit().map_err(query_err("remove a load balancer"))
    }

    /// Network settings of a host: `(network CIDR, gateway, domain type override)`, each empty
    /// when not set.
    pub fn host_network(&self, host: &str) -> Result<(String, String, String), InventoryError> {
        self.conn()
            .query_row(
                "SELECT network, gateway, domain_type FROM hosts WHERE name = ?1",
                [host],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(query_err("read a host's network"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "host",
                name: host.to_owned(),
            })
    }

    pub fn host_set_network(
        &self,
        host: &str,
        network: &str,
        gateway: &str,
        domain_type: &str,
    ) -> Result<(), InventoryError> {
        let n = self
            .conn()
            .execute(
                "UPDATE hosts SET network = ?2, gateway = ?3, domain_type = ?4 WHERE name = ?1",
                params![host, network, gateway, domain_type],
            )
            .map_err(query_err("set a host's network"))?;
        if n == 0 {
            return Err(InventoryError::NotFound {
                kind: "host",
                name: host.to_owned(),
            });
        }
        Ok(())
    }

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
        Self::unit_version_insert_in(&tx, unit_id, 1, new)?;
        for s in &new.servers {
            Self::server_insert_in(&tx, unit_id, s)?;
        }
        tx.commit().map_err(query_err("create a unit"))
    }

    fn unit_version_insert_in(
        tx: &rusqlite::Transaction<'_>,
        unit_id: i64,
        version: u32,
        new: &NewUnit,
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

    fn server_insert_in(
        tx: &rusqlite::Connection,
        unit_id: i64,
        s: &NewServer,
    ) -> Result<(), InventoryError> {
        let host_id: i64 = tx
            .query_row("SELECT id FROM hosts WHERE name = ?1", [&s.host], |r| {
                r.get(0)
            })
            .optional()
            .map_err(query_err("find a host"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "host",
                name: s.host.clone(),
            })?;
        // Say which value collides, not just that something did.
        for (column, kind, value) in [
            ("name", "server", &s.name),
            ("address", "server address", &s.address),
            ("mac", "server MAC", &s.mac),
        ] {
            let taken: Option<String> = tx
                .query_row(
                    &format!("SELECT name FROM servers WHERE {column} = ?1"),
                    [value],
                    |r| r.get(0),
                )
                .optional()
                .map_err(query_err("check a server"))?;
            if let Some(holder) = taken {
                return Err(InventoryError::Duplicate {
                    kind,
                    name: if holder == *value {
                        value.clone()
                    } else {
                        format!("{value} (server {holder})")
                    },
                });
            }
        }
        tx.execute(
            "INSERT INTO servers (unit_id, name, host_id, address, mac, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'planned', ?6)",
            params![unit_id, s.name, host_id, s.address, s.mac, now_rfc3339()],
        )
        .map_err(|e| conflict(e, "server", s.name.clone()))?;
        Ok(())
    }

    /// Registers more servers of a unit, all or nothing.
    pub fn server_insert(&self, unit: &str, servers: &[NewServer]) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin server registration")?;
        let unit_id = Self::unit_id_in(&tx, unit)?;
        for s in servers {
            Self::server_insert_in(&tx, unit_id, s)?;
        }
        tx.commit().map_err(query_err("register servers"))
    }

    fn unit_id_in(conn: &rusqlite::Connection, unit: &str) -> Result<i64, InventoryError> {
        conn.query_row("SELECT id FROM units WHERE name = ?1", [unit], |r| r.get(0))
            .optional()
            .map_err(query_err("find a unit"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit",
                name: unit.to_owned(),
            })
    }

    pub fn server_set_state(
        &self,
        server: &str,
        state: ServerState,
        version: Option<u32>,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET state = ?2, version = ?3 WHERE name = ?1",
                params![server, state.as_str(), version],
            )
            .map_err(query_err("set a server's state"))?;
        Ok(())
    }

    pub fn server_set_lb_state(&self, server: &str, lb_state: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET lb_state = ?2 WHERE name = ?1",
                params![server, lb_state],
            )
            .map_err(query_err("set a server's load-balancer state"))?;
        Ok(())
    }

    pub fn server_delete(&self, server: &str) -> Result<(), InventoryError> {
        self.conn()
            .execute("DELETE FROM servers WHERE name = ?1", [server])
            .map_err(query_err("forget a server"))?;
        Ok(())
    }

    /// Every server in the inventory (names, addresses and MACs must be unique across it).
    pub fn server_list(&self) -> Result<Vec<Server>, InventoryError> {
        self.servers_where("1 = 1", params![])
    }

    fn servers_where(
        &self,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Server>, InventoryError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT s.name, u.name, h.name, s.address, s.mac, s.state, s.version, s.lb_state
                 FROM servers s JOIN units u ON u.id = s.unit_id JOIN hosts h ON h.id = s.host_id
                 WHERE {filter} ORDER BY u.name, s.id"
            ))
            .map_err(query_err("list servers"))?;
        let rows = stmt
            .query_map(args, |r| {
                let state: String = r.get(5)?;
                Ok(Server {
                    name: r.get(0)?,
                    unit: r.get(1)?,
                    host: r.get(2)?,
                    address: r.get(3)?,
                    mac: r.get(4)?,
                    state: ServerState::parse(&state).unwrap_or(ServerState::Planned),
                    version: r.get(6)?,
                    lb_state: r.get(7)?,
                })
            })
            .map_err(query_err("list servers"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query_err("list servers"));
        rows
    }

    /// Every unit with its versions and servers, in three queries.
    pub fn unit_list(&self) -> Result<Vec<Unit>, InventoryError> {
        let servers = self.server_list()?;
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT u.name, l.name, u.lb_pool, u.name_pattern, u.addresses, u.policy_json,
                        u.current_version, u.created_at
                 FROM units u LEFT JOIN lbs l ON l.id = u.lb_id ORDER BY u.name",
            )
            .map_err(query_err("list units"))?;
        let mut units: Vec<Unit> = stmt
            .query_map([], |r| {
                let policy: String = r.get(5)?;
                Ok(Unit {
                    name: r.get(0)?,
                    lb: r.get(1)?,
                    lb_pool: r.get(2)?,
                    name_pattern: r.get(3)?,
                    addresses: r.get(4)?,
                    policy: serde_json::from_str(&policy).unwrap_or_default(),
                    current_version: r.get(6)?,
                    versions: Vec::new(),
                    servers: Vec::new(),
                    created_at: r.get(7)?,
                })
            })
            .map_err(query_err("list units"))?
            .collect::<Result<_, _>>()
            .map_err(query_err("list units"))?;
        let mut stmt = conn
            .prepare(
                "SELECT u.name, uv.version, i.name, iv.version, d.name, dv.version, uv.cpus,
                        uv.memory_mib, uv.disk_gib, uv.created_at
                 FROM unit_versions uv JOIN units u ON u.id = uv.unit_id
                 JOIN image_versions iv ON iv.id = uv.image_version_id JOIN images i ON i.id = iv.image_id
                 JOIN definition_versions dv ON dv.id = uv.definition_version_id
                 JOIN definitions d ON d.id = dv.definition_id
                 ORDER BY u.name, uv.version",
            )
            .map_err(query_err("list unit versions"))?;
        let versions = stmt
            .query_map([], |r| {
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

    pub fn unit_get(&self, name: &str) -> Result<Unit, InventoryError> {
        self.unit_list()?
            .into_iter()
            .find(|u| u.name == name)
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit",
                name: name.to_owned(),
            })
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

    /// A lock held by an `lb.reconcile` whose process is gone is stale: a reconcile has nothing
    /// to resume or unwind (it only puts back what the inventory says), so the lock is taken
    /// over and the reconcile marked aborted. Any other operation keeps its lock until it is
    /// resumed or unwound.
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
            return Ok(false);
        };
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
