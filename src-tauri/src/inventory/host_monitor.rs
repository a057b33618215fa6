//! Tables `host_monitor` and `monitor_lease`: what the running monitor last found about each
//! host, and which process monitors (one at a time per inventory). Other processes — `host
//! list`, the desktop app while `flotillactl monitor` runs as a service — read them; a record the
//! monitor stopped renewing is shown as not monitored, never trusted.

use super::journal::{process_alive, process_start};
use super::{corrupt_value, now_rfc3339, query_err, Inventory, InventoryError};
use crate::model::{HostMonitor, HostState, LbKind};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::collections::HashMap;

/// Migration (see `inventory::MIGRATIONS`). A host's record goes with the host
/// (`ON DELETE CASCADE`, which the "still used?" check of a host ignores).
pub(super) const CREATE: &str = "CREATE TABLE host_monitor (
        host_id        INTEGER PRIMARY KEY REFERENCES hosts(id) ON DELETE CASCADE,
        state          TEXT NOT NULL CHECK (state IN
                           ('ready', 'suspect', 'failed', 'partitioned', 'unreachable', 'returning')),
        since          TEXT NOT NULL,
        detail         TEXT NOT NULL DEFAULT '',
        not_running    TEXT NOT NULL DEFAULT '',
        probed_at      TEXT NOT NULL DEFAULT '',
        updated_ms     INTEGER NOT NULL,
        stale_after_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE monitor_lease (
        id             INTEGER PRIMARY KEY CHECK (id = 1),
        pid            INTEGER NOT NULL,
        pid_start      TEXT NOT NULL,
        token          TEXT NOT NULL,
        via            TEXT NOT NULL,
        started_at     TEXT NOT NULL,
        updated_ms     INTEGER NOT NULL,
        stale_after_ms INTEGER NOT NULL,
        frozen         TEXT NOT NULL DEFAULT '',
        thresholds     TEXT NOT NULL DEFAULT ''
    ) STRICT;";

/// One monitor: this process, and a token telling monitors in one process apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorLease {
    pub pid: u32,
    pub pid_start: String,
    /// The machine's boot and the PID namespace the pid means something in
    /// ([`pid_namespace`]).
    pub pid_ns: String,
    pub token: String,
    /// Which front door runs it (`cli`, `gui`).
    pub via: String,
}

impl MonitorLease {
    /// This process, as front door `via`.
    pub fn mine(via: &str) -> Self {
        let pid = std::process::id();
        Self {
            pid,
            pid_start: process_start(pid).unwrap_or_default(),
            pid_ns: pid_namespace(),
            token: super::now_compact(),
            via: via.to_owned(),
        }
    }
}

/// The monitor that holds the lease, as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct MonitorHolder {
    pub pid: u32,
    /// `cli` (flotillactl monitor) or `gui` (the desktop app).
    pub via: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// Its process runs and it renewed the lease within its stale time.
    pub current: bool,
    /// Why it is frozen; empty when it is not.
    pub frozen: String,
    /// Its thresholds as JSON (`monitor::Thresholds`).
    pub thresholds: String,
}

impl std::fmt::Display for MonitorHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.via == "gui" {
            "the desktop app"
        } else {
            "flotillactl monitor"
        };
        write!(f, "{what} (pid {}, since {})", self.pid, self.started_at)
    }
}

/// What the monitor writes for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorRecord {
    pub host: String,
    pub state: HostState,
    /// RFC 3339: since when it is in `state`.
    pub since: String,
    pub detail: String,
    pub not_running: Vec<String>,
    /// RFC 3339: its last probe result.
    pub probed_at: String,
    /// RFC 3339: when it was last seen alive (libvirt answered, or the load balancer heard one
    /// of its servers); empty: never by this or an earlier monitor.
    pub last_seen: String,
}

