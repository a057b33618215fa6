//! Table `hosts`: the managed machines.

use super::{corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{
    BmcSettings, BridgeName, Host, HostFacts, HostName, HostStatus, LibvirtUri, PoolName,
    SecretPlace,
};
use rusqlite::{params, OptionalExtension, Row};

/// Migration (see `inventory::MIGRATIONS`).
pub(super) const CREATE: &str = "CREATE TABLE hosts (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        uri           TEXT NOT NULL UNIQUE,
        pool          TEXT NOT NULL,
        bridge        TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('ok', 'degraded', 'unreachable')),
        status_detail TEXT NOT NULL DEFAULT '',
        facts_json    TEXT,
        added_at      TEXT NOT NULL,
        checked_at    TEXT NOT NULL
    ) STRICT;";

/// Migration (see `inventory::MIGRATIONS`): how the host's BMC is reached for power fencing.
/// `bmc_url` empty: no BMC. The password is never here (`secrets.rs`); `bmc_secret` says
/// where it was put.
pub(super) const BMC: &str = "ALTER TABLE hosts ADD COLUMN bmc_url TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN bmc_system TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN bmc_user TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN bmc_ca_pem TEXT NOT NULL DEFAULT '';
    ALTER TABLE hosts ADD COLUMN bmc_secret TEXT NOT NULL DEFAULT ''
        CHECK (bmc_secret IN ('', 'secret_service', 'file'));";

/// A host to insert: everything but the timestamps.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: HostName,
    pub uri: LibvirtUri,
    pub pool: PoolName,
    pub bridge: BridgeName,
    pub status: HostStatus,
    pub status_detail: String,
    pub facts: HostFacts,
}

const COLUMNS: &str =
    "name, uri, pool, bridge, status, status_detail, facts_json, added_at, checked_at, network, gateway, domain_type,
     bmc_url, bmc_system, bmc_user, bmc_ca_pem, bmc_secret";

