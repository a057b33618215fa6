//! Load balancers registered like hosts (`flotillactl lb add|list|show|check|remove`), the
//! driver behind each, and `reconcile`: the inventory holds what every member should be, and
//! reconcile puts back what the load balancer lost (HAProxy forgets dynamic servers on reload).

use super::{Engine, OpError};
use crate::inventory::LbInstance;
use crate::lb::caddy::CaddyAdmin;
use crate::lb::haproxy::{CheckSettings, Endpoint, HaproxyRuntime};
use crate::lb::{
    check_name, redact_credentials, LbError, LoadBalancer, MemberState, MemberStats, PoolCounters,
};
use crate::model::{quote_input, HostName, LbKind, ValidationError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddrV4;
use std::path::PathBuf;

/// How to reach a load balancer, as the user gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LbTarget {
    /// HAProxy's runtime API on a unix socket.
    HaproxySocket { path: String },
    /// HAProxy's runtime API on TCP, `host:port`.
    HaproxyAddr { addr: String },
    /// Caddy's admin API and the `@id` of the reverse_proxy handler Flotilla manages.
    Caddy { admin: String, route_id: String },
}

/// A driver for one registered load balancer.
#[derive(Debug, Clone)]
pub enum LbDriver {
    Haproxy(HaproxyRuntime),
    Caddy(CaddyAdmin),
}

impl LbDriver {
    pub fn of(lb: &LbInstance) -> Result<Self, OpError> {
        match lb.kind {
            LbKind::Haproxy => {
                let endpoint = if let Some(p) = lb.endpoint.strip_prefix("unix:") {
                    Endpoint::Unix(PathBuf::from(p))
                } else if let Some(a) = lb.endpoint.strip_prefix("tcp:") {
                    Endpoint::Tcp(a.to_owned())
                } else {
                    return Err(bad_endpoint(&lb.endpoint).into());
                };
                Ok(Self::Haproxy(HaproxyRuntime::new(endpoint)))
            }
            LbKind::Caddy => Ok(Self::Caddy(CaddyAdmin::new(&lb.endpoint, &lb.route_id)?)),
        }
    }

    /// Health checks for members added from now on (HAProxy; Caddy checks per route).
    pub fn with_checks(mut self, checks: CheckSettings) -> Self {
        if let Self::Haproxy(h) = &mut self {
            h.checks = checks;
        }
        self
    }

    /// Caddy has no drain state: a drained member is removed and given a grace period.
    pub fn has_drain(&self) -> bool {
        matches!(self, Self::Haproxy(_))
    }

    /// The load balancer runs the definition's health check itself (HAProxy); otherwise
    /// Flotilla asks the server directly.
    pub fn reports_health(&self) -> bool {
        matches!(self, Self::Haproxy(_))
    }

    /// Makes the load balancer forget the member's last health result (see HAProxy's
    /// `set server … health down`); Caddy keeps none.
    pub async fn member_mark_down(&self, pool: &str, name: &str) -> Result<(), LbError> {
        match self {
            Self::Haproxy(h) => h.member_mark_down(pool, name).await,
            Self::Caddy(_) => Ok(()),
        }
    }

    /// The pool's traffic counters; Caddy keeps none (`None`).
    pub async fn pool_counters(&self, pool: &str) -> Result<Option<PoolCounters>, LbError> {
        match self {
            Self::Haproxy(h) => h.pool_counters(pool).await.map(Some),
            Self::Caddy(_) => Ok(None),
        }
    }