/// A server as the monitor needs it: where it runs, whether it should, and, when the inventory
/// holds it in rotation (desired state ready or drain), its load balancer and pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredServer {
    pub name: String,
    pub host: String,
    /// The inventory says it runs.
    pub running: bool,
    /// `(load balancer, its kind, pool)` when it is in rotation.
    pub pooled: Option<(String, LbKind, String)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where this process's pid means something: the machine's boot id and the PID namespace
/// (`/proc/self/ns/pid`). A pid read in a container means nothing outside it, and the other
/// way round.
pub(crate) fn pid_namespace() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new();
    }
    format!("{}/{ns}", boot.trim())
}

/// Whether the lease row (pid, pid_start, its PID namespace, updated_ms, stale_after_ms) is
/// held by a current monitor: renewed within its stale time and, when its pid can be checked
/// here (same boot, same PID namespace), its process alive. A holder in another PID namespace
/// (a container) or on a record without one is judged by its renewals alone: its pid would
/// name another process here, or none.
fn lease_current(
    pid: u32,
    pid_start: &str,
    pid_ns: &str,
    updated_ms: i64,
    stale_after_ms: i64,
) -> bool {
    let fresh = now_ms() <= updated_ms.saturating_add(stale_after_ms);
    let here = pid_namespace();
    if pid_ns.is_empty() || here.is_empty() || pid_ns != here {
        return fresh;
    }
    process_alive(pid, pid_start) && fresh
}

