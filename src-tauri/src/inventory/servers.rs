//! Table `servers`: the virtual servers of units (name, host, address, MAC, state, the unit
//! version each runs, the desired load-balancer state). Names, addresses and MACs are unique
//! across the inventory. Created by the first wave's units migration (`units::CREATE`).

use super::{conflict, corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::ServerState;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

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
    /// The volume it boots from; empty: `<name>-disk.qcow2` (a rollout that changed the master
    /// or the size gave it a new one).
    pub disk: String,
    /// Its NoCloud seed volume; empty: `<name>-seed.img`.
    pub seed: String,
    /// The disk, seed and unit version it ran before the last rollout swapped it, kept
    /// until that rollout is done: a rollback boots them again (a restart, not a rebuild).
    pub prior: Option<PriorVolumes>,
    /// How many times it was re-created on another host (`unit recover`); its domain carries
    /// it in its metadata, so a copy left on a host that comes back is recognised as stale.
    pub generation: u32,
    /// The isolation response its guest was given (seconds without its load balancer before
    /// it powers itself off); 0: none.
    pub isolation_s: u32,
    /// RFC 3339: when it was taken out of rotation because its host was lost; empty: it was
    /// not (or is back).
    pub fenced_at: String,
    /// In words, when `fenced_at` is set: what happened and what brings it back (filled by
    /// the engine from its host's state; empty here).
    pub fenced: String,
}

/// What a server ran before a rollout swapped it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PriorVolumes {
    pub version: u32,
    pub disk: String,
    pub seed: String,
}

/// Where a server is recorded and what it has there (`server_relocate`).
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub host: String,
    pub generation: u32,
    /// Its volumes; empty: the default names.
    pub disk: String,
    pub seed: String,
    /// The unit version it runs there.
    pub version: Option<u32>,
    pub prior: Option<PriorVolumes>,
}

impl Server {
    pub fn disk_volume(&self) -> String {
        if self.disk.is_empty() {
            format!("{}-disk.qcow2", self.name)
        } else {
            self.disk.clone()
        }
    }

    pub fn seed_volume(&self) -> String {
        if self.seed.is_empty() {
            format!("{}-seed.img", self.name)
        } else {
            self.seed.clone()
        }
    }
}

/// Migration: the disk and seed volumes a server uses (rolling updates give it new ones).
pub(super) const VOLUMES: &str = "ALTER TABLE servers ADD COLUMN disk TEXT NOT NULL DEFAULT '';
    ALTER TABLE servers ADD COLUMN seed TEXT NOT NULL DEFAULT '';";

/// Migration: how many times a server was re-created on another host.
pub(super) const GENERATION: &str =
    "ALTER TABLE servers ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;";

/// Migration: what a server ran before a rollout swapped it (`PriorVolumes`).
pub(super) const PRIOR: &str = "ALTER TABLE servers ADD COLUMN prior_version INTEGER;
    ALTER TABLE servers ADD COLUMN prior_disk TEXT NOT NULL DEFAULT '';
    ALTER TABLE servers ADD COLUMN prior_seed TEXT NOT NULL DEFAULT '';";

/// A server to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServer {
    pub name: String,
    pub host: String,
    pub address: String,
    pub mac: String,
}

impl Inventory {
    pub(super) fn server_insert_in(
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

    /// Records the disk and seed volumes a server uses (names, as on its host).
    pub fn server_set_volumes(
        &self,
        server: &str,
        disk: &str,
        seed: &str,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET disk = ?2, seed = ?3 WHERE name = ?1",
                params![server, disk, seed],
            )
            .map_err(query_err("set a server's volumes"))?;
        Ok(())
    }

    /// Records (or, with `None`, forgets) what the server ran before a rollout swapped it.
    pub fn server_set_prior(
        &self,
        server: &str,
        prior: Option<&PriorVolumes>,
    ) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "UPDATE servers SET prior_version = ?2, prior_disk = ?3, prior_seed = ?4 WHERE name = ?1",
                params![
                    server,
                    prior.map(|p| p.version),
                    prior.map_or("", |p| p.disk.as_str()),
                    prior.map_or("", |p| p.seed.as_str())
                ],
            )
            .map_err(query_err("set what a server ran before"))?;
        Ok(())
    }

    /// Records the server on `at.host` with all it has there — a recovery (new volumes,
    /// nothing kept for a rollback) and its undo (what it had on the failed host, also the
    /// version it ran and the rollout's rollback record).
    pub fn server_relocate(&self, server: &str, at: &Placement) -> Result<(), InventoryError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE servers SET host_id = (SELECT id FROM hosts WHERE name = ?2), generation = ?3,
                        disk = ?4, seed = ?5, version = ?6,
                        prior_version = ?7, prior_disk = ?8, prior_seed = ?9
                 WHERE name = ?1 AND EXISTS (SELECT 1 FROM hosts WHERE name = ?2)",
                params![
                    server,
                    at.host,
                    at.generation,
                    at.disk,
                    at.seed,
                    at.version,
                    at.prior.as_ref().map(|p| p.version),
                    at.prior.as_ref().map_or("", |p| p.disk.as_str()),
                    at.prior.as_ref().map_or("", |p| p.seed.as_str())
                ],
            )
            .map_err(query_err("move a server to another host"))?;
        if changed == 0 {
            return Err(InventoryError::NotFound {
                kind: "server or host",
                name: format!("{server} on {}", at.host),
            });
        }
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
        self.count_read("server_list");
        Self::servers_in(&self.conn(), "1 = 1", params![])
    }

    /// The servers that pass `filter` (on `servers s`, `units u`, `hosts h`), by unit then in
    /// the order they were registered.
    pub(super) fn servers_in(
        conn: &rusqlite::Connection,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Server>, InventoryError> {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT s.name, u.name, h.name, s.address, s.mac, s.state, s.version, s.lb_state,
                        s.disk, s.seed, s.prior_version, s.prior_disk, s.prior_seed, s.generation,
                        s.isolation_s, s.fenced_at
                 FROM servers s JOIN units u ON u.id = s.unit_id JOIN hosts h ON h.id = s.host_id
                 WHERE {filter} ORDER BY u.name, s.id"
            ))
            .map_err(query_err("list servers"))?;
        let rows = stmt
            .query_map(args, |r| {
                let name: String = r.get(0)?;
                let state: String = r.get(5)?;
                let Some(state) = ServerState::parse(&state) else {
                    return Ok(Err(corrupt_value("servers", &name, "state", &state)));
                };
                Ok(Ok(Server {
                    name,
                    unit: r.get(1)?,
                    host: r.get(2)?,
                    address: r.get(3)?,
                    mac: r.get(4)?,
                    state,
                    version: r.get(6)?,
                    lb_state: r.get(7)?,
                    disk: r.get(8)?,
                    seed: r.get(9)?,
                    prior: match r.get::<_, Option<u32>>(10)? {
                        Some(version) => Some(PriorVolumes {
                            version,
                            disk: r.get(11)?,
                            seed: r.get(12)?,
                        }),
                        None => None,
                    },
                    generation: r.get(13)?,
                    isolation_s: r.get(14)?,
                    fenced_at: r.get(15)?,
                    fenced: String::new(),
                }))
            })
            .map_err(query_err("list servers"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(query_err("list servers"))??);
        }
        Ok(out)
    }
}