    pub async fn pool_exists(&self, pool: &str) -> Result<bool, LbError> {
        match self {
            Self::Haproxy(h) => h.pool_exists(pool).await,
            Self::Caddy(c) => c.pool_exists(pool).await,
        }
    }
    pub async fn members(&self, pool: &str) -> Result<Vec<MemberStats>, LbError> {
        match self {
            Self::Haproxy(h) => h.members(pool).await,
            Self::Caddy(c) => c.members(pool).await,
        }
    }
    pub async fn member_add(
        &self,
        pool: &str,
        name: &str,
        address: SocketAddrV4,
    ) -> Result<(), LbError> {
        match self {
            Self::Haproxy(h) => h.member_add(pool, name, address).await,
            Self::Caddy(c) => c.member_add(pool, name, address).await,
        }
    }
    pub async fn member_set(
        &self,
        pool: &str,
        name: &str,
        address: SocketAddrV4,
        state: MemberState,
    ) -> Result<(), LbError> {
        match self {
            Self::Haproxy(h) => h.member_set(pool, name, state).await,
            Self::Caddy(c) => c.member_set_at(pool, address, state).await,
        }
    }
    pub async fn member_remove(
        &self,
        pool: &str,
        name: &str,
        address: SocketAddrV4,
    ) -> Result<bool, LbError> {
        match self {
            Self::Haproxy(h) => h.member_remove(pool, name).await,
            Self::Caddy(c) => c.member_remove_at(pool, address).await,
        }
    }
}

fn bad_endpoint(endpoint: &str) -> ValidationError {
    ValidationError::new(
        "endpoint",
        format!(
            "{} is not unix:/path or tcp:host:port",
            quote_input(&redact_credentials(endpoint))
        ),
    )
}

/// A registered load balancer as the front doors show it: an admin URL's password is `***`.
/// The inventory keeps the real one (it is private to its user: see `Inventory::open_in`).
fn shown(mut lb: LbInstance) -> LbInstance {
    lb.endpoint = redact_credentials(&lb.endpoint);
    lb
}

/// What `lb check` found.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct LbCheck {
    pub lb: LbInstance,
    /// Pools of units bound to it and whether they exist on the load balancer.
    pub pools: Vec<(String, bool)>,
    pub members: Vec<MemberStats>,
    /// Caddy has no drain state; the UI says so.
    pub has_drain: bool,
    /// How the load balancer checks the members' health, in words: over HTTP (readiness
    /// proven by the application), over TCP only, or not seen (no member with a check).
    pub checks: String,
}

/// What a reconcile changed.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ReconcileReport {
    /// Members that were missing and were added back.
    pub added: Vec<String>,
    /// Members whose state was set back to what the inventory says.
    pub corrected: Vec<String>,
    pub unchanged: u32,
    /// Units left alone because an operation holds them (it sets their members itself).
    pub busy: Vec<BusyUnit>,
}

/// A unit a reconcile skipped: the operation that holds its lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct BusyUnit {
    pub unit: String,
    pub operation: i64,
    /// The operation's kind (`deploy`, `stop`, …).
    pub kind: String,
}

impl std::fmt::Display for BusyUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unit {} was skipped: it is busy with operation #{} ({}), which sets its members itself; if that operation was interrupted, resume or unwind it (flotillactl op list), then reconcile again",
            self.unit, self.operation, self.kind
        )
    }
}

impl Engine {
    pub async fn lb_add(&self, name: &str, target: &LbTarget) -> Result<LbInstance, OpError> {
        let outcome = self.lb_add_inner(name, target).await;
        self.audit("lb.add", &format!("lb/{name}"), &outcome);
        outcome
    }