impl Inventory {
    /// Takes the monitor lease for `me` when nobody holds it, or its holder's process is gone
    /// or stopped renewing it. Returns the other holder when it still monitors.
    pub fn monitor_lease_take(
        &self,
        me: &MonitorLease,
        stale_after_ms: u64,
        thresholds_json: &str,
    ) -> Result<Option<MonitorHolder>, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "take the monitor lease")?;
        let held: Option<(u32, String, String, String, i64, i64)> = tx
            .query_row(
                "SELECT pid, pid_start, pid_ns, token, updated_ms, stale_after_ms FROM monitor_lease WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()
            .map_err(query_err("read the monitor lease"))?;
        if let Some((pid, start, ns, token, updated, stale)) = held {
            let mine =
                pid == me.pid && start == me.pid_start && ns == me.pid_ns && token == me.token;
            if !mine && lease_current(pid, &start, &ns, updated, stale) {
                drop(tx);
                return self.monitor_holder_in(&conn);
            }
        }
        tx.execute(
            "INSERT INTO monitor_lease (id, pid, pid_start, token, via, started_at, updated_ms, stale_after_ms, frozen, thresholds, pid_ns)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, '', ?8, ?9)
             ON CONFLICT(id) DO UPDATE SET pid = ?1, pid_start = ?2, token = ?3, via = ?4,
                 started_at = ?5, updated_ms = ?6, stale_after_ms = ?7, frozen = '', thresholds = ?8,
                 pid_ns = ?9",
            params![
                me.pid,
                me.pid_start,
                me.token,
                me.via,
                now_rfc3339(),
                now_ms(),
                ms(stale_after_ms),
                thresholds_json,
                me.pid_ns
            ],
        )
        .map_err(query_err("take the monitor lease"))?;
        tx.commit().map_err(query_err("take the monitor lease"))?;
        Ok(None)
    }

    /// Writes the monitor's records and renews its lease, in one transaction — only while
    /// `me` holds the lease. Returns false (and writes nothing) when another monitor took it.
    pub fn monitor_write(
        &self,
        me: &MonitorLease,
        records: &[MonitorRecord],
        frozen: &str,
        stale_after_ms: u64,
    ) -> Result<bool, InventoryError> {
        let mut conn = self.conn();
        let tx = Self::write_tx(&mut conn, "write the monitor's records")?;
        let now = now_ms();
        let renewed = tx
            .execute(
                "UPDATE monitor_lease SET updated_ms = ?4, stale_after_ms = ?5, frozen = ?6
                 WHERE id = 1 AND pid = ?1 AND pid_start = ?2 AND token = ?3 AND pid_ns = ?7",
                params![
                    me.pid,
                    me.pid_start,
                    me.token,
                    now,
                    ms(stale_after_ms),
                    frozen,
                    me.pid_ns
                ],
            )
            .map_err(query_err("renew the monitor lease"))?;
        if renewed == 0 {
            return Ok(false);
        }
        {
            let mut upsert = tx
                .prepare(
                    "INSERT INTO host_monitor (host_id, state, since, detail, not_running, probed_at, updated_ms, stale_after_ms, last_seen)
                     SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM hosts WHERE name = ?1
                     ON CONFLICT(host_id) DO UPDATE SET state = ?2, since = ?3, detail = ?4,
                         not_running = ?5, probed_at = ?6, updated_ms = ?7, stale_after_ms = ?8,
                         last_seen = ?9",
                )
                .map_err(query_err("write the monitor's records"))?;
            for r in records {
                upsert
                    .execute(params![
                        r.host,
                        r.state.as_str(),
                        r.since,
                        r.detail,
                        r.not_running.join(","),
                        r.probed_at,
                        now,
                        ms(stale_after_ms),
                        r.last_seen
                    ])
                    .map_err(query_err("write the monitor's records"))?;
            }
        }
        tx.commit()
            .map_err(query_err("write the monitor's records"))?;
        Ok(true)
    }

    /// Gives the lease up (a monitor that stops): readers see "not monitored" at once.
    pub fn monitor_release(&self, me: &MonitorLease) -> Result<(), InventoryError> {
        self.conn()
            .execute(
                "DELETE FROM monitor_lease WHERE id = 1 AND pid = ?1 AND pid_start = ?2 AND token = ?3 AND pid_ns = ?4",
                params![me.pid, me.pid_start, me.token, me.pid_ns],
            )
            .map_err(query_err("give up the monitor lease"))?;
        Ok(())
    }

    /// The monitor holding the lease, current or not; `None` when none does.
    pub fn monitor_holder(&self) -> Result<Option<MonitorHolder>, InventoryError> {
        self.monitor_holder_in(&self.conn())
    }

    fn monitor_holder_in(
        &self,
        conn: &rusqlite::Connection,
    ) -> Result<Option<MonitorHolder>, InventoryError> {
        conn.query_row(
            "SELECT pid, pid_start, via, started_at, updated_ms, stale_after_ms, frozen, thresholds, pid_ns
             FROM monitor_lease WHERE id = 1",
            [],
            |r| {
                let (pid, start, ns): (u32, String, String) = (r.get(0)?, r.get(1)?, r.get(8)?);
                Ok(MonitorHolder {
                    pid,
                    via: r.get(2)?,
                    started_at: r.get(3)?,
                    current: lease_current(pid, &start, &ns, r.get(4)?, r.get(5)?),
                    frozen: r.get(6)?,
                    thresholds: r.get(7)?,
                })
            },
        )
        .optional()
        .map_err(query_err("read the monitor lease"))
    }

    /// Every host's last record (a monitor that starts continues from them).
    pub fn monitor_records(&self) -> Result<Vec<MonitorRecord>, InventoryError> {
        self.count_read("monitor_records");
        Ok(Self::monitor_rows(&self.conn())?
            .into_iter()
            .map(|(host, record, _)| MonitorRecord { host, ..record })
            .collect())
    }

    /// Rows of `host_monitor` with the host's name and whether the row itself is current.
    fn monitor_rows(
        conn: &rusqlite::Connection,
    ) -> Result<Vec<(String, MonitorRecord, bool)>, InventoryError> {
        let mut stmt = conn
            .prepare(
                "SELECT h.name, m.state, m.since, m.detail, m.not_running, m.probed_at,
                        m.updated_ms, m.stale_after_ms, m.last_seen
                 FROM host_monitor m JOIN hosts h ON h.id = m.host_id ORDER BY h.name",
            )
            .map_err(query_err("read the monitor's records"))?;
        let rows = stmt
            .query_map([], |r| {
                let host: String = r.get(0)?;
                let state: String = r.get(1)?;
                let not_running: String = r.get(4)?;
                let (updated, stale): (i64, i64) = (r.get(6)?, r.get(7)?);
                Ok((
                    host.clone(),
                    state,
                    MonitorRecord {
                        host,
                        // Replaced below; the CHECK constraint keeps the text one of the states.
                        state: HostState::Ready,
                        since: r.get(2)?,
                        detail: r.get(3)?,
                        not_running: not_running
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                        probed_at: r.get(5)?,
                        last_seen: r.get(8)?,
                    },
                    now_ms() <= updated.saturating_add(stale),
                ))
            })
            .map_err(query_err("read the monitor's records"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(query_err("read the monitor's records"))?;
        rows.into_iter()
            .map(|(host, state, record, fresh)| {
                let state = HostState::parse(&state).ok_or_else(|| InventoryError::Corrupt {
                    what: format!("the monitor's state of host '{host}'"),
                    source: None,
                })?;
                Ok((host, MonitorRecord { state, ..record }, fresh))
            })
            .collect()
    }

    /// What readers show per host: the last record, trusted (`state`) only while a monitor
    /// holds the lease and renewed it and the record within their stale time.
    pub(super) fn monitor_views(
        conn: &rusqlite::Connection,
    ) -> Result<HashMap<String, HostMonitor>, InventoryError> {
        let live = conn
            .query_row(
                "SELECT pid, pid_start, pid_ns, updated_ms, stale_after_ms FROM monitor_lease WHERE id = 1",
                [],
                |r| {
                    Ok(lease_current(
                        r.get(0)?,
                        &r.get::<_, String>(1)?,
                        &r.get::<_, String>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                },
            )
            .optional()
            .map_err(query_err("read the monitor lease"))?
            .unwrap_or(false);
        Ok(Self::monitor_rows(conn)?
            .into_iter()
            .map(|(host, r, fresh)| {
                (
                    host,
                    HostMonitor {
                        state: (live && fresh).then_some(r.state),
                        last_state: Some(r.state),
                        since: r.since,
                        detail: r.detail,
                        probed_at: r.probed_at,
                        last_seen: r.last_seen,
                        not_running: r.not_running,
                    },
                )
            })
            .collect())
    }

    /// Every server with its host, whether it should run, and its pool when in rotation: one
    /// query per monitor round.
    pub fn monitor_servers(&self) -> Result<Vec<MonitoredServer>, InventoryError> {
        self.count_read("monitor_servers");
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT s.name, h.name, s.state, s.lb_state, l.name, l.kind, u.lb_pool
                 FROM servers s JOIN hosts h ON h.id = s.host_id JOIN units u ON u.id = s.unit_id
                 LEFT JOIN lbs l ON l.id = u.lb_id ORDER BY s.name",
            )
            .map_err(query_err("list the monitored servers"))?;
        let rows = stmt
            .query_map([], |r| {
                let state: String = r.get(2)?;
                let lb_state: String = r.get(3)?;
                let lb: Option<String> = r.get(4)?;
                let kind: Option<String> = r.get(5)?;
                let pool: String = r.get(6)?;
                // In rotation: ready. A server in its health gate (drain, health forced down) or being
                // drained is no evidence about its host.
                let in_rotation = lb_state == "ready";
                let pooled = match (lb, kind) {
                    (Some(lb), Some(kind)) if in_rotation => match LbKind::parse(&kind) {
                        Some(kind) => Some((lb, kind, pool)),
                        None => return Ok(Err(corrupt_value("lbs", &lb, "kind", &kind))),
                    },
                    _ => None,
                };
                Ok(Ok(MonitoredServer {
                    name: r.get(0)?,
                    host: r.get(1)?,
                    running: state == "running",
                    pooled,
                }))
            })
            .map_err(query_err("list the monitored servers"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(query_err("list the monitored servers"))??);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::hosts::tests::sample_facts;
    use crate::inventory::NewHost;
    use crate::model::{BridgeName, HostName, HostStatus, LibvirtUri, PoolName};

    fn inventory_with(hosts: &[&str]) -> Inventory {
        let inv = Inventory::open_in_memory().unwrap();
        for (i, h) in hosts.iter().enumerate() {
            inv.host_insert(&NewHost {
                name: HostName::parse(h).unwrap(),
                uri: LibvirtUri::parse(&format!("test:///n{i}.xml")).unwrap(),
                pool: PoolName::parse("default").unwrap(),
                bridge: BridgeName::parse("br0").unwrap(),
                status: HostStatus::Ok,
                status_detail: String::new(),
                facts: sample_facts(),
            })
            .unwrap();
        }
        inv
    }

    fn record(host: &str, state: HostState) -> MonitorRecord {
        MonitorRecord {
            host: host.into(),
            state,
            since: "2026-01-01T00:00:00Z".into(),
            detail: format!("{host} is {state}"),
            not_running: vec!["web-2".into()],
            probed_at: "2026-01-01T00:00:01Z".into(),
            last_seen: "2026-01-01T00:00:01Z".into(),
        }
    }

    #[test]
    fn records_are_trusted_only_while_their_monitor_renews_them() {
        let inv = inventory_with(&["h1", "h2"]);
        let me = MonitorLease::mine("cli");
        assert_eq!(inv.monitor_lease_take(&me, 60_000, "{}").unwrap(), None);
        let written = inv
            .monitor_write(
                &me,
                &[
                    record("h1", HostState::Ready),
                    record("h2", HostState::Failed),
                ],
                "",
                60_000,
            )
            .unwrap();
        assert!(written);
        let hosts = inv.host_list().unwrap();
        assert_eq!(hosts[0].monitor.state, Some(HostState::Ready));
        assert_eq!(hosts[1].monitor.state, Some(HostState::Failed));
        assert_eq!(hosts[1].monitor.not_running, ["web-2"]);
        assert_eq!(hosts[1].monitor.detail, "h2 is failed");
        let one = inv.host_get(&HostName::parse("h2").unwrap()).unwrap();
        assert_eq!(one.monitor, hosts[1].monitor);

        // Not renewed within its stale time: not trusted, the last state still shown.
        inv.monitor_write(&me, &[record("h1", HostState::Ready)], "", 0)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let h1 = &inv.host_list().unwrap()[0];
        assert_eq!(h1.monitor.state, None);
        assert_eq!(h1.monitor.last_state, Some(HostState::Ready));

        // A monitor that stops gives the lease up: nothing is trusted any more.
        inv.monitor_write(&me, &[record("h1", HostState::Ready)], "", 60_000)
            .unwrap();
        assert_eq!(
            inv.host_list().unwrap()[0].monitor.state,
            Some(HostState::Ready)
        );
        inv.monitor_release(&me).unwrap();
        assert_eq!(inv.host_list().unwrap()[0].monitor.state, None);
        assert_eq!(inv.monitor_holder().unwrap(), None);
        // And cannot write without it.
        assert!(!inv
            .monitor_write(&me, &[record("h1", HostState::Ready)], "", 60_000)
            .unwrap());
    }

    #[test]
    fn one_monitor_at_a_time_and_a_dead_ones_lease_is_taken_over() {
        let inv = inventory_with(&["h1"]);
        let first = MonitorLease::mine("gui");
        assert_eq!(inv.monitor_lease_take(&first, 60_000, "{}").unwrap(), None);
        // Another monitor (same process, another token) stands by.
        let second = MonitorLease {
            token: "other".into(),
            ..MonitorLease::mine("cli")
        };
        let holder = inv
            .monitor_lease_take(&second, 60_000, "{}")
            .unwrap()
            .expect("held");
        assert_eq!((holder.via.as_str(), holder.current), ("gui", true));
        assert!(holder.to_string().starts_with("the desktop app (pid "));
        assert!(!inv
            .monitor_write(&second, &[record("h1", HostState::Failed)], "", 60_000)
            .unwrap());
        // The holder's process is gone (a pid that is not running): taken over.
        inv.execute_batch_for_test("UPDATE monitor_lease SET pid_start = 'gone'");
        assert_eq!(inv.monitor_lease_take(&second, 60_000, "{}").unwrap(), None);
        assert!(inv
            .monitor_write(
                &second,
                &[record("h1", HostState::Failed)],
                "frozen: x",
                60_000
            )
            .unwrap());
        assert_eq!(inv.monitor_holder().unwrap().unwrap().frozen, "frozen: x");
        // The first monitor learns it lost the lease when it writes next.
        assert!(!inv
            .monitor_write(&first, &[record("h1", HostState::Ready)], "", 60_000)
            .unwrap());
        assert_eq!(
            inv.monitor_records().unwrap()[0].state,
            HostState::Failed,
            "the first wrote nothing"
        );
    }

    #[test]
    fn a_holder_in_another_pid_namespace_is_judged_by_its_renewals_alone() {
        let inv = inventory_with(&["h1"]);
        // A monitor in a container: its pid means nothing here (no such process, or another
        // one). While it renews, this one stands by.
        let contained = MonitorLease {
            pid: 999_999,
            pid_start: "1".into(),
            pid_ns: "another-boot/pid:[4026531999]".into(),
            token: "c".into(),
            via: "cli".into(),
        };
        assert_eq!(
            inv.monitor_lease_take(&contained, 60_000, "{}").unwrap(),
            None
        );
        let here = MonitorLease::mine("gui");
        assert!(!here.pid_ns.is_empty(), "this process's namespace is known");
        let holder = inv.monitor_lease_take(&here, 60_000, "{}").unwrap();
        assert!(
            holder
                .as_ref()
                .is_some_and(|h| h.current && h.pid == 999_999),
            "{holder:?}"
        );
        // Once it stops renewing, it is taken over.
        inv.execute_batch_for_test("UPDATE monitor_lease SET updated_ms = 0");
        assert_eq!(inv.monitor_lease_take(&here, 60_000, "{}").unwrap(), None);
        assert!(!inv
            .monitor_write(&contained, &[record("h1", HostState::Failed)], "", 60_000)
            .unwrap());
        // The same pid in this namespace is checked: not running here, taken over at once.
        let dead_here = MonitorLease {
            pid_ns: pid_namespace(),
            ..contained
        };
        inv.execute_batch_for_test("DELETE FROM monitor_lease");
        inv.monitor_lease_take(&dead_here, 60_000, "{}").unwrap();
        assert_eq!(inv.monitor_lease_take(&here, 60_000, "{}").unwrap(), None);
    }

    #[test]
    fn a_removed_hosts_record_goes_with_it() {
        let inv = inventory_with(&["h1"]);
        let me = MonitorLease::mine("cli");
        inv.monitor_lease_take(&me, 60_000, "{}").unwrap();
        inv.monitor_write(&me, &[record("h1", HostState::Ready)], "", 60_000)
            .unwrap();
        // The record does not count as something that uses the host.
        inv.host_delete(&HostName::parse("h1").unwrap()).unwrap();
        assert!(inv.monitor_records().unwrap().is_empty());
        // A record of a host that is not in the inventory is not written.
        inv.monitor_write(&me, &[record("gone", HostState::Ready)], "", 60_000)
            .unwrap();
        assert!(inv.monitor_records().unwrap().is_empty());
    }
}