fn host_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Host, InventoryError>> {
    let name: String = row.get(0)?;
    let raw = (
        row.get::<_, String>(1)?,
        row.get::<_, String>(2)?,
        row.get::<_, String>(3)?,
        row.get::<_, String>(4)?,
        row.get::<_, String>(5)?,
        row.get::<_, Option<String>>(6)?,
        row.get::<_, String>(7)?,
        row.get::<_, String>(8)?,
    );
    let mut host = decode_host(name, raw);
    if let Ok(h) = &mut host {
        h.network = row.get(9)?;
        h.gateway = row.get(10)?;
        h.domain_type = row.get(11)?;
        match bmc_from_row(row, h.name.as_str())? {
            Ok(bmc) => h.bmc = bmc,
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(host)
}

/// The BMC columns (12–16). Values are shown as stored; the client checks them again before
/// it connects, so a value refused by a later build fails there with the reason.
/// A BMC whose password place is not recorded is an error (`host_set_bmc` always records it).
fn bmc_from_row(
    row: &Row<'_>,
    host: &str,
) -> rusqlite::Result<Result<Option<BmcSettings>, InventoryError>> {
    let url: String = row.get(12)?;
    if url.is_empty() {
        return Ok(Ok(None));
    }
    let ca_pem: String = row.get(15)?;
    let secret: String = row.get(16)?;
    let Some(password) = SecretPlace::parse(&secret) else {
        return Ok(Err(corrupt_value("hosts", host, "bmc_secret", &secret)));
    };
    Ok(Ok(Some(BmcSettings {
        url,
        system: row.get(13)?,
        user: row.get(14)?,
        ca_pem: (!ca_pem.is_empty()).then_some(ca_pem),
        password,
    })))
}

type RawHost = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

fn decode_host(name: String, raw: RawHost) -> Result<Host, InventoryError> {
    let (uri, pool, bridge, status, status_detail, facts_json, added_at, checked_at) = raw;
    let corrupt = |what: &str, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        InventoryError::Corrupt {
            what: format!("host '{name}': {what}"),
            source,
        }
    };
    let facts = facts_json
        .map(|json| serde_json::from_str::<HostFacts>(&json))
        .transpose()
        .map_err(|e| corrupt("facts", Some(Box::new(e))))?;
    // A URI refused by today's checks (stored before they existed) keeps the host listed and
    // removable; it is shown as unreachable with the reason, and never connected to.
    let (uri, refused) = match LibvirtUri::parse(&uri) {
        Ok(u) => (u, None),
        Err(e) => (LibvirtUri::from_stored(&uri), Some(e.problem)),
    };
    let (status, status_detail) = match refused {
        Some(reason) => (
            HostStatus::Unreachable.as_str().to_owned(),
            format!("its URI is refused: {reason}; remove the host and add it again"),
        ),
        None => (status, status_detail),
    };
    Ok(Host {
        name: HostName::parse(&name).map_err(|e| corrupt("name", Some(Box::new(e))))?,
        uri,
        pool: PoolName::parse(&pool).map_err(|e| corrupt("pool", Some(Box::new(e))))?,
        bridge: BridgeName::parse(&bridge).map_err(|e| corrupt("bridge", Some(Box::new(e))))?,
        status: HostStatus::parse(&status).ok_or_else(|| corrupt("status", None))?,
        status_detail,
        facts,
        added_at,
        checked_at,
        network: String::new(),
        gateway: String::new(),
        domain_type: String::new(),
        monitor: Default::default(),
        bmc: None,
        fence: None,
        fenced: Vec::new(),
    })
}

impl Inventory {
    /// Inserts a host. Refuses a duplicate name or a URI another host already uses.
    pub fn host_insert(&self, new: &NewHost) -> Result<Host, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin host insert")?;
        if let Some(holder) = tx
            .query_row(
                "SELECT name FROM hosts WHERE uri = ?1",
                [new.uri.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(query_err("look up a host by URI"))?
        {
            return Err(if holder == new.name.as_str() {
                InventoryError::Duplicate {
                    kind: "host",
                    name: holder,
                }
            } else {
                InventoryError::UriTaken {
                    uri: new.uri.to_string(),
                    holder,
                }
            });
        }
        let now = now_rfc3339();
        let facts = serde_json::to_string(&new.facts).map_err(|e| InventoryError::Corrupt {
            what: "facts to store".into(),
            source: Some(Box::new(e)),
        })?;
        let inserted = tx.execute(
            "INSERT INTO hosts (name, uri, pool, bridge, status, status_detail, facts_json, added_at, checked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            params![
                new.name.as_str(),
                new.uri.as_str(),
                new.pool.as_str(),
                new.bridge.as_str(),
                new.status.as_str(),
                new.status_detail,
                facts,
                now
            ],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(InventoryError::Duplicate {
                    kind: "host",
                    name: new.name.to_string(),
                })
            }
            other => other.map_err(query_err("insert a host"))?,
        };
        let host = Self::host_get_in(&tx, new.name.as_str())?;
        tx.commit().map_err(query_err("commit host insert"))?;
        Ok(host)
    }

    pub fn host_get(&self, name: &HostName) -> Result<Host, InventoryError> {
        self.count_read("host_get");
        Self::host_get_in(&self.conn(), name.as_str())
    }

    fn host_get_in(conn: &rusqlite::Connection, name: &str) -> Result<Host, InventoryError> {
        let mut host = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM hosts WHERE name = ?1"),
                [name],
                host_from_row,
            )
            .optional()
            .map_err(query_err("read a host"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "host",
                name: name.to_owned(),
            })??;
        if let Some(m) = Self::monitor_views(conn)?.remove(name) {
            host.monitor = m;
        }
        Ok(host)
    }

    /// All hosts, by name.
    pub fn host_list(&self) -> Result<Vec<Host>, InventoryError> {
        self.count_read("host_list");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name"))
            .map_err(query_err("list hosts"))?;
        let rows = stmt
            .query_map([], host_from_row)
            .map_err(query_err("list hosts"))?;
        let mut monitor = Self::monitor_views(&conn)?;
        let mut out = Vec::new();
        for row in rows {
            let mut host = row.map_err(query_err("list hosts"))??;
            if let Some(m) = monitor.remove(host.name.as_str()) {
                host.monitor = m;
            }
            out.push(host);
        }
        Ok(out)
    }

    /// Records the result of a check. `facts` is `None` when the host could not be reached:
    /// the previous facts are kept so the admin still sees what the host was.
    pub fn host_set_check(
        &self,
        name: &HostName,
        status: HostStatus,
        status_detail: &str,
        facts: Option<&HostFacts>,
    ) -> Result<Host, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin host check")?;
        let facts_json =
            facts
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| InventoryError::Corrupt {
                    what: "facts to store".into(),
                    source: Some(Box::new(e)),
                })?;
        let changed = tx
            .execute(
                "UPDATE hosts SET status = ?2, status_detail = ?3,
                    facts_json = coalesce(?4, facts_json), checked_at = ?5
                 WHERE name = ?1",
                params![
                    name.as_str(),
                    status.as_str(),
                    status_detail,
                    facts_json,
                    now_rfc3339()
                ],
            )
            .map_err(query_err("update a host"))?;
        if changed == 0 {
            return Err(InventoryError::NotFound {
                kind: "host",
                name: name.to_string(),
            });
        }
        let host = Self::host_get_in(&tx, name.as_str())?;
        tx.commit().map_err(query_err("commit host check"))?;
        Ok(host)
    }

    /// Removes a host. Refused while anything in the inventory references it (servers, image
    /// copies, … — every table with a foreign key to `hosts`).
    pub fn host_delete(&self, name: &HostName) -> Result<(), InventoryError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(query_err("begin host removal"))?;
        let id: i64 = tx
            .query_row(
                "SELECT id FROM hosts WHERE name = ?1",
                [name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(query_err("look up a host"))?
            .ok_or_else(|| InventoryError::NotFound {
                kind: "host",
                name: name.to_string(),
            })?;
        let users = Self::dependents(&tx, "hosts", id)?;
        if !users.is_empty() {
            return Err(InventoryError::InUse {
                kind: "host",
                name: name.to_string(),
                users,
            });
        }
        tx.execute("DELETE FROM hosts WHERE id = ?1", [id])
            .map_err(query_err("delete a host"))?;
        tx.commit().map_err(query_err("commit host removal"))
    }
}

