//! The inventory: one SQLite file in the data directory.
//!
//! WAL mode, foreign keys on, a busy timeout so a second process (the CLI while the desktop app
//! is open) waits for a lock instead of failing. Schema migrations live next to the table they
//! create and are applied in the one order listed in [`MIGRATIONS`].
//! Methods are named noun-first (`host_list`, `audit_record`).

mod audit;
mod builders;
mod definitions;
mod host_fences;
mod host_monitor;
mod host_objects;
mod host_pins;
mod host_uploads;
mod hosts;
mod images;
mod journal;
mod lbs;
mod server_volumes;
mod servers;
mod unit_locks;
mod units;

pub use definitions::DefinitionVersion;
pub use journal::{step_name, JournalEntry, Operation, OperationStep, StepStatus};

pub use crate::model::{FenceMethod, HostFence};
pub use audit::{Actor, AuditEntry, AuditResult};
pub use host_monitor::{MonitorHolder, MonitorLease, MonitorRecord, MonitoredServer};
pub use host_pins::PinMode;
pub use hosts::NewHost;
pub use lbs::LbInstance;
pub use servers::{NewServer, Placement, PriorVolumes, Server};
pub use units::{NewUnit, NewUnitVersion, Unit, UnitVersion};

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// File name of the inventory inside the data directory.
pub const FILE_NAME: &str = "inventory.sqlite3";
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the inventory {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the inventory {} was written by a newer Flotilla (schema version {found}, this build knows up to {known}); use a newer Flotilla or another --data-dir",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error("cannot update the inventory schema of {}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} '{name}' already exists")]
    Duplicate { kind: &'static str, name: String },
    #[error("{kind} '{name}' changed meanwhile: the change started from v{expected}, the newest is v{newest}")]
    Stale {
        kind: &'static str,
        name: String,
        expected: u32,
        newest: u32,
    },
    #[error("host '{holder}' is already registered with the URI {uri}")]
    UriTaken { uri: String, holder: String },
    #[error("{kind} '{name}' is still used by {}", describe_dependents(users))]
    InUse {
        kind: &'static str,
        name: String,
        users: Vec<Dependent>,
    },
    #[error("a rollout of unit {unit} has put v{version} on some of its servers: finish it (flotillactl unit rollout {unit}) or roll it back (flotillactl unit rollback {unit}) before recording another version")]
    RolloutInProgress { unit: String, version: u32 },
    #[error("inventory query failed while trying to {what}")]
    Query {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the inventory holds unreadable data in {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Rows of another table that point at an object (through a foreign key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Dependent {
    pub table: String,
    pub rows: u64,
}

fn describe_dependents(users: &[Dependent]) -> String {
    users
        .iter()
        .map(|d| {
            // Table names in words: "2 unit versions", "1 copies on hosts".
            let what = match d.table.as_str() {
                "image_copies" => "copies on hosts".to_owned(),
                "host_objects" => "verified files on the host".to_owned(),
                other => other.replace('_', " "),
            };
            format!("{} {what}", d.rows)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn conflict(e: rusqlite::Error, kind: &'static str, name: String) -> InventoryError {
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

/// A stored value this build cannot read (a row written by hand, or by a Flotilla that knew
/// another value): an error naming the table, the row and the column, never a silent default.
pub(super) fn corrupt_value(table: &str, row: &str, column: &str, value: &str) -> InventoryError {
    InventoryError::Corrupt {
        what: format!(
            "table {table}, row {row}, column {column} ({})",
            crate::model::quote_input(value)
        ),
        source: None,
    }
}

pub(crate) fn query_err(what: &'static str) -> impl FnOnce(rusqlite::Error) -> InventoryError {
    move |source| InventoryError::Query { what, source }
}

/// Every schema migration, oldest first: the schema version of an inventory is the number of
/// entries applied. Append only — a released migration never changes or moves, and a table
/// module that needs a change adds a new constant here at the end. The name is for people.
const MIGRATIONS: &[(&str, &str)] = &[
    // The first wave (schema 1-8).
    ("hosts", hosts::CREATE),
    ("audit", audit::CREATE),
    ("images, image_versions, image_copies", images::CREATE),
    ("operations, operation_steps", journal::CREATE),
    ("builders", builders::CREATE),
    ("definitions, definition_versions", definitions::CREATE),
    (
        "lbs, units, unit_versions, servers, unit_locks",
        units::CREATE,
    ),
    ("host_objects", host_objects::CREATE),
    // Issue 10: what a server owns on its host; who relies on a shared object on a host.
    ("server_volumes", server_volumes::CREATE),
    ("host_pins", host_pins::CREATE),
    ("operation_steps: undo_failed", journal::UNDO_FAILED),
    ("host_uploads", host_uploads::CREATE),
    // Issue 11: rolling updates give a server new disk and seed volumes.
    ("servers: disk and seed volumes", servers::VOLUMES),
    ("units: pause requests", unit_locks::PAUSE),
    ("units: the load balancer's check layer", units::LB_CHECKS),
    ("units: version numbers never reused", units::VERSION_SEQ),
    ("servers: what a rollout swapped out", servers::PRIOR),
    // Issue 12: the monitor's state of each host, and which process monitors.
    ("host_monitor, monitor_lease", host_monitor::CREATE),
    // A server re-created on another host has a new generation.
    ("servers: generation", servers::GENERATION),
    // Issue 20: power fencing through the host's BMC (Redfish).
    ("hosts: BMC", hosts::BMC),
    // Issue 20: a server never runs twice — fences, isolation, when a host was last seen.
    (
        "host_fences; servers: isolation, fenced; last seen; lease namespace",
        host_fences::CREATE,
    ),
];

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|(_, sql)| M::up(sql)).collect())
}

/// The inventory store. Cheap to share (`Arc<Inventory>`); calls are short and serialized on
/// one connection.
#[derive(Debug)]
pub struct Inventory {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Test builds: how many times each read was called (`reads`).
    #[cfg(feature = "test-hooks")]
    reads: Mutex<ReadCounts>,
}

/// How many times each read of the inventory was called, by method name (`unit_get`,
/// `unit_list`, `server_list`, …). Test builds only (feature `test-hooks`): a test counts
/// what one operation reads.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadCounts(pub std::collections::BTreeMap<&'static str, u64>);

#[cfg(feature = "test-hooks")]
impl ReadCounts {
    /// Calls of `read` (0 when it was not called).
    pub fn of(&self, read: &str) -> u64 {
        self.0.get(read).copied().unwrap_or(0)
    }

    /// Every read counted.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl Inventory {
    /// Opens (creating if needed) the inventory in `data_dir`, migrating it to this build's
    /// schema.
    /// The data directory is made private (0700), and so is the inventory (0600; SQLite gives
    /// its -wal and -shm files the database's mode). One an older Flotilla left readable by
    /// others is made private too: it holds load-balancer credentials.
    pub fn open_in(data_dir: &Path) -> Result<Self, InventoryError> {
        crate::files::private_dir_all(data_dir).map_err(|source| InventoryError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        if let Err(e) = crate::files::make_private(data_dir) {
            eprintln!(
                "flotilla: warning: cannot make the data directory {} private (mode 0700): {e}",
                data_dir.display()
            );
        }
        Self::open(&data_dir.join(FILE_NAME))
    }

    pub fn open(path: &Path) -> Result<Self, InventoryError> {
        let open_err = |source| InventoryError::Open {
            path: path.to_owned(),
            source,
        };
        Self::make_file_private(path)?;
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        Self::prepare(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            #[cfg(feature = "test-hooks")]
            reads: Mutex::default(),
        })
    }

    /// Creates the database file empty with mode 0600 before SQLite opens it (SQLite would
    /// make it 0644), or takes group and other access from one that has it.
    fn make_file_private(path: &Path) -> Result<(), InventoryError> {
        use std::os::unix::fs::OpenOptionsExt;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::files::FILE_MODE)
            .open(path);
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    match crate::files::make_private(Path::new(&p)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => eprintln!(
                            "flotilla: warning: cannot make {} private (mode 0600): {e}",
                            Path::new(&p).display()
                        ),
                        _ => {}
                    }
                }
                Ok(())
            }
            Err(source) => Err(InventoryError::DataDir {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// A private in-memory inventory, for tests.
    pub fn open_in_memory() -> Result<Self, InventoryError> {
        let path = PathBuf::from(":memory:");
        let mut conn = Connection::open_in_memory().map_err(|source| InventoryError::Open {
            path: path.clone(),
            source,
        })?;
        Self::prepare(&mut conn, &path)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
            #[cfg(feature = "test-hooks")]
            reads: Mutex::default(),
        })
    }

    fn prepare(conn: &mut Connection, path: &Path) -> Result<(), InventoryError> {
        let open_err = |source| InventoryError::Open {
            path: path.to_owned(),
            source,
        };
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        let migrations = migrations();
        let known = migrations_len();
        let found: usize = conn
            .pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
            .map_err(open_err)?
            .try_into()
            .unwrap_or(usize::MAX);
        if found > known {
            return Err(InventoryError::TooNew {
                path: path.to_owned(),
                found,
                known,
            });
        }
        // Two processes may open a fresh inventory at the same moment; the loser of the write
        // lock sees "busy" (or finds the work done) and simply tries again.
        let mut attempt = 0;
        loop {
            match migrations.to_latest(conn) {
                Ok(()) => return Ok(()),
                Err(_) if attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50 * attempt));
                }
                Err(source) => {
                    return Err(InventoryError::Migrate {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts a call of the read `what` (test builds; nothing otherwise).
    #[inline]
    fn count_read(&self, what: &'static str) {
        #[cfg(feature = "test-hooks")]
        {
            let mut reads = self
                .reads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *reads.0.entry(what).or_default() += 1;
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = what;
    }

    /// The reads counted since this inventory was opened or `reads_reset`. Test builds only.
    #[cfg(feature = "test-hooks")]
    pub fn reads(&self) -> ReadCounts {
        self.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts counting reads from zero. Test builds only.
    #[cfg(feature = "test-hooks")]
    pub fn reads_reset(&self) {
        *self
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ReadCounts::default();
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A transaction that takes the write lock at once. A deferred one would read first and
    /// then fail to upgrade (SQLITE_BUSY without waiting) when another process wrote meanwhile.
    fn write_tx<'c>(
        conn: &'c mut Connection,
        what: &'static str,
    ) -> Result<rusqlite::Transaction<'c>, InventoryError> {
        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(query_err(what))
    }

    /// Rows in other tables that reference row `id` of `table` through a foreign key. Found by
    /// reading the schema, so a table added by a later migration is covered without code here.
    /// A key declared `ON DELETE CASCADE` is part of the row it references (a host's monitor
    /// record), not a use of it.
    fn dependents(
        conn: &Connection,
        table: &str,
        id: i64,
    ) -> Result<Vec<Dependent>, InventoryError> {
        let mut stmt = conn
            .prepare(
                "SELECT m.name, p.\"from\" FROM sqlite_master m \
                 JOIN pragma_foreign_key_list(m.name) p \
                 WHERE m.type = 'table' AND p.\"table\" = ?1 AND p.on_delete != 'CASCADE' \
                 ORDER BY m.name",
            )
            .map_err(query_err("list foreign keys"))?;
        let refs: Vec<(String, String)> = stmt
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(query_err("list foreign keys"))?
            .collect::<Result<_, _>>()
            .map_err(query_err("list foreign keys"))?;
        let mut out = Vec::new();
        for (other, column) in refs {
            // Identifiers come from sqlite_master, not from users; quote them anyway.
            let sql = format!(
                "SELECT count(*) FROM \"{}\" WHERE \"{}\" = ?1",
                other.replace('"', "\"\""),
                column.replace('"', "\"\"")
            );
            let rows: i64 = conn
                .query_row(&sql, [id], |r| r.get(0))
                .map_err(query_err("count dependents"))?;
            if rows > 0 {
                out.push(Dependent {
                    table: other,
                    rows: rows.unsigned_abs(),
                });
            }
        }
        Ok(out)
    }

    /// Runs raw SQL; tests use it to stand in for tables of later issues.
    #[cfg(test)]
    pub(crate) fn execute_batch_for_test(&self, sql: &str) {
        self.conn().execute_batch(sql).expect("test SQL");
    }
}

fn migrations_len() -> usize {
    MIGRATIONS.len()
}

/// A timestamp usable in names: `20261127T062836123456789` (UTC, with nanoseconds).
pub(crate) fn now_compact() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}{:09}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    )
}

pub(crate) fn now_rfc3339() -> String {
    // Whole seconds: easier to read, and the row id orders events within a second.
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// A copy of the inventory the first wave's flotillactl wrote (schema 8: host h1, image base,
/// definition shop, unit shop of two deployed servers and its deploy journal), opened (and so
/// migrated) in a new temporary directory. For tests.
#[cfg(test)]
pub(crate) fn first_wave_inventory() -> (tempfile::TempDir, Inventory) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/first-wave/inventory.sqlite3");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::copy(&fixture, dir.path().join(FILE_NAME)).expect("the first-wave fixture");
    let inv = Inventory::open_in(dir.path()).expect("the first-wave inventory opens");
    (dir, inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An inventory written by the first wave's flotillactl (schema 8: a host with a network,
    /// an imported master, a definition, a unit of two deployed servers, its deploy journal)
    /// opens in this build, is migrated, and keeps everything; what the new tables need about
    /// the old servers is filled in.
    #[test]
    fn a_first_wave_inventory_is_migrated_with_nothing_lost() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/first-wave/inventory.sqlite3");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, dir.path().join(FILE_NAME)).unwrap();
        let inv = Inventory::open_in(dir.path()).unwrap();
        let version: i64 = inv
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());

        let hosts = inv.host_list().unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].name.as_str(), "h1");
        assert_eq!(hosts[0].network, "10.9.0.0/24");
        let units = inv.unit_list().unwrap();
        assert_eq!(units.len(), 1);
        let shop = &units[0];
        assert_eq!(shop.name, "shop");
        let servers: Vec<(String, String, String, crate::model::ServerState)> = shop
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.address.clone(), s.mac.clone(), s.state))
            .collect();
        assert_eq!(
            servers,
            [
                (
                    "shop-1".to_owned(),
                    "10.9.0.11".to_owned(),
                    "52:54:00:31:8e:05".to_owned(),
                    crate::model::ServerState::Running
                ),
                (
                    "shop-2".to_owned(),
                    "10.9.0.12".to_owned(),
                    "52:54:00:f0:29:1f".to_owned(),
                    crate::model::ServerState::Running
                )
            ]
        );
        let v = shop.current().unwrap();
        assert_eq!((v.image.as_str(), v.image_version), ("base", 1));
        assert_eq!((v.definition.as_str(), v.definition_version), ("shop", 1));
        let image = inv
            .image_version_get(&crate::model::ImageName::parse("base").unwrap(), 1)
            .unwrap();
        assert_eq!(
            image.sha256,
            "e1fdb1fb2b8b0fd7a8e9f41f54858c1c55bbf28060e778f0b74acdf3b8d8c723"
        );
        assert_eq!(image.notes, "first wave");
        assert_eq!(inv.definition_list().unwrap().len(), 1);
        let ops = inv.operation_list(10).unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].kind.as_str(), ops[0].state.as_str()),
            ("deploy", "succeeded")
        );
        assert!(!inv.audit_list(100).unwrap().is_empty());
        // The deployed servers own the volumes the first wave made for them.
        for s in ["shop-1", "shop-2"] {
            for v in [
                format!("{s}-disk.qcow2"),
                format!("{s}-seed.img"),
                format!("{s}.serial"),
            ] {
                assert_eq!(
                    inv.server_volume_owner("h1", &v).unwrap().as_deref(),
                    Some(s)
                );
            }
        }
    }

    #[test]
    fn a_fresh_inventory_is_migrated_in_wal_mode_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Inventory::open_in(&dir.path().join("nested/data")).unwrap();
        let conn = inv.conn();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys must be enforced");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, migrations_len());
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn reopening_keeps_data_and_an_inventory_from_the_future_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let inv = Inventory::open_in(dir.path()).unwrap();
            inv.audit_record(
                &Actor::new("cli"),
                "test.write",
                "x",
                AuditResult::Ok,
                "kept",
            )
            .unwrap();
        }
        let inv = Inventory::open_in(dir.path()).unwrap();
        assert_eq!(inv.audit_list(10).unwrap().len(), 1);
        inv.conn().pragma_update(None, "user_version", 999).unwrap();
        drop(inv);
        let err = Inventory::open_in(dir.path()).unwrap_err();
        assert!(
            matches!(err, InventoryError::TooNew { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer Flotilla"));
    }

    #[test]
    fn a_file_that_is_not_sqlite_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 4096]).unwrap();
        let err = Inventory::open_in(dir.path()).unwrap_err();
        assert!(
            matches!(err, InventoryError::Open { .. }),
            "expected an open error, got {err:?}"
        );
        assert!(err.to_string().contains(FILE_NAME));
    }
}