    async fn lb_add_inner(&self, name: &str, target: &LbTarget) -> Result<LbInstance, OpError> {
        HostName::parse(name.trim())?;
        let (kind, endpoint, route_id) = match target {
            LbTarget::HaproxySocket { path } => {
                let p = path.trim();
                if !p.starts_with('/') || p.len() > 1024 || p.chars().any(char::is_control) {
                    return Err(ValidationError::new(
                        "haproxy-socket",
                        format!(
                            "{} must be an absolute path",
                            quote_input(&redact_credentials(p))
                        ),
                    )
                    .into());
                }
                (LbKind::Haproxy, format!("unix:{p}"), String::new())
            }
            LbTarget::HaproxyAddr { addr } => {
                let a = addr.trim();
                let ok = a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
                    && a.len() <= 255
                    && !a
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || c == '/');
                if !ok {
                    return Err(ValidationError::new(
                        "haproxy-addr",
                        format!("{} is not HOST:PORT", quote_input(&redact_credentials(a))),
                    )
                    .into());
                }
                (LbKind::Haproxy, format!("tcp:{a}"), String::new())
            }
            LbTarget::Caddy { admin, route_id } => {
                // Stored as used: credentials percent-encoded in full, so that every place
                // that shows the URL finds and masks the password (`canonical_admin`).
                let admin = crate::lb::caddy::canonical_admin(admin.trim())?;
                CaddyAdmin::new(&admin, route_id.trim())?;
                (LbKind::Caddy, admin, route_id.trim().to_owned())
            }
        };
        let lb = LbInstance {
            name: name.trim().to_owned(),
            kind,
            endpoint,
            route_id,
            added_at: String::new(),
        };
        // Refuse one that cannot be reached now: the admin fixes the address while it is fresh.
        let driver = LbDriver::of(&lb)?;
        driver
            .members(probe_pool(&driver, &lb))
            .await
            .or_else(|e| match e {
                LbError::NoPool { .. } => Ok(Vec::new()),
                e => Err(e),
            })?;
        Ok(shown(self.inventory.lb_insert(
            &lb.name,
            lb.kind,
            &lb.endpoint,
            &lb.route_id,
        )?))
    }

    pub fn lb_list(&self) -> Result<Vec<LbInstance>, OpError> {
        Ok(self.inventory.lb_list()?.into_iter().map(shown).collect())
    }

    pub fn lb_show(&self, name: &str) -> Result<LbInstance, OpError> {
        Ok(shown(self.inventory.lb_get(name)?))
    }

    pub fn lb_remove(&self, name: &str) -> Result<(), OpError> {
        let outcome = self.inventory.lb_delete(name).map_err(OpError::from);
        self.audit("lb.remove", &format!("lb/{name}"), &outcome);
        outcome
    }

    /// Connects and reports the pools of the units bound to it and their members.
    pub async fn lb_check(&self, name: &str) -> Result<LbCheck, OpError> {
        let lb = self.inventory.lb_get(name)?;
        let driver = LbDriver::of(&lb)?;
        let mut pools = Vec::new();
        let mut members = Vec::new();
        let mut names: Vec<String> = self
            .inventory
            .unit_list()?
            .into_iter()
            .filter(|u| u.lb.as_deref() == Some(name))
            .map(|u| u.lb_pool)
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            names.push(probe_pool(&driver, &lb).to_owned());
        }
        for pool in names {
            let exists = driver.pool_exists(&pool).await?;
            if exists {
                members.extend(driver.members(&pool).await?);
            }
            pools.push((pool, exists));
        }
        let mut layers: Vec<&str> = members
            .iter()
            .filter_map(|m| crate::lb::check_layer(&m.check))
            .collect();
        layers.sort_unstable();
        layers.dedup();
        let checks = match layers.as_slice() {
            [] if driver.reports_health() => "not seen: no member has been checked yet".to_owned(),
            [] => "the load balancer reports no health checks (Flotilla checks the servers itself)".to_owned(),
            ["http"] => "over HTTP: a member is ready when the application answers".to_owned(),
            l if l.contains(&"http") => format!("mixed ({}): some members are checked over TCP only", l.join(", ")),
            l => format!("over {} only: a member counts as ready once its port is open, before the application answers; set `option httpchk GET <health path>` on the backend (docs/haproxy.md)", l.join(", ").to_uppercase()),
        };
        Ok(LbCheck {
            lb: shown(lb),
            pools,
            members,
            has_drain: driver.has_drain(),
            checks,
        })
    }

    /// Puts every member of every unit bound to `name` into the state the inventory holds.
    pub async fn lb_reconcile(&self, name: &str) -> Result<ReconcileReport, OpError> {
        let outcome = self.lb_reconcile_inner(name).await;
        self.audit("lb.reconcile", &format!("lb/{name}"), &outcome);
        outcome
    }

    /// Each unit is reconciled under its lock, as operations run: a unit an operation holds
    /// is skipped and reported (that operation puts its members right; changing them under it
    /// would undo its drain or put back a member it is removing).
    async fn lb_reconcile_inner(&self, name: &str) -> Result<ReconcileReport, OpError> {
        let lb = self.inventory.lb_get(name)?;
        let units: Vec<String> = self
            .inventory
            .unit_list()?
            .into_iter()
            .filter(|u| u.lb.as_deref() == Some(name))
            .map(|u| u.name)
            .collect();
        // Whatever happened, no lock of this reconcile outlives it (the runner's end).
        self.op_run("lb.reconcile", &format!("lb/{name}"), |op| {
            self.reconcile_locked(op, &lb, &units)
        })
        .await
    }

    /// One step per unit, `reconcile unit NAME`, under the unit's lock; no undo (it puts the
    /// members as the inventory says: what it changed was wrong before).
    async fn reconcile_locked(
        &self,
        op: i64,
        lb: &LbInstance,
        units: &[String],
    ) -> Result<ReconcileReport, OpError> {
        use super::exec::Sequence;
        use crate::inventory::InventoryError;
        let mut seq: Sequence<()> = Sequence::new(self.journal(op));
        let mut report = ReconcileReport::default();
        for name in units {
            let step = format!("reconcile unit {name}");
            let holder = match self.inventory.unit_lock(name, op) {
                Ok(h) => h,
                // Deleted since the list was read: nothing to reconcile.
                Err(InventoryError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(holder) = holder {
                let busy = BusyUnit {
                    unit: name.clone(),
                    operation: holder,
                    kind: self
                        .inventory
                        .operation_kind(holder)?
                        .unwrap_or_else(|| "unknown".into()),
                };
                seq.journal.passed(&step, &busy.to_string())?;
                report.busy.push(busy);
                continue;
            }
            let ran = seq
                .step_noted(
                    &step,
                    None,
                    // Read under the lock: an operation that just ended changed what members
                    // should be.
                    || async {
                        let unit = self.inventory.unit_get(name)?;
                        self.reconcile_unit(&unit, lb).await
                    },
                    |r| {
                        format!(
                            "put back: {}; corrected: {}; {} right",
                            r.added.join(", "),
                            r.corrected.join(", "),
                            r.unchanged
                        )
                    },
                )
                .await;
            self.inventory.unit_unlock(op)?;
            let r = ran?;
            report.added.extend(r.added);
            report.corrected.extend(r.corrected);
            report.unchanged += r.unchanged;
        }
        Ok(report)
    }

    /// Makes the load balancer hold what the inventory says for `unit`'s servers.
    pub(crate) async fn reconcile_unit(
        &self,
        unit: &crate::inventory::Unit,
        lb: &LbInstance,
    ) -> Result<ReconcileReport, OpError> {
        let mut report = ReconcileReport::default();
        let (driver, port) = self.unit_lb_driver(unit, lb)?;
        let pool = unit.lb_pool.as_str();
        if !driver.pool_exists(pool).await? {
            return Err(LbError::NoPool {
                pool: pool.to_owned(),
            }
            .into());
        }
        let live = driver.members(pool).await?;
        for s in &unit.servers {
            let Some(want) = lb_state_of(&s.lb_state) else {
                continue;
            };
            let addr = member_address(&s.address, port)?;
            let found = live
                .iter()
                .find(|m| m.name == s.name || m.address == addr.to_string());
            if !driver.has_drain() {
                // Caddy: a member in rotation is in the list, any other is not.
                let present = found.is_some();
                match (want, present) {
                    (MemberState::Ready, false) => {
                        driver.member_set(pool, &s.name, addr, want).await?;
                        report.added.push(s.name.clone());
                    }
                    (MemberState::Drain | MemberState::Maint, true) => {
                        driver.member_set(pool, &s.name, addr, want).await?;
                        report.corrected.push(s.name.clone());
                    }
                    _ => report.unchanged += 1,
                }
                continue;
            }
            match found {
                None => {
                    driver.member_add(pool, &s.name, addr).await?;
                    driver.member_set(pool, &s.name, addr, want).await?;
                    report.added.push(s.name.clone());
                }
                Some(m) if m.admin != want => {
                    driver.member_set(pool, &s.name, addr, want).await?;
                    report.corrected.push(s.name.clone());
                }
                Some(_) => report.unchanged += 1,
            }
        }
        Ok(report)
    }

    /// Refuses to bind `unit` to the upstream list `pool` of the Caddy behind `lb` when another
    /// unit uses that list (through this registration or another one of the same Caddy): each
    /// would put the other's servers in and out of rotation, and delete them.
    pub(crate) fn caddy_list_free(
        &self,
        unit: &str,
        lb: &LbInstance,
        pool: &str,
    ) -> Result<(), OpError> {
        if lb.kind != LbKind::Caddy {
            return Ok(());
        }
        let key = crate::lb::caddy::instance_key(&lb.endpoint);
        let lbs = self.inventory.lb_list()?;
        for other in self.inventory.unit_list()? {
            let Some(other_lb) = other
                .lb
                .as_ref()
                .and_then(|n| lbs.iter().find(|l| &l.name == n))
            else {
                continue;
            };
            if other.name != unit
                && other_lb.kind == LbKind::Caddy
                && other.lb_pool == pool
                && crate::lb::caddy::instance_key(&other_lb.endpoint) == key
            {
                return Err(ValidationError::new(
                    "pool",
                    format!(
                        "unit {} already uses the upstream list of the reverse_proxy handler @id {pool} on the Caddy at {} (load balancer {}); two units in one list would take each other's servers in and out of rotation. Give this unit a handler of its own: tag another reverse_proxy in Caddy's config with its own @id and choose it as the unit's pool (--pool)",
                        other.name,
                        redact_credentials(&other_lb.endpoint),
                        other_lb.name
                    ),
                )
                .into());
            }
        }
        Ok(())
    }

    /// The driver for a unit's load balancer, with the definition's health checks, and the
    /// member port.
    pub(crate) fn unit_lb_driver(
        &self,
        unit: &crate::inventory::Unit,
        lb: &LbInstance,
    ) -> Result<(LbDriver, u16), OpError> {
        let uv = unit
            .current()
            .ok_or_else(|| crate::inventory::InventoryError::NotFound {
                kind: "unit version",
                name: format!("{}:v{}", unit.name, unit.current_version),
            })?;
        let def = self.def_parsed(&uv.definition, uv.definition_version)?;
        let checks = CheckSettings {
            inter_ms: *def.health.interval_s.get_ref() * 1000,
            rise: *def.health.rise.get_ref(),
            fall: *def.health.fall.get_ref(),
            slowstart_ms: 2000,
        };
        Ok((
            LbDriver::of(lb)?.with_checks(checks),
            *def.server.port.get_ref(),
        ))
    }
}

/// The pool to probe when checking a load balancer with no unit yet.
fn probe_pool<'a>(driver: &LbDriver, lb: &'a LbInstance) -> &'a str {
    match driver {
        LbDriver::Caddy(_) => &lb.route_id,
        LbDriver::Haproxy(_) => "flotilla-probe",
    }
}

pub(crate) fn lb_state_of(value: &str) -> Option<MemberState> {
    match value {
        "ready" => Some(MemberState::Ready),
        "drain" => Some(MemberState::Drain),
        "maint" => Some(MemberState::Maint),
        _ => None,
    }
}

pub(crate) fn member_address(address: &str, port: u16) -> Result<SocketAddrV4, OpError> {
    let ip = address.parse().map_err(|_| {
        ValidationError::new(
            "address",
            format!("{} is not an IPv4 address", quote_input(address)),
        )
    })?;
    Ok(SocketAddrV4::new(ip, port))
}

/// A pool name as the load balancer accepts it.
pub fn check_pool(pool: &str) -> Result<(), OpError> {
    check_name("pool", pool).map_err(|e| ValidationError::new("pool", e.to_string()).into())
}