// The network columns (added by the units migration, `units::CREATE`).
impl Inventory {
    /// Network settings of a host: `(network CIDR, gateway, domain type override)`, each empty
    /// when not set.
    pub fn host_network(&self, host: &str) -> Result<(String, String, String), InventoryError> {
        self.count_read("host_network");
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
}

// The BMC columns (migration `BMC`).
impl Inventory {
    /// Sets (or with `None` clears) how a host's BMC is reached. The password is not here.
    pub fn host_set_bmc(
        &self,
        host: &HostName,
        bmc: Option<&BmcSettings>,
    ) -> Result<Host, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "begin setting a host's BMC")?;
        let empty = String::new();
        let (url, system, user, ca, secret) = match bmc {
            Some(b) => (
                &b.url,
                &b.system,
                &b.user,
                b.ca_pem.as_ref().unwrap_or(&empty),
                b.password.as_str(),
            ),
            None => (&empty, &empty, &empty, &empty, ""),
        };
        let changed = tx
            .execute(
                "UPDATE hosts SET bmc_url = ?2, bmc_system = ?3, bmc_user = ?4, bmc_ca_pem = ?5,
                    bmc_secret = ?6
                 WHERE name = ?1",
                params![host.as_str(), url, system, user, ca, secret],
            )
            .map_err(query_err("set a host's BMC"))?;
        if changed == 0 {
            return Err(InventoryError::NotFound {
                kind: "host",
                name: host.to_string(),
            });
        }
        let updated = Self::host_get_in(&tx, host.as_str())?;
        tx.commit().map_err(query_err("commit a host's BMC"))?;
        Ok(updated)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{BridgeCheck, PoolFacts};

    /// An inventory from before the URI checks may hold a URI they refuse now: the host is
    /// still listed (and can be removed), shown unreachable with the reason.
    #[test]
    fn a_host_whose_uri_is_refused_now_stays_listed_and_removable() {
        let inv = Inventory::open_in_memory().unwrap();
        inv.execute_batch_for_test(
            "INSERT INTO hosts (name, uri, pool, bridge, status, added_at, checked_at)
             VALUES ('old', 'qemu+ssh://h/system?netcat=/tmp/nc', 'default', 'br0', 'ok', '', '')",
        );
        let hosts = inv.host_list().unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].status, HostStatus::Unreachable);
        assert!(
            hosts[0].status_detail.contains("URI is refused"),
            "{}",
            hosts[0].status_detail
        );
        inv.host_delete(&HostName::parse("old").unwrap()).unwrap();
        assert!(inv.host_list().unwrap().is_empty());
    }

    pub(crate) fn sample_facts() -> HostFacts {
        HostFacts {
            hostname: "node1".into(),
            hypervisor: "TEST".into(),
            hypervisor_version: "0.0.2".into(),
            libvirt_version: "9.0.0".into(),
            cpu_model: "i686".into(),
            cpus: 16,
            memory_bytes: 8 << 30,
            pool: Some(PoolFacts {
                name: "default".into(),
                active: true,
                capacity_bytes: 100,
                allocation_bytes: 0,
                available_bytes: 100,
            }),
            pools_available: vec!["default".into()],
            bridge: BridgeCheck::Found,
            kvm: false,
        }
    }

    fn new_host(name: &str, uri: &str) -> NewHost {
        NewHost {
            name: HostName::parse(name).unwrap(),
            uri: LibvirtUri::parse(uri).unwrap(),
            pool: PoolName::parse("default").unwrap(),
            bridge: BridgeName::parse("br0").unwrap(),
            status: HostStatus::Ok,
            status_detail: String::new(),
            facts: sample_facts(),
        }
    }

    #[test]
    fn insert_get_list_delete() {
        let inv = Inventory::open_in_memory().unwrap();
        let h = inv.host_insert(&new_host("h2", "test:///a.xml")).unwrap();
        assert_eq!(h.facts, Some(sample_facts()));
        assert_eq!(h.added_at, h.checked_at);
        inv.host_insert(&new_host("h1", "test:///b.xml")).unwrap();
        let names: Vec<_> = inv
            .host_list()
            .unwrap()
            .into_iter()
            .map(|h| h.name.to_string())
            .collect();
        assert_eq!(names, ["h1", "h2"], "listed by name");
        inv.host_delete(&h.name).unwrap();
        assert!(matches!(
            inv.host_get(&h.name),
            Err(InventoryError::NotFound { .. })
        ));
        assert!(matches!(
            inv.host_delete(&h.name),
            Err(InventoryError::NotFound { .. })
        ));
    }

    #[test]
    fn duplicate_names_and_uris_are_refused_and_change_nothing() {
        let inv = Inventory::open_in_memory().unwrap();
        inv.host_insert(&new_host("h1", "test:///a.xml")).unwrap();
        let dup = inv.host_insert(&new_host("h1", "test:///other.xml"));
        assert!(
            matches!(dup, Err(InventoryError::Duplicate { .. })),
            "{dup:?}"
        );
        let same_uri = inv.host_insert(&new_host("h9", "test:///a.xml"));
        match same_uri {
            Err(InventoryError::UriTaken { holder, .. }) => assert_eq!(holder, "h1"),
            other => panic!("expected UriTaken, got {other:?}"),
        }
        assert_eq!(inv.host_list().unwrap().len(), 1);
    }

    #[test]
    fn a_bmc_is_set_read_back_and_cleared() {
        let inv = Inventory::open_in_memory().unwrap();
        let h = inv.host_insert(&new_host("h1", "test:///a.xml")).unwrap();
        assert_eq!(h.bmc, None);
        let bmc = BmcSettings {
            url: "https://10.0.0.5".into(),
            system: "1".into(),
            user: "admin".into(),
            ca_pem: Some("-----BEGIN CERTIFICATE-----\n…".into()),
            password: SecretPlace::SecretService,
        };
        let set = inv.host_set_bmc(&h.name, Some(&bmc)).unwrap();
        assert_eq!(set.bmc.as_ref(), Some(&bmc));
        assert_eq!(inv.host_list().unwrap()[0].bmc.as_ref(), Some(&bmc));
        let plain = BmcSettings {
            ca_pem: None,
            password: SecretPlace::File,
            ..bmc
        };
        assert_eq!(
            inv.host_set_bmc(&h.name, Some(&plain)).unwrap().bmc,
            Some(plain)
        );
        assert_eq!(inv.host_set_bmc(&h.name, None).unwrap().bmc, None);
        let missing = inv.host_set_bmc(&HostName::parse("h9").unwrap(), None);
        assert!(matches!(missing, Err(InventoryError::NotFound { .. })));
    }

    #[test]
    fn a_failed_check_keeps_the_last_known_facts() {
        let inv = Inventory::open_in_memory().unwrap();
        let h = inv.host_insert(&new_host("h1", "test:///a.xml")).unwrap();
        let after = inv
            .host_set_check(&h.name, HostStatus::Unreachable, "connection refused", None)
            .unwrap();
        assert_eq!(after.status, HostStatus::Unreachable);
        assert_eq!(after.status_detail, "connection refused");
        assert_eq!(after.facts, Some(sample_facts()));
    }

    #[test]
    fn removing_a_host_that_something_references_is_refused() {
        let inv = Inventory::open_in_memory().unwrap();
        let h = inv.host_insert(&new_host("h1", "test:///a.xml")).unwrap();
        // Stands in for any table added later: the refusal reads the schema.
        inv.execute_batch_for_test(
            "CREATE TABLE gadgets (id INTEGER PRIMARY KEY,
                 host_id INTEGER NOT NULL REFERENCES hosts(id) ON DELETE RESTRICT);
             INSERT INTO gadgets (host_id) SELECT id FROM hosts WHERE name = 'h1';
             INSERT INTO gadgets (host_id) SELECT id FROM hosts WHERE name = 'h1';",
        );
        let err = inv.host_delete(&h.name).unwrap_err();
        match &err {
            InventoryError::InUse { users, .. } => assert_eq!(
                users,
                &[super::super::Dependent {
                    table: "gadgets".into(),
                    rows: 2
                }]
            ),
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(err.to_string().contains("2 gadgets"), "{err}");
        assert!(inv.host_get(&h.name).is_ok(), "the host is still there");
    }
}
