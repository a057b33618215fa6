//! Management units: create, plan, deploy, start, stop, restart, scale, delete.
//!
//! An operation is a plan of named steps per server (`plan::server_steps`), run in parallel
//! across servers with a bound per host, in batches of the rollout policy's `max_unavailable`
//! for stop and restart. Every transition is journaled before it is reported. Steps are
//! idempotent: names, MACs and addresses are chosen when servers are registered, so a retry
//! targets the same objects, and undo treats "already gone" as done.
//!
//! When a step fails, no new step starts; every server's completed steps (the failed one
//! included: it may have half-happened) are undone in reverse and the operation ends with a
//! report of exactly what failed and what was undone — the unit is as before. Steps after
//! which there is no way back (undefine, delete volumes, forget) are never undone: an operation
//! that fails after them is finished by running it again.
//!
//! After Flotilla itself dies mid-operation the journal still says `running`; the next start
//! lists it (`interrupted_operations`) and offers `resume` (run it again: steps are idempotent)
//! or `unwind` (undo what the journal says was done).

use super::builder::tempfile_dir;
use super::lbs::{member_address, LbDriver};
use super::{Engine, OpError};
use crate::guest::{payload_runcmd, write_seed_disk, NicConfig, SeedSpec};
use crate::hypervisor::{BootSpec, DiskFormat, DiskSpec, DomainSpec, DomainType, NicSpec};
use crate::inventory::{InventoryError, NewServer, NewUnit, Server, StepStatus, Unit, UnitVersion};
use crate::lb::MemberState;
use crate::model::definition::{render_template, Definition};
use crate::model::{
    check_server_address, quote_input, AddressRange, BootMode, Firmware, Host, HostName, ImageRef,
    ImageVersion, Ipv4Cidr, MacAddr, NamePattern, RolloutPolicy, ServerSize, ServerState,
    ValidationError, MAX_SERVERS,
};
use crate::plan::{self, HostRoom, OpKind, Step};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Servers started at once on one host.
const PER_HOST: usize = 4;

/// A server named in the unit wizard or on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerForm {
    pub name: String,
    pub address: String,
    /// Empty: placed automatically.
    pub host: String,
}

/// What the unit wizard (or `flotillactl unit create`) asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitForm {
    pub name: String,
    /// `IMAGE:VERSION` (or `IMAGE` for its newest version).
    pub image: String,
    /// `DEFINITION:VERSION` (or `DEFINITION` for its newest version).
    pub definition: String,
    /// Default: the definition's `[resources]`, else 1 CPU and 256 MiB.
    pub size: Option<ServerSize>,
    /// Bulk registration: this many servers named by `name_pattern`, addresses from
    /// `addresses`, on `hosts` (empty: all hosts with a network).
    pub count: u32,
    pub name_pattern: String,
    pub addresses: String,
    pub hosts: Vec<String>,
    /// Servers named one by one (in addition to the bulk ones).
    pub servers: Vec<ServerForm>,
    pub lb: Option<String>,
    /// The load balancer's backend (HAProxy) or route `@id` (Caddy); default: Caddy's route
    /// id, or `be_<unit>`.
    pub lb_pool: Option<String>,
    pub policy: Option<RolloutPolicy>,
}

/// What the wizard's review page and `unit create` show after creating.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct UnitCreated {
    pub unit: Unit,
    pub warnings: Vec<String>,
}

/// An operation the admin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum UnitAction {
    Deploy,
    Start { servers: Vec<String> },
    Stop { servers: Vec<String>, force: bool },
    Restart { servers: Vec<String>, force: bool },
    Scale { count: u32 },
    Delete { force: bool },
}

impl UnitAction {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Start { .. } => "start",
            Self::Stop { .. } => "stop",
            Self::Restart { .. } => "restart",
            Self::Scale { .. } => "scale",
            Self::Delete { .. } => "delete",
        }
    }
    fn force(&self) -> bool {
        matches!(
            self,
            Self::Stop { force: true, .. }
                | Self::Restart { force: true, .. }
                | Self::Delete { force: true }
        )
    }
}

/// The stored arguments of an operation: enough to resume it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpArgs {
    unit: String,
    action: UnitAction,
    /// Servers this operation registered (scale out): forgotten again when it is undone.
    #[serde(default)]
    registered: Vec<String>,
    /// States of the servers it touches before it began: what an unwind restores.
    #[serde(default)]
    before: Vec<(String, ServerState, Option<u32>)>,
}

/// One server's part of a plan.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerPlan {
    pub server: String,
    pub host: String,
    pub address: String,
    /// `new` when the operation registers it (scale out).
    pub note: String,
    pub steps: Vec<Step>,
}

/// The dry run of an operation: the ordered steps per server.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct OpPlan {
    pub unit: String,
    pub action: String,
    /// Servers taken out of service at once (stop, restart).
    pub batch_size: u32,
    pub servers: Vec<ServerPlan>,
    pub warnings: Vec<String>,
}

/// A step transition, as the progress bars and the GUI see it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct StepEvent {
    pub operation: i64,
    pub server: String,
    pub step: Step,
    pub status: StepStatus,
    pub detail: String,
    /// Steps of this server finished so far, of `total`.
    pub done: u32,
    pub total: u32,
}

pub type StepFn = Arc<dyn Fn(StepEvent) + Send + Sync>;

/// What happened to one server.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerOutcome {
    pub server: String,
    pub host: String,
    pub done: Vec<Step>,
    /// The step that failed and its error.
    pub failed: Option<(Step, String)>,
    pub undone: Vec<Step>,
    /// Undo steps that failed themselves (what is left to clean up by hand).
    pub undo_failed: Vec<(Step, String)>,
}

/// The end of an operation.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct OpReport {
    pub operation: i64,
    pub unit: String,
    pub action: String,
    pub ok: bool,
    pub servers: Vec<ServerOutcome>,
    pub warnings: Vec<String>,
}

impl std::fmt::Display for OpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            return write!(
                f,
                "{} of unit {} finished (operation #{})",
                self.action, self.unit, self.operation
            );
        }
        write!(
            f,
            "{} of unit {} failed (operation #{})",
            self.action, self.unit, self.operation
        )?;
        for s in &self.servers {
            if let Some((step, e)) = &s.failed {
                write!(
                    f,
                    "\n  server {} (host {}) failed at step {}: {e}",
                    s.server,
                    s.host,
                    step.as_str()
                )?;
            }
        }
        let undone: Vec<String> = self
            .servers
            .iter()
            .filter(|s| !s.undone.is_empty())
            .map(|s| {
                let steps: Vec<&str> = s.undone.iter().map(|s| s.as_str()).collect();
                format!("{}: {}", s.server, steps.join(", "))
            })
            .collect();
        if undone.is_empty() {
            write!(f, "\n  nothing had to be undone")?;
        } else {
            write!(f, "\n  undone: {}", undone.join("; "))?;
        }
        for s in &self.servers {
            for (step, e) in &s.undo_failed {
                write!(
                    f,
                    "\n  could not undo {} of {}: {e}",
                    step.as_str(),
                    s.server
                )?;
            }
            if s.failed.is_some() && s.done.iter().any(|d| d.irreversible()) {
                write!(
                    f,
                    "\n  {} was already partly removed; run the operation again to finish it",
                    s.server
                )?;
            }
        }
        Ok(())
    }
}

/// A test hook: make a step fail (after doing its work) or make the process "die" there.
/// Set with [`Engine::inject_fault`] or `FLOTILLA_FAULT=fail|crash:SERVER|*:STEP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub crash: bool,
    /// `*` for any server.
    pub server: String,
    pub step: Step,
}

impl Fault {
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        let crash = match parts.next()? {
            "fail" => false,
            "crash" => true,
            _ => return None,
        };
        Some(Self {
            crash,
            server: parts.next()?.to_owned(),
            step: Step::parse(parts.next()?)?,
        })
    }
}

/// A server as its host and the load balancer see it now.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerLive {
    pub server: String,
    /// `running`, `shut off`, `not defined`, or why it is unknown.
    pub power: String,
    /// The load balancer's status text for its member.
    pub lb_status: String,
    /// Up with its last health check passed; `None` when not known.
    pub healthy: Option<bool>,
}

/// An interrupted operation, as the start screen and `flotillactl op list` show it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct Interrupted {
    pub operation: i64,
    pub kind: String,
    pub unit: String,
    /// Steps the journal says were started or done.
    pub steps_done: u32,
}

/// Everything the steps of one operation share.
struct Ctx {
    op: i64,
    unit: Unit,
    uv: UnitVersion,
    image: ImageVersion,
    def: Definition,
    hosts: HashMap<String, Host>,
    lb: Option<(LbDriver, String)>,
    port: u16,
    force: bool,
    policy: RolloutPolicy,
    progress: StepFn,
    abort: AtomicBool,
    /// One at a time per host for shared objects (master copy, payload).
    host_locks: HashMap<String, tokio::sync::Mutex<()>>,
    host_slots: HashMap<String, tokio::sync::Semaphore>,
}

impl Ctx {
    fn host(&self, name: &str) -> Result<&Host, OpError> {
        self.hosts.get(name).ok_or_else(|| {
            InventoryError::NotFound {
                kind: "host",
                name: name.to_owned(),
            }
            .into()
        })
    }
    fn payload_volume(&self) -> String {
        format!("{}-u{}-payload.img", self.unit.name, self.uv.version)
    }
}

fn disk_volume(server: &str) -> String {
    format!("{server}-disk.qcow2")
}
fn seed_volume(server: &str) -> String {
    format!("{server}-seed.img")
}
fn serial_volume(server: &str) -> String {
    format!("{server}.serial")
}

/// A MAC in the `52:54:00` range from the server's name; `attempt` moves to another on a
/// collision.
fn server_mac(unit: &str, server: &str, attempt: u32) -> MacAddr {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{unit}/{server}/{attempt}").as_bytes());
    MacAddr::new([0x52, 0x54, 0x00, h[0], h[1], h[2]])
}

fn parse_ref(field: &'static str, value: &str) -> Result<(String, Option<u32>), OpError> {
    let v = value.trim();
    let (name, version) = match v.split_once(':') {
        Some((n, ver)) => {
            let ver = ver.trim_start_matches('v');
            let ver: u32 = ver.parse().map_err(|_| {
                ValidationError::new(
                    field,
                    format!("{} is not NAME or NAME:VERSION", quote_input(value)),
                )
            })?;
            (n, Some(ver))
        }
        None => (v, None),
    };
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty").into());
    }
    Ok((name.to_owned(), version))
}

impl Engine {
    /// Arms a test fault (see [`Fault`]).
    pub fn inject_fault(&self, fault: Option<Fault>) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// A test hook: run every step twice, to show the steps are idempotent.
    pub fn repeat_steps(&self, on: bool) {
        self.repeat.store(on, Ordering::SeqCst);
    }

    fn fault_at(&self, server: &str, step: Step) -> Option<bool> {
        let f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .filter(|f| f.step == step && (f.server == "*" || f.server == server))
            .map(|f| f.crash)
    }

    pub fn unit_list(&self) -> Result<Vec<Unit>, OpError> {
        Ok(self.inventory.unit_list()?)
    }

    pub fn unit_show(&self, name: &str) -> Result<Unit, OpError> {
        Ok(self.inventory.unit_get(name.trim())?)
    }

    /// Sets a host's network (servers' addresses must lie in it), gateway and domain type
    /// override (`kvm`, `qemu`, or empty for what its capabilities offer).
    pub fn host_set_network(
        &self,
        host: &str,
        network: &str,
        gateway: &str,
        domain_type: &str,
    ) -> Result<Host, OpError> {
        let outcome = (|| {
            let name = HostName::parse(host.trim())?;
            let network = network.trim();
            let net = if network.is_empty() {
                None
            } else {
                Some(
                    Ipv4Cidr::parse(network)
                        .map_err(|e| ValidationError::new("network", e.problem))?,
                )
            };
            let gateway = gateway.trim();
            if !gateway.is_empty() {
                let gw: Ipv4Addr = gateway.parse().map_err(|_| {
                    ValidationError::new(
                        "gateway",
                        format!("{} is not an IPv4 address", quote_input(gateway)),
                    )
                })?;
                match net {
                    Some(n) if n.contains(gw) => {}
                    _ => {
                        return Err(ValidationError::new(
                            "gateway",
                            format!("{gw} is outside the network {network}"),
                        )
                        .into())
                    }
                }
            }
            let dt = domain_type.trim();
            if !matches!(dt, "" | "kvm" | "qemu") {
                return Err(ValidationError::new(
                    "domain-type",
                    format!("{} must be kvm, qemu or empty (automatic)", quote_input(dt)),
                )
                .into());
            }
            let servers = self
                .inventory
                .server_list()?
                .into_iter()
                .filter(|s| s.host == name.as_str());
            for s in servers {
                let inside =
                    net.is_some_and(|n| s.address.parse::<Ipv4Addr>().is_ok_and(|a| n.contains(a)));
                if !inside {
                    return Err(ValidationError::new(
                        "network",
                        format!(
                            "server {} on this host has address {}, outside {}",
                            s.name,
                            s.address,
                            if network.is_empty() {
                                "(none)"
                            } else {
                                network
                            }
                        ),
                    )
                    .into());
                }
            }
            let canonical = net.map(|n| n.to_string()).unwrap_or_default();
            self.inventory
                .host_set_network(name.as_str(), &canonical, gateway, dt)?;
            self.host_show(name.as_str())
        })();
        self.audit("host.set", &format!("host/{host}"), &outcome);
        outcome
    }

    /// Registers a unit: its first version and its servers. Creates nothing on any host.
    pub fn unit_create(&self, form: &UnitForm) -> Result<UnitCreated, OpError> {
        let outcome = self.unit_create_inner(form);
        self.audit(
            "unit.create",
            &format!("unit/{}", form.name.trim()),
            &outcome,
        );
        outcome
    }

    /// Checks a form and works out its servers (names, addresses, MACs, hosts) without
    /// writing anything.
    fn unit_validate(&self, form: &UnitForm) -> Result<(NewUnit, Vec<String>), OpError> {
        let name = HostName::parse(form.name.trim())?.as_str().to_owned();
        if self.inventory.unit_get(&name).is_ok() {
            return Err(InventoryError::Duplicate { kind: "unit", name }.into());
        }
        let image = {
            let (n, v) = parse_ref("image", &form.image)?;
            let r = ImageRef::parse(&n)?;
            let v = match v {
                Some(v) => self.inventory.image_version_get(&r.image, v)?,
                None => self.inventory.image_version_latest(&r.image)?,
            };
            (v.image.to_string(), v.version)
        };
        let (def_name, def_version) = {
            let (n, v) = parse_ref("definition", &form.definition)?;
            let v = self.def_show(&n, v)?.version;
            (v.name, v.version)
        };
        let def = self.def_parsed(&def_name, def_version)?;
        let size = form.size.unwrap_or(ServerSize {
            cpus: def.resources.cpus.as_ref().map_or(1, |c| *c.get_ref()),
            memory_mib: def
                .resources
                .memory_mib
                .as_ref()
                .map_or(256, |m| u32::try_from(*m.get_ref()).unwrap_or(u32::MAX)),
            disk_gib: def.resources.disk_gib.as_ref().map_or(0, |d| *d.get_ref()),
        });
        size.validate()?;
        let policy = form.policy.unwrap_or_default();
        policy.validate()?;
        let lb = match &form.lb {
            Some(lb) if !lb.trim().is_empty() => {
                let inst = self.inventory.lb_get(lb.trim())?;
                let pool = form
                    .lb_pool
                    .as_deref()
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        if inst.kind == "caddy" {
                            inst.route_id.clone()
                        } else {
                            format!("be_{name}")
                        }
                    });
                super::lbs::check_pool(&pool)?;
                Some((inst.name, pool))
            }
            _ => None,
        };
        let (servers, pattern, addresses) = self.servers_for(&name, form, size)?;
        if servers.is_empty() {
            return Err(ValidationError::new(
                "servers",
                "a unit needs at least one server: give a count with a name pattern and addresses, or name servers one by one",
            )
            .into());
        }
        let hosts: Vec<&str> = servers.iter().map(|s| s.host.as_str()).collect();
        let warnings = plan::single_host_warning(&hosts).into_iter().collect();
        Ok((
            NewUnit {
                name,
                lb,
                name_pattern: pattern,
                addresses,
                policy,
                image,
                definition: (def_name, def_version),
                size,
                servers,
            },
            warnings,
        ))
    }

    fn unit_create_inner(&self, form: &UnitForm) -> Result<UnitCreated, OpError> {
        let (new, warnings) = self.unit_validate(form)?;
        self.inventory.unit_insert(&new)?;
        Ok(UnitCreated {
            unit: self.inventory.unit_get(&new.name)?,
            warnings,
        })
    }

    /// The wizard's review page: the servers a form would register and the deploy plan for
    /// them. Writes nothing.
    pub fn unit_preview(&self, form: &UnitForm) -> Result<OpPlan, OpError> {
        let (new, warnings) = self.unit_validate(form)?;
        let steps = plan::server_steps(OpKind::Deploy, new.lb.is_some());
        Ok(OpPlan {
            batch_size: new.servers.len() as u32,
            servers: new
                .servers
                .into_iter()
                .map(|s| ServerPlan {
                    server: s.name,
                    host: s.host,
                    address: s.address,
                    note: s.mac,
                    steps: steps.clone(),
                })
                .collect(),
            unit: new.name,
            action: "deploy".into(),
            warnings,
        })
    }

    /// What the hosts and the load balancer say about a unit's servers now.
    pub async fn unit_live(&self, unit: &str) -> Result<Vec<ServerLive>, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let hosts: HashMap<String, Host> = self
            .host_list()?
            .into_iter()
            .map(|h| (h.name.to_string(), h))
            .collect();
        let members = match &u.lb {
            Some(lb) => {
                let inst = self.inventory.lb_get(lb)?;
                match LbDriver::of(&inst) {
                    Ok(d) => d.members(&u.lb_pool).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            None => Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for s in &u.servers {
            let power = match hosts.get(&s.host) {
                Some(h) => match self.hypervisor.domain_is_running(&h.uri, &s.name).await {
                    Ok(Some(true)) => "running".to_owned(),
                    Ok(Some(false)) => "shut off".to_owned(),
                    Ok(None) => "not defined".to_owned(),
                    Err(e) => format!("unknown: {}", describe(&e.into())),
                },
                None => "unknown host".to_owned(),
            };
            let (lb_status, healthy) = match &members {
                Ok(list) => match list
                    .iter()
                    .find(|m| m.name == s.name || m.address.starts_with(&format!("{}:", s.address)))
                {
                    Some(m) => (m.status.clone(), Some(m.healthy)),
                    None if u.lb.is_some() => ("not a member".to_owned(), None),
                    None => ("no load balancer".to_owned(), None),
                },
                Err(e) => (format!("unreachable: {e}"), None),
            };
            out.push(ServerLive {
                server: s.name.clone(),
                power,
                lb_status,
                healthy,
            });
        }
        Ok(out)
    }

    /// Names, addresses, MACs and hosts for the servers of a form; checks every one against
    /// the inventory (unique names, addresses, MACs) and its host's network.
    fn servers_for(
        &self,
        unit: &str,
        form: &UnitForm,
        size: ServerSize,
    ) -> Result<(Vec<NewServer>, String, String), OpError> {
        let hosts: HashMap<String, Host> = self
            .host_list()?
            .into_iter()
            .map(|h| (h.name.to_string(), h))
            .collect();
        let existing = self.inventory.server_list()?;
        let mut taken_names: HashSet<String> = existing.iter().map(|s| s.name.clone()).collect();
        let mut taken_addrs: HashSet<String> = existing.iter().map(|s| s.address.clone()).collect();
        let mut taken_macs: HashSet<String> = existing.iter().map(|s| s.mac.clone()).collect();
        let mut out: Vec<NewServer> = Vec::new();
        let total = form.count as u64 + form.servers.len() as u64;
        if total > u64::from(MAX_SERVERS) {
            return Err(ValidationError::new(
                "count",
                format!("{total} servers is more than the {MAX_SERVERS} a unit may have"),
            )
            .into());
        }
        // Explicit servers first.
        let mut unplaced: Vec<usize> = Vec::new();
        for s in &form.servers {
            let sname = HostName::parse(s.name.trim())
                .map_err(|e| ValidationError::new("server name", e.problem))?;
            let addr: Ipv4Addr = s.address.trim().parse().map_err(|_| {
                ValidationError::new(
                    "address",
                    format!(
                        "{} (server {sname}) is not an IPv4 address",
                        quote_input(&s.address)
                    ),
                )
            })?;
            if !taken_names.insert(sname.to_string()) {
                return Err(InventoryError::Duplicate {
                    kind: "server",
                    name: sname.to_string(),
                }
                .into());
            }
            if !taken_addrs.insert(addr.to_string()) {
                return Err(InventoryError::Duplicate {
                    kind: "server address",
                    name: addr.to_string(),
                }
                .into());
            }
            if s.host.trim().is_empty() {
                unplaced.push(out.len());
            } else if !hosts.contains_key(s.host.trim()) {
                return Err(InventoryError::NotFound {
                    kind: "host",
                    name: s.host.trim().to_owned(),
                }
                .into());
            }
            out.push(NewServer {
                name: sname.to_string(),
                host: s.host.trim().to_owned(),
                address: addr.to_string(),
                mac: String::new(),
            });
        }
        // Then the bulk ones.
        let (mut pattern, mut range) = (String::new(), String::new());
        if form.count > 0 || !form.name_pattern.trim().is_empty() {
            let p = NamePattern::parse(form.name_pattern.trim())?;
            let r = AddressRange::parse(&form.addresses)?;
            pattern = form.name_pattern.trim().to_owned();
            range = r.to_string();
            let mut n = 1u32;
            let mut free = r.iter();
            for _ in 0..form.count {
                while taken_names.contains(&p.name(n)) {
                    n += 1;
                }
                let addr = free
                    .find(|a| !taken_addrs.contains(&a.to_string()))
                    .ok_or_else(|| {
                        ValidationError::new(
                            "addresses",
                            format!(
                                "the range {r} has no free address left for {} servers",
                                form.count
                            ),
                        )
                    })?;
                taken_names.insert(p.name(n));
                taken_addrs.insert(addr.to_string());
                unplaced.push(out.len());
                out.push(NewServer {
                    name: p.name(n),
                    host: String::new(),
                    address: addr.to_string(),
                    mac: String::new(),
                });
            }
        }
        // Placement for the ones without a host.
        if !unplaced.is_empty() {
            let candidates: Vec<&Host> = if form.hosts.is_empty() {
                hosts.values().filter(|h| !h.network.is_empty()).collect()
            } else {
                form.hosts
                    .iter()
                    .map(|h| {
                        hosts.get(h.trim()).ok_or_else(|| {
                            OpError::from(InventoryError::NotFound {
                                kind: "host",
                                name: h.trim().to_owned(),
                            })
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            if candidates.is_empty() && !hosts.is_empty() {
                return Err(ValidationError::new(
                    "placement",
                    "no host has a network set, so no server can be placed; set one with: flotillactl host set HOST --network CIDR --gateway IP (or Hosts → Network)",
                )
                .into());
            }
            let rooms = self.host_rooms(&candidates, unit)?;
            let placed = plan::place(&rooms, unplaced.len() as u32, u64::from(size.memory_mib))
                .map_err(|e| ValidationError::new("placement", e.to_string()))?;
            for (i, host) in unplaced.iter().zip(placed) {
                out[*i].host = host;
            }
        }
        for s in &mut out {
            let host = &hosts[&s.host];
            if host.network.is_empty() {
                return Err(ValidationError::new(
                    "host",
                    format!(
                        "host {} has no network set, so server addresses cannot be checked; set it with: flotillactl host set {} --network CIDR --gateway IP",
                        host.name, host.name
                    ),
                )
                .into());
            }
            let net = Ipv4Cidr::parse(&host.network)?;
            let gw = host.gateway.parse().ok();
            let addr: Ipv4Addr = s.address.parse().map_err(|_| {
                ValidationError::new("address", format!("{} is not an address", s.address))
            })?;
            check_server_address(addr, net, gw).map_err(|e| {
                ValidationError::new(
                    "address",
                    format!("{} (server {} on host {})", e.problem, s.name, host.name),
                )
            })?;
            let mut attempt = 0;
            let mac = loop {
                let m = server_mac(unit, &s.name, attempt).to_string();
                if taken_macs.insert(m.clone()) {
                    break m;
                }
                attempt += 1;
            };
            s.mac = mac;
        }
        Ok((out, pattern, range))
    }

    /// Free memory per host (its memory minus what registered servers were promised).
    fn host_rooms(&self, hosts: &[&Host], unit: &str) -> Result<Vec<HostRoom>, OpError> {
        let units = self.inventory.unit_list()?;
        let mut promised: HashMap<String, u64> = HashMap::new();
        let mut of_unit: HashMap<String, u32> = HashMap::new();
        for u in &units {
            let mem = u.current().map_or(0, |v| u64::from(v.size.memory_mib));
            for s in &u.servers {
                *promised.entry(s.host.clone()).or_default() += mem;
                if u.name == unit {
                    *of_unit.entry(s.host.clone()).or_default() += 1;
                }
            }
        }
        Ok(hosts
            .iter()
            .map(|h| {
                let total = h.facts.as_ref().map_or(0, |f| f.memory_bytes >> 20);
                let name = h.name.to_string();
                HostRoom {
                    free_memory_mib: total
                        .saturating_sub(promised.get(&name).copied().unwrap_or(0)),
                    unit_servers: of_unit.get(&name).copied().unwrap_or(0),
                    name,
                }
            })
            .collect())
    }

    /// The dry run: which servers the action touches and the steps of each, in order.
    pub fn unit_plan(&self, unit: &str, action: &UnitAction) -> Result<OpPlan, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let (kind, mut targets, new) = self.targets(&u, action)?;
        let lb = u.lb.is_some();
        let mut servers: Vec<ServerPlan> = targets
            .drain(..)
            .map(|s| ServerPlan {
                steps: plan::server_steps(kind, lb),
                server: s.name,
                host: s.host,
                address: s.address,
                note: String::new(),
            })
            .collect();
        for s in new {
            servers.push(ServerPlan {
                steps: plan::server_steps(OpKind::Deploy, lb),
                server: s.name,
                host: s.host,
                address: s.address,
                note: "new".into(),
            });
        }
        let mut warnings = Vec::new();
        if matches!(action, UnitAction::Deploy) && servers.is_empty() {
            warnings.push("every server is deployed already: nothing to do".into());
        }
        if u.lb.is_some()
            && !self
                .lb_show(u.lb.as_deref().unwrap_or(""))?
                .kind
                .eq("haproxy")
        {
            warnings.push("Caddy has no drain state: servers leave rotation at once and get the drain timeout as a grace period".into());
        }
        Ok(OpPlan {
            unit: u.name.clone(),
            action: action.name().into(),
            batch_size: plan::batch_size(kind, u.policy.max_unavailable, servers.len()) as u32,
            servers,
            warnings,
        })
    }

    /// The kind of per-server work, the existing servers it applies to, and servers a scale
    /// out would register.
    fn targets(
        &self,
        u: &Unit,
        action: &UnitAction,
    ) -> Result<(OpKind, Vec<Server>, Vec<NewServer>), OpError> {
        let chosen = |names: &[String], state: ServerState| -> Result<Vec<Server>, OpError> {
            for n in names {
                if !u.servers.iter().any(|s| s.name == *n) {
                    return Err(InventoryError::NotFound {
                        kind: "server of this unit",
                        name: n.clone(),
                    }
                    .into());
                }
            }
            Ok(u.servers
                .iter()
                .filter(|s| names.is_empty() || names.contains(&s.name))
                .filter(|s| s.state == state)
                .cloned()
                .collect())
        };
        Ok(match action {
            UnitAction::Deploy => (OpKind::Deploy, chosen(&[], ServerState::Planned)?, vec![]),
            UnitAction::Start { servers } => (
                OpKind::Start,
                chosen(servers, ServerState::Stopped)?,
                vec![],
            ),
            UnitAction::Stop { servers, .. } => {
                (OpKind::Stop, chosen(servers, ServerState::Running)?, vec![])
            }
            UnitAction::Restart { servers, .. } => (
                OpKind::Restart,
                chosen(servers, ServerState::Running)?,
                vec![],
            ),
            UnitAction::Delete { .. } => (OpKind::Remove, u.servers.clone(), vec![]),
            UnitAction::Scale { count } => {
                if *count > MAX_SERVERS {
                    return Err(ValidationError::new(
                        "count",
                        format!("{count} is more than the {MAX_SERVERS} servers a unit may have"),
                    )
                    .into());
                }
                let have = u.servers.len() as u32;
                if *count >= have {
                    let new = if *count > have {
                        let form = UnitForm {
                            count: count - have,
                            name_pattern: u.name_pattern.clone(),
                            addresses: u.addresses.clone(),
                            ..Default::default()
                        };
                        if u.name_pattern.is_empty() {
                            return Err(ValidationError::new(
                                "count",
                                format!("unit {} has no name pattern and address range to name new servers by; register servers with names instead", u.name),
                            )
                            .into());
                        }
                        let size = u.current().map(|v| v.size).unwrap_or(ServerSize {
                            cpus: 1,
                            memory_mib: 256,
                            disk_gib: 0,
                        });
                        self.servers_for(&u.name, &form, size)?.0
                    } else {
                        Vec::new()
                    };
                    // Planned servers (a scale out that was interrupted) deploy too.
                    (OpKind::Deploy, chosen(&[], ServerState::Planned)?, new)
                } else {
                    // Remove the newest: highest number by the pattern, else the last added.
                    let pattern = NamePattern::parse(&u.name_pattern).ok();
                    let mut order: Vec<(u32, usize)> = u
                        .servers
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            (
                                pattern
                                    .as_ref()
                                    .and_then(|p| p.number_of(&s.name))
                                    .unwrap_or(0),
                                i,
                            )
                        })
                        .collect();
                    order.sort();
                    let remove: Vec<Server> = order
                        .iter()
                        .rev()
                        .take((have - count) as usize)
                        .map(|(_, i)| u.servers[*i].clone())
                        .collect();
                    (OpKind::Remove, remove, vec![])
                }
            }
        })
    }

    /// The domain XML Flotilla defines for a deployed server (what `define` sends to libvirt).
    pub async fn unit_domain_xml(&self, unit: &str, server: &str) -> Result<String, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let s = u.servers.iter().find(|s| s.name == server).ok_or_else(|| {
            InventoryError::NotFound {
                kind: "server of this unit",
                name: server.to_owned(),
            }
        })?;
        let ctx = self.context(0, &u, false, Arc::new(|_| {})).await?;
        let spec = self.domain_spec(&ctx, s, ctx.host(&s.host)?).await?;
        Ok(crate::hypervisor::domain_xml(&spec))
    }

    /// Operations whose process died before they ended.
    pub fn interrupted_operations(&self) -> Result<Vec<Interrupted>, OpError> {
        let mut out = Vec::new();
        for (id, kind, target, _) in self.inventory.operation_interrupted()? {
            let steps = self.inventory.operation_steps(id)?;
            out.push(Interrupted {
                operation: id,
                kind,
                unit: target.trim_start_matches("unit/").to_owned(),
                steps_done: steps.iter().filter(|s| s.1 == "succeeded").count() as u32,
            });
        }
        Ok(out)
    }

    /// Runs an action on a unit to its end; `Err(OpError::Failed)` carries the report of a
    /// failed one (what failed, what was undone).
    pub async fn unit_run(
        &self,
        unit: &str,
        action: UnitAction,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let args = OpArgs {
            unit: unit.trim().to_owned(),
            action,
            registered: Vec::new(),
            before: Vec::new(),
        };
        let outcome = self.run_op(args, progress, None).await;
        self.audit(
            &format!(
                "unit.{}",
                outcome.as_ref().map_or("op", |r| r.action.as_str())
            ),
            &format!("unit/{}", unit.trim()),
            &outcome,
        );
        outcome
    }

    /// Runs an interrupted operation again (its steps are idempotent).
    pub async fn operation_resume(&self, id: i64, progress: StepFn) -> Result<OpReport, OpError> {
        let args = self.interrupted_args(id)?;
        let outcome = self.run_op(args, progress, Some(id)).await;
        self.audit("operation.resume", &format!("operation/{id}"), &outcome);
        outcome
    }

    fn interrupted_args(&self, id: i64) -> Result<OpArgs, OpError> {
        let (_, _, _, json) = self
            .inventory
            .operation_interrupted()?
            .into_iter()
            .find(|o| o.0 == id)
            .ok_or_else(|| InventoryError::NotFound {
                kind: "interrupted operation",
                name: format!("#{id}"),
            })?;
        serde_json::from_str(&json).map_err(|e| {
            InventoryError::Corrupt {
                what: format!("arguments of operation #{id}"),
                source: Some(Box::new(e)),
            }
            .into()
        })
    }

    /// Undoes what an interrupted operation's journal says it did, newest first.
    pub async fn operation_unwind(&self, id: i64, progress: StepFn) -> Result<OpReport, OpError> {
        let outcome = self.unwind_inner(id, progress).await;
        self.audit("operation.unwind", &format!("operation/{id}"), &outcome);
        outcome
    }

    async fn unwind_inner(&self, id: i64, progress: StepFn) -> Result<OpReport, OpError> {
        let args = self.interrupted_args(id)?;
        let u = self.inventory.unit_get(&args.unit)?;
        let ctx = self.context(id, &u, false, progress).await?;
        // The journal: per server, the steps started (in order), minus those already undone.
        let mut per_server: BTreeMap<String, Vec<Step>> = BTreeMap::new();
        for (name, status) in self.inventory.operation_steps(id)? {
            let Some((server, step)) = name.split_once(": ") else {
                continue;
            };
            let Some(step) = Step::parse(step) else {
                continue;
            };
            let list = per_server.entry(server.to_owned()).or_default();
            match status.as_str() {
                "started" if !list.contains(&step) => list.push(step),
                "undone" => list.retain(|s| *s != step),
                _ => {}
            }
        }
        let mut outcomes = Vec::new();
        for (server, steps) in per_server {
            let Some(s) = u.servers.iter().find(|s| s.name == server) else {
                continue;
            };
            let mut o = ServerOutcome {
                server: s.name.clone(),
                host: s.host.clone(),
                done: steps.clone(),
                ..Default::default()
            };
            if !steps.iter().any(|s| s.irreversible()) {
                self.undo_server(&ctx, s, &steps, &mut o).await;
                if let Some((_, state, version)) = args.before.iter().find(|b| b.0 == s.name) {
                    self.inventory.server_set_state(&s.name, *state, *version)?;
                }
            }
            outcomes.push(o);
        }
        for name in &args.registered {
            if u.servers
                .iter()
                .any(|s| s.name == *name && s.state == ServerState::Planned)
            {
                self.inventory.server_delete(name)?;
            }
        }
        self.release_host_objects(&ctx).await;
        self.inventory
            .operation_finish(id, "aborted", "interrupted; unwound")?;
        self.inventory.unit_unlock(id)?;
        Ok(OpReport {
            operation: id,
            unit: u.name,
            action: format!("unwind of {}", args.action.name()),
            ok: outcomes.iter().all(|o| o.undo_failed.is_empty()),
            servers: outcomes,
            warnings: Vec::new(),
        })
    }

    async fn run_op(
        &self,
        mut args: OpArgs,
        progress: StepFn,
        resumes: Option<i64>,
    ) -> Result<OpReport, OpError> {
        let u = self.inventory.unit_get(&args.unit)?;
        let (kind, _, new) = self.targets(&u, &args.action)?;
        let target = format!("unit/{}", u.name);
        let json = serde_json::to_string(&args).unwrap_or_default();
        let op = self
            .inventory
            .operation_begin_with(args.action.name(), &target, &json)?;
        if let Some(old) = resumes {
            // The resumed operation hands its lock over.
            self.inventory.unit_unlock(old)?;
            self.inventory.operation_finish(
                old,
                "aborted",
                &format!("interrupted; resumed as #{op}"),
            )?;
        }
        if let Some(holder) = self.inventory.unit_lock(&u.name, op)? {
            let kind = self
                .inventory
                .operation_list(200)?
                .into_iter()
                .find(|o| o.id == holder)
                .map_or_else(|| "unknown".into(), |o| o.kind);
            let err = OpError::Busy {
                unit: u.name.clone(),
                operation: holder,
                kind,
            };
            self.inventory
                .operation_finish(op, "aborted", &err.to_string())?;
            return Err(err);
        }
        let result = self.run_locked(op, &mut args, kind, new, progress).await;
        if let Err(OpError::Crashed) = result {
            // A simulated crash: leave the journal and the lock as a dead process would.
            self.inventory.operation_orphan(op)?;
            return result;
        }
        let (state, error) = match &result {
            Ok(_) => ("succeeded", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        if let Err(e) = self.inventory.operation_finish(op, state, &error) {
            eprintln!("flotilla: could not journal the end of operation {op}: {e}");
        }
        self.inventory.unit_unlock(op)?;
        result
    }

    async fn run_locked(
        &self,
        op: i64,
        args: &mut OpArgs,
        kind: OpKind,
        new: Vec<NewServer>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        let mut warnings = Vec::new();
        let before = self.inventory.unit_get(&args.unit)?;
        if let Some(lb) = &before.lb {
            // Put back what the load balancer lost before changing anything.
            let lb = self.inventory.lb_get(lb)?;
            let r = self.reconcile_unit(&before, &lb).await?;
            if !r.added.is_empty() || !r.corrected.is_empty() {
                let names: Vec<String> = r.added.into_iter().chain(r.corrected).collect();
                warnings.push(format!(
                    "the load balancer had lost members; put back: {}",
                    names.join(", ")
                ));
            }
        }
        if !new.is_empty() {
            self.inventory.server_insert(&args.unit, &new)?;
            args.registered = new.iter().map(|s| s.name.clone()).collect();
        }
        let u = self.inventory.unit_get(&args.unit)?;
        // Recompute the targets: registered servers are planned now.
        let (_, targets, _) = match &args.action {
            UnitAction::Scale { .. } if kind == OpKind::Deploy => {
                self.targets(&u, &UnitAction::Deploy)?
            }
            a => self.targets(&u, a)?,
        };
        args.before = targets
            .iter()
            .map(|s| (s.name.clone(), s.state, s.version))
            .collect();
        let json = serde_json::to_string(&args).unwrap_or_default();
        let ctx = match self.inventory.operation_set_args(op, &json) {
            Ok(()) => self.context(op, &u, args.action.force(), progress).await,
            Err(e) => Err(e.into()),
        };
        let ctx = match ctx {
            Ok(c) => c,
            Err(e) => {
                // Nothing ran: forget the servers this operation registered.
                for name in &args.registered {
                    self.inventory.server_delete(name)?;
                }
                return Err(e);
            }
        };
        let mut outcomes = self.run_servers(&ctx, &targets, kind).await;
        if outcomes
            .iter()
            .any(|o| o.failed.as_ref().is_some_and(|f| f.1 == CRASH))
        {
            return Err(OpError::Crashed);
        }
        let failed = outcomes.iter().any(|o| o.failed.is_some());
        if failed {
            // Undo every server's completed steps, newest server first.
            for (o, s) in outcomes.iter_mut().zip(&targets).rev() {
                if o.done.iter().any(|d| d.irreversible()) {
                    continue;
                }
                let mut steps = o.done.clone();
                if let Some((f, _)) = &o.failed {
                    steps.push(*f);
                }
                self.undo_server(&ctx, s, &steps, o).await;
                self.inventory
                    .server_set_state(&s.name, s.state, s.version)?;
            }
            for name in &args.registered {
                self.inventory.server_delete(name)?;
            }
        }
        if kind == OpKind::Remove || failed {
            self.release_host_objects(&ctx).await;
        }
        if let UnitAction::Delete { .. } = args.action {
            if !failed {
                self.inventory.unit_delete(&u.name)?;
            }
        }
        let report = OpReport {
            operation: op,
            unit: u.name.clone(),
            action: args.action.name().into(),
            ok: !failed,
            servers: outcomes,
            warnings,
        };
        if failed {
            Err(OpError::Failed(Box::new(report)))
        } else {
            Ok(report)
        }
    }

    /// Everything the steps need, read once.
    async fn context(
        &self,
        op: i64,
        u: &Unit,
        force: bool,
        progress: StepFn,
    ) -> Result<Ctx, OpError> {
        let uv = u
            .current()
            .cloned()
            .ok_or_else(|| InventoryError::NotFound {
                kind: "unit version",
                name: format!("{}:v{}", u.name, u.current_version),
            })?;
        let image = self.inventory.image_version_get(
            &crate::model::ImageName::parse(&uv.image)?,
            uv.image_version,
        )?;
        let def = self.def_parsed(&uv.definition, uv.definition_version)?;
        let hosts: HashMap<String, Host> = self
            .host_list()?
            .into_iter()
            .map(|h| (h.name.to_string(), h))
            .collect();
        let lb = match &u.lb {
            Some(name) => {
                let inst = self.inventory.lb_get(name)?;
                let (driver, _) = self.unit_lb_driver(u, &inst)?;
                if !driver.pool_exists(&u.lb_pool).await? {
                    return Err(crate::lb::LbError::NoPool {
                        pool: u.lb_pool.clone(),
                    }
                    .into());
                }
                Some((driver, u.lb_pool.clone()))
            }
            None => None,
        };
        let used: HashSet<&String> = u.servers.iter().map(|s| &s.host).collect();
        Ok(Ctx {
            op,
            port: *def.server.port.get_ref(),
            uv,
            image,
            def,
            lb,
            force,
            policy: u.policy,
            progress,
            abort: AtomicBool::new(false),
            host_locks: used
                .iter()
                .map(|h| ((*h).clone(), tokio::sync::Mutex::new(())))
                .collect(),
            host_slots: used
                .iter()
                .map(|h| ((*h).clone(), tokio::sync::Semaphore::new(PER_HOST)))
                .collect(),
            hosts,
            unit: u.clone(),
        })
    }

    /// Runs `kind`'s steps on every server, in batches; stops starting steps after a failure.
    async fn run_servers(&self, ctx: &Ctx, servers: &[Server], kind: OpKind) -> Vec<ServerOutcome> {
        let all = plan::server_steps(kind, ctx.lb.is_some());
        // Removal goes in two phases: what can be undone (drain, shutdown, LB removal) on
        // every server first, and only when that worked everywhere what cannot.
        let split = all
            .iter()
            .position(|s| s.irreversible())
            .unwrap_or(all.len());
        let phases: Vec<&[Step]> = if split > 0 && split < all.len() {
            vec![&all[..split], &all[split..]]
        } else {
            vec![&all[..]]
        };
        let batch = plan::batch_size(kind, ctx.policy.max_unavailable, servers.len());
        let mut outcomes: Vec<ServerOutcome> = servers
            .iter()
            .map(|s| ServerOutcome {
                server: s.name.clone(),
                host: s.host.clone(),
                ..Default::default()
            })
            .collect();
        let total = all.len() as u32;
        for (p, phase) in phases.iter().enumerate() {
            let last = p + 1 == phases.len();
            for chunk in (0..servers.len()).collect::<Vec<_>>().chunks(batch) {
                if ctx.abort.load(Ordering::SeqCst) {
                    break;
                }
                let mut running: FuturesUnordered<_> = chunk
                    .iter()
                    .map(|&i| {
                        let o = std::mem::take(&mut outcomes[i]);
                        let s = &servers[i];
                        async move {
                            (
                                i,
                                self.run_server(ctx, s, phase, total, kind, last, o).await,
                            )
                        }
                    })
                    .collect();
                while let Some((i, o)) = running.next().await {
                    outcomes[i] = o;
                }
            }
        }
        outcomes
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_server(
        &self,
        ctx: &Ctx,
        s: &Server,
        steps: &[Step],
        total: u32,
        kind: OpKind,
        last_phase: bool,
        mut o: ServerOutcome,
    ) -> ServerOutcome {
        let _slot = match ctx.host_slots.get(&s.host) {
            Some(sem) => sem.acquire().await.ok(),
            None => None,
        };
        for &step in steps {
            if ctx.abort.load(Ordering::SeqCst) {
                return o;
            }
            let name = format!("{}: {}", s.name, step.as_str());
            self.journal(
                ctx,
                &name,
                s,
                step,
                StepStatus::Started,
                "",
                o.done.len() as u32,
                total,
            );
            let mut result = self.do_step(ctx, s, step).await;
            if result.is_ok() && self.repeat.load(Ordering::SeqCst) {
                result = self.do_step(ctx, s, step).await;
            }
            if result.is_ok() {
                match self.fault_at(&s.name, step) {
                    Some(true) => {
                        ctx.abort.store(true, Ordering::SeqCst);
                        o.failed = Some((step, CRASH.into()));
                        return o;
                    }
                    Some(false) => {
                        result = Err(OpError::Timeout(format!(
                            "injected failure after {} on {}",
                            step.as_str(),
                            s.name
                        )))
                    }
                    None => {}
                }
            }
            match result {
                Ok(()) => {
                    o.done.push(step);
                    self.journal(
                        ctx,
                        &name,
                        s,
                        step,
                        StepStatus::Succeeded,
                        "",
                        o.done.len() as u32,
                        total,
                    );
                }
                Err(e) => {
                    let msg = describe(&e);
                    self.journal(
                        ctx,
                        &name,
                        s,
                        step,
                        StepStatus::Failed,
                        &msg,
                        o.done.len() as u32,
                        total,
                    );
                    ctx.abort.store(true, Ordering::SeqCst);
                    o.failed = Some((step, msg));
                    return o;
                }
            }
        }
        if !last_phase {
            return o;
        }
        let (state, version) = match kind {
            OpKind::Deploy => (ServerState::Running, Some(ctx.uv.version)),
            OpKind::Start | OpKind::Restart => (ServerState::Running, s.version),
            OpKind::Stop => (ServerState::Stopped, s.version),
            OpKind::Remove => return o,
        };
        if let Err(e) = self.inventory.server_set_state(&s.name, state, version) {
            o.failed = Some((*steps.last().unwrap_or(&Step::Start), e.to_string()));
            ctx.abort.store(true, Ordering::SeqCst);
        }
        o
    }

    #[allow(clippy::too_many_arguments)]
    fn journal(
        &self,
        ctx: &Ctx,
        name: &str,
        s: &Server,
        step: Step,
        status: StepStatus,
        detail: &str,
        done: u32,
        total: u32,
    ) {
        if let Err(e) = self.inventory.operation_step(ctx.op, name, status, detail) {
            eprintln!("flotilla: could not journal {name}: {e}");
        }
        (ctx.progress)(StepEvent {
            operation: ctx.op,
            server: s.name.clone(),
            step,
            status,
            detail: detail.to_owned(),
            done,
            total,
        });
    }

    /// Undoes `steps` of one server, newest first; failures are recorded, not fatal.
    async fn undo_server(&self, ctx: &Ctx, s: &Server, steps: &[Step], o: &mut ServerOutcome) {
        let total = steps.len() as u32;
        for (i, &step) in steps.iter().enumerate().rev() {
            let name = format!("{}: {}", s.name, step.as_str());
            self.journal(
                ctx,
                &name,
                s,
                step,
                StepStatus::UndoStarted,
                "",
                i as u32,
                total,
            );
            match self.undo_step(ctx, s, step).await {
                Ok(()) => {
                    o.undone.push(step);
                    self.journal(ctx, &name, s, step, StepStatus::Undone, "", i as u32, total);
                }
                Err(e) => o.undo_failed.push((step, describe(&e))),
            }
        }
    }

    async fn do_step(&self, ctx: &Ctx, s: &Server, step: Step) -> Result<(), OpError> {
        let host = ctx.host(&s.host)?;
        let (uri, pool) = (&host.uri, &host.pool);
        let addr = member_address(&s.address, ctx.port)?;
        let lb = ctx.lb.as_ref();
        match step {
            Step::EnsureMaster => {
                let _g = match ctx.host_locks.get(&s.host) {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                self.ensure_space(host, &ctx.image).await?;
                let r = format!("{}:{}", ctx.image.image, ctx.image.version);
                // Part of the unit operation (journaled there), not an audit entry of its own.
                self.image_ensure_inner(&r, &s.host, Arc::new(|_| {}))
                    .await?;
                Ok(())
            }
            Step::EnsurePayload => {
                let _g = match ctx.host_locks.get(&s.host) {
                    Some(l) => Some(l.lock().await),
                    None => None,
                };
                self.ensure_payload(ctx, host).await
            }
            Step::CreateDisk => {
                let name = disk_volume(&s.name);
                if self
                    .hypervisor
                    .volume_get(uri, pool, &name)
                    .await?
                    .is_none()
                {
                    self.hypervisor
                        .volume_create_overlay_sized(
                            uri,
                            pool,
                            &name,
                            &ctx.image.volume_name(),
                            DiskFormat::Qcow2,
                            u64::from(ctx.uv.size.disk_gib) << 30,
                        )
                        .await?;
                }
                Ok(())
            }
            Step::WriteSeed => {
                let dir = tempfile_dir()?;
                let file = dir.join(format!("{}-seed.img", s.name));
                let spec = self.seed_spec(ctx, s, host)?;
                let written = write_seed_disk(&spec, &file)
                    .map_err(|e| OpError::Invalid(ValidationError::new("seed", e.to_string())));
                let result = async {
                    written?;
                    let name = seed_volume(&s.name);
                    self.hypervisor.volume_delete(uri, pool, &name).await?;
                    self.hypervisor
                        .volume_upload(uri, pool, &name, file.clone(), DiskFormat::Raw, |_, _| {})
                        .await?;
                    Ok(())
                }
                .await;
                let _ = std::fs::remove_dir_all(&dir);
                result
            }
            Step::Define => {
                let spec = self.domain_spec(ctx, s, host).await?;
                self.hypervisor.domain_define(uri, &spec).await?;
                Ok(())
            }
            Step::LbAdd => {
                let (d, p) = lb_of(lb)?;
                d.member_add(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "maint")?;
                Ok(())
            }
            Step::Start => Ok(self.hypervisor.domain_start(uri, &s.name).await?),
            Step::WaitHealthy => self.wait_healthy(ctx, s, host).await,
            Step::LbReady => self.lb_set(ctx, s, MemberState::Ready).await,
            Step::LbDrain => self.lb_set(ctx, s, MemberState::Drain).await,
            Step::WaitDrained => self.wait_drained(ctx, s).await,
            Step::LbMaint => self.lb_set(ctx, s, MemberState::Maint).await,
            Step::Shutdown => self.shutdown(ctx, s, host).await,
            Step::LbRemove => {
                let (d, p) = lb_of(lb)?;
                d.member_remove(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "none")?;
                Ok(())
            }
            Step::Undefine => {
                self.hypervisor.domain_destroy(uri, &s.name).await?;
                self.hypervisor.domain_undefine(uri, &s.name).await?;
                Ok(())
            }
            Step::DeleteVolumes => {
                for v in [
                    disk_volume(&s.name),
                    seed_volume(&s.name),
                    serial_volume(&s.name),
                ] {
                    self.hypervisor.volume_delete(uri, pool, &v).await?;
                }
                Ok(())
            }
            Step::Forget => Ok(self.inventory.server_delete(&s.name)?),
        }
    }

    async fn undo_step(&self, ctx: &Ctx, s: &Server, step: Step) -> Result<(), OpError> {
        let host = ctx.host(&s.host)?;
        let (uri, pool) = (&host.uri, &host.pool);
        let addr = member_address(&s.address, ctx.port)?;
        match step {
            // Shared by the unit's servers on the host: released at the end of the operation
            // when no server needs them (`release_host_objects`).
            Step::EnsureMaster | Step::EnsurePayload => Ok(()),
            Step::CreateDisk => {
                self.hypervisor
                    .volume_delete(uri, pool, &disk_volume(&s.name))
                    .await?;
                Ok(())
            }
            Step::WriteSeed => {
                self.hypervisor
                    .volume_delete(uri, pool, &seed_volume(&s.name))
                    .await?;
                Ok(())
            }
            Step::Define => {
                self.hypervisor.domain_destroy(uri, &s.name).await?;
                self.hypervisor.domain_undefine(uri, &s.name).await?;
                self.hypervisor
                    .volume_delete(uri, pool, &serial_volume(&s.name))
                    .await?;
                Ok(())
            }
            Step::LbAdd => {
                let (d, p) = lb_of(ctx.lb.as_ref())?;
                d.member_remove(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "none")?;
                Ok(())
            }
            Step::Start => {
                self.hypervisor.domain_destroy(uri, &s.name).await?;
                Ok(())
            }
            Step::WaitHealthy | Step::LbReady => {
                if ctx.lb.is_some() {
                    self.lb_set(ctx, s, MemberState::Maint).await?;
                }
                Ok(())
            }
            Step::LbDrain | Step::LbMaint => self.lb_set(ctx, s, MemberState::Ready).await,
            Step::WaitDrained => Ok(()),
            Step::Shutdown => Ok(self.hypervisor.domain_start(uri, &s.name).await?),
            Step::LbRemove => {
                let (d, p) = lb_of(ctx.lb.as_ref())?;
                d.member_add(p, &s.name, addr).await?;
                self.inventory.server_set_lb_state(&s.name, "maint")?;
                Ok(())
            }
            Step::Undefine | Step::DeleteVolumes | Step::Forget => Ok(()),
        }
    }

    async fn lb_set(&self, ctx: &Ctx, s: &Server, state: MemberState) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let addr = member_address(&s.address, ctx.port)?;
        // A member the LB lost (reload) is added back first.
        if !d
            .members(p)
            .await?
            .iter()
            .any(|m| m.name == s.name || m.address == addr.to_string())
        {
            d.member_add(p, &s.name, addr).await?;
        }
        d.member_set(p, &s.name, addr, state).await?;
        let text = match state {
            MemberState::Ready => "ready",
            MemberState::Drain => "drain",
            MemberState::Maint => "maint",
        };
        self.inventory.server_set_lb_state(&s.name, text)?;
        Ok(())
    }

    /// Refuses to upload a master to a host whose pool cannot hold it.
    async fn ensure_space(&self, host: &Host, image: &ImageVersion) -> Result<(), OpError> {
        if image.copies.iter().any(|c| c.host == host.name) {
            return Ok(());
        }
        let fresh = self.host_check_inner(host.name.as_str()).await?;
        let have = fresh
            .facts
            .as_ref()
            .and_then(|f| f.pool.as_ref())
            .map_or(0, |p| p.available_bytes);
        if have < image.actual_size {
            return Err(OpError::NoSpace {
                host: host.name.to_string(),
                what: format!("master {}:v{}", image.image, image.version),
                need: image.actual_size,
                have,
            });
        }
        Ok(())
    }

    /// The unit version's payload disk (and a direct-boot master's kernel files) on the host.
    async fn ensure_payload(&self, ctx: &Ctx, host: &Host) -> Result<(), OpError> {
        let dir = tempfile_dir()?;
        let result = async {
            let payload = ctx.payload_volume();
            let file = dir.join("payload.img");
            let mut files: Vec<(String, std::path::PathBuf)> = Vec::new();
            if !self.host_object_ok(host, &payload).await? {
                self.def_payload(&ctx.uv.definition, ctx.uv.definition_version, &file)?;
                files.push((payload, file));
            }
            if let BootMode::Kernel {
                kernel_file,
                initrd_file,
                ..
            } = &ctx.image.boot
            {
                let mut boot = vec![("vmlinuz", kernel_file)];
                if let Some(i) = initrd_file {
                    boot.push(("initrd", i));
                }
                for (suffix, f) in boot {
                    let name = format!("{}-u{}-{suffix}", ctx.unit.name, ctx.uv.version);
                    if !self.host_object_ok(host, &name).await? {
                        files.push((name, self.library_dir().join(f)));
                    }
                }
            }
            for (name, file) in files {
                self.host_object_upload(host, &name, file).await?;
            }
            Ok(())
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// True when `volume` is on the host and was verified there. A volume without a record
    /// is what an interrupted upload left (Flotilla was killed): it is removed.
    async fn host_object_ok(&self, host: &Host, volume: &str) -> Result<bool, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let present = self
            .hypervisor
            .volume_get(uri, pool, volume)
            .await?
            .is_some();
        let recorded = self.inventory.host_object_get(host.name.as_str(), volume)?;
        match (present, recorded) {
            (true, Some(_)) => Ok(true),
            (true, None) => {
                self.hypervisor.volume_delete(uri, pool, volume).await?;
                Ok(false)
            }
            (false, Some(_)) => {
                self.inventory
                    .host_object_forget(host.name.as_str(), volume)?;
                Ok(false)
            }
            (false, None) => Ok(false),
        }
    }

    /// Uploads a file as `volume`, reads it back, and records it when the checksums match.
    async fn host_object_upload(
        &self,
        host: &Host,
        volume: &str,
        file: std::path::PathBuf,
    ) -> Result<(), OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let want = crate::library::sha256_file(&file, &|_, _| {})?;
        let uploaded = self
            .hypervisor
            .volume_upload(uri, pool, volume, file, DiskFormat::Raw, |_, _| {})
            .await;
        let found = match uploaded {
            Ok(_) => self.hypervisor.volume_sha256(uri, pool, volume).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(sum) if sum == want => {
                self.inventory
                    .host_object_record(host.name.as_str(), volume, &sum)?;
                Ok(())
            }
            outcome => {
                // A half or damaged upload must not look like a finished one next time.
                let _ = self.hypervisor.volume_delete(uri, pool, volume).await;
                Err(match outcome {
                    Err(e) => e.into(),
                    Ok(found) => OpError::CopyMismatch {
                        what: volume.to_owned(),
                        host: host.name.to_string(),
                        found,
                        expected: want,
                    },
                })
            }
        }
    }

    /// Removes the unit's payload and kernel volumes from hosts where no deployed server of
    /// the unit remains, and master copies no deployed server and no builder needs.
    async fn release_host_objects(&self, ctx: &Ctx) {
        let Ok(units) = self.inventory.unit_list() else {
            return;
        };
        let builders = self.inventory.builder_list().unwrap_or_default();
        for (hname, host) in &ctx.hosts {
            if !ctx.host_slots.contains_key(hname) {
                continue;
            }
            let deployed = |u: &Unit| {
                u.servers
                    .iter()
                    .any(|s| s.host == *hname && s.state != ServerState::Planned)
            };
            let this = units.iter().find(|u| u.name == ctx.unit.name);
            if !this.is_some_and(deployed) {
                for v in &ctx.unit.versions {
                    for suffix in ["payload.img", "vmlinuz", "initrd"] {
                        let name = format!("{}-u{}-{suffix}", ctx.unit.name, v.version);
                        if self
                            .hypervisor
                            .volume_delete(&host.uri, &host.pool, &name)
                            .await
                            .is_ok()
                        {
                            let _ = self.inventory.host_object_forget(hname, &name);
                        }
                    }
                }
            }
            let image_in_use = units.iter().any(|u| {
                deployed(u)
                    && u.versions.iter().any(|v| {
                        v.image == ctx.image.image.as_str() && v.image_version == ctx.image.version
                    })
            });
            let builder_here = builders.iter().any(|b| b.host == host.name);
            if !image_in_use && !builder_here {
                let copy = ctx.image.volume_name();
                if self
                    .hypervisor
                    .volume_delete(&host.uri, &host.pool, &copy)
                    .await
                    .is_ok()
                {
                    let _ = self.inventory.image_copy_forget(
                        &ctx.image.image,
                        ctx.image.version,
                        &host.name,
                    );
                }
            }
        }
    }

    fn seed_spec(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<SeedSpec, OpError> {
        let net = Ipv4Cidr::parse(&host.network).map_err(|_| {
            ValidationError::new(
                "host",
                format!(
                    "host {} has no network set (flotillactl host set)",
                    host.name
                ),
            )
        })?;
        let addr: Ipv4Addr = s.address.parse().map_err(|_| {
            ValidationError::new("address", format!("{} is not an address", s.address))
        })?;
        let mut runcmd = payload_runcmd();
        let start_hook = runcmd.pop();
        runcmd.extend(self.config_commands(ctx, s)?);
        runcmd.extend(start_hook);
        Ok(SeedSpec {
            instance_id: format!("{}.{}.u{}", s.name, ctx.unit.name, ctx.uv.version),
            hostname: HostName::parse(&s.name)?,
            nics: vec![NicConfig {
                mac: MacAddr::parse(&s.mac)?,
                address: Ipv4Cidr::new(addr, net.prefix())?,
                gateway: host.gateway.parse().ok(),
            }],
            nameservers: Vec::new(),
            runcmd,
        })
    }

    /// The definition's `[[config]]` files rendered for this server, as commands that write
    /// them (base64, so any content passes through the seed's quoting rules).
    fn config_commands(&self, ctx: &Ctx, s: &Server) -> Result<Vec<String>, OpError> {
        use base64::Engine as _;
        let index = ctx
            .unit
            .servers
            .iter()
            .position(|x| x.name == s.name)
            .map_or(0, |i| i + 1);
        let mut vars = BTreeMap::from([
            ("hostname".to_owned(), s.name.clone()),
            ("address".to_owned(), s.address.clone()),
            ("port".to_owned(), ctx.port.to_string()),
            ("unit".to_owned(), ctx.unit.name.clone()),
            ("unit_version".to_owned(), ctx.uv.version.to_string()),
            ("server_index".to_owned(), index.to_string()),
        ]);
        for (k, v) in &ctx.def.env {
            vars.insert(format!("env.{}", k.get_ref()), v.get_ref().clone());
        }
        let mut out = Vec::new();
        for c in &ctx.def.config {
            let path = c.path.get_ref();
            if !path.starts_with('/')
                || !path
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "/._-+@".contains(ch))
            {
                return Err(ValidationError::new(
                    "config",
                    format!(
                        "{} must be an absolute path of A-Z a-z 0-9 / . _ - + @",
                        quote_input(path)
                    ),
                )
                .into());
            }
            let text = render_template(c.template.get_ref(), &vars)
                .map_err(|e| ValidationError::new("config", format!("{path}: {e}")))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            let dir = path
                .rsplit_once('/')
                .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
            let mut cmd = format!("mkdir -p {dir} && echo {b64} | base64 -d > {path}");
            if let Some(mode) = &c.mode {
                let m = mode.get_ref();
                if m.len() <= 4 && m.chars().all(|ch| ('0'..='7').contains(&ch)) {
                    cmd.push_str(&format!(" && chmod {m} {path}"));
                }
            }
            out.push(cmd);
        }
        Ok(out)
    }

    async fn domain_spec(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<DomainSpec, OpError> {
        let (uri, pool) = (&host.uri, &host.pool);
        let path_of = |name: String| async move {
            self.hypervisor
                .volume_get(uri, pool, &name)
                .await?
                .map(|v| v.path)
                .ok_or_else(|| {
                    OpError::from(InventoryError::NotFound {
                        kind: "volume",
                        name: format!("{name} on host {}", host.name),
                    })
                })
        };
        let boot = match &ctx.image.boot {
            BootMode::Disk { firmware } => BootSpec::Disk {
                uefi: *firmware == Firmware::Uefi,
                cdrom_first: false,
            },
            BootMode::Kernel {
                initrd_file,
                cmdline,
                ..
            } => BootSpec::Kernel {
                kernel: path_of(format!("{}-u{}-vmlinuz", ctx.unit.name, ctx.uv.version)).await?,
                initrd: match initrd_file {
                    Some(_) => Some(
                        path_of(format!("{}-u{}-initrd", ctx.unit.name, ctx.uv.version)).await?,
                    ),
                    None => None,
                },
                cmdline: cmdline.clone(),
            },
        };
        let disk = |path: String, format, readonly| DiskSpec {
            path,
            format,
            readonly,
            cdrom: false,
        };
        let pool_dir = self.hypervisor.pool_path(uri, pool).await?;
        let facts = host.facts.as_ref();
        let domain_type = if facts.is_some_and(|f| f.hypervisor == "TEST") {
            DomainType::Test
        } else {
            match host.domain_type.as_str() {
                "kvm" => DomainType::Kvm,
                "qemu" => DomainType::Qemu,
                _ if facts.is_some_and(|f| f.kvm) => DomainType::Kvm,
                _ => DomainType::Qemu,
            }
        };
        Ok(DomainSpec {
            name: s.name.clone(),
            domain_type,
            vcpus: ctx.uv.size.cpus,
            memory_mib: u64::from(ctx.uv.size.memory_mib),
            boot,
            disks: vec![
                disk(
                    path_of(disk_volume(&s.name)).await?,
                    DiskFormat::Qcow2,
                    false,
                ),
                disk(path_of(seed_volume(&s.name)).await?, DiskFormat::Raw, true),
                disk(path_of(ctx.payload_volume()).await?, DiskFormat::Raw, true),
            ],
            nics: vec![NicSpec {
                mac: MacAddr::parse(&s.mac)?,
                bridge: host.bridge.clone(),
            }],
            serial_log: Some(format!(
                "{}/{}",
                pool_dir.trim_end_matches('/'),
                serial_volume(&s.name)
            )),
            metadata: vec![
                ("unit".into(), ctx.unit.name.clone()),
                ("unit-version".into(), ctx.uv.version.to_string()),
                ("server".into(), s.name.clone()),
            ],
            vnc: false,
            guest_agent: true,
        })
    }

    /// Waits for the definition's health check: as the load balancer sees it (HAProxy runs
    /// the check while the member drains), or by asking the server. A test-driver host runs
    /// no guest: its running domain stands in for a healthy server.
    async fn wait_healthy(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<(), OpError> {
        if host.facts.as_ref().is_some_and(|f| f.hypervisor == "TEST") {
            return match self
                .hypervisor
                .domain_is_running(&host.uri, &s.name)
                .await?
            {
                Some(true) => Ok(()),
                _ => Err(OpError::Timeout(format!("{} is not running", s.name))),
            };
        }
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.health_timeout_s));
        let path = ctx.def.health.path.get_ref().clone();
        let expect = *ctx.def.health.expect_status.get_ref();
        let interval = Duration::from_millis(500);
        let addr = member_address(&s.address, ctx.port)?;
        let mut last = String::from("no answer yet");
        if let Some((d, p)) = ctx.lb.as_ref().filter(|(d, _)| d.reports_health()) {
            d.member_set(p, &s.name, addr, MemberState::Drain).await?;
            d.member_mark_down(p, &s.name).await?;
            self.inventory.server_set_lb_state(&s.name, "drain")?;
            while Instant::now() < deadline {
                if let Some(m) = d.members(p).await?.into_iter().find(|m| m.name == s.name) {
                    if m.healthy {
                        return Ok(());
                    }
                    last = format!("the load balancer reports {}", m.status);
                }
                tokio::time::sleep(interval).await;
            }
        } else {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(
                    u64::from(*ctx.def.health.timeout_s.get_ref()).max(1),
                ))
                .build()
                .map_err(|e| OpError::Timeout(e.to_string()))?;
            let url = format!("http://{addr}{path}");
            while Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(r) if r.status().as_u16() == expect => return Ok(()),
                    Ok(r) => last = format!("GET {url} answered {}", r.status()),
                    Err(e) => last = format!("GET {url} failed: {e}"),
                }
                tokio::time::sleep(interval).await;
            }
        }
        let serial = self
            .hypervisor
            .volume_tail(&host.uri, &host.pool, &serial_volume(&s.name), 600)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(OpError::Timeout(format!(
            "{} did not pass its health check (GET {path} on port {}, status {expect}) within {} s; {last}{}",
            s.name,
            ctx.port,
            ctx.policy.health_timeout_s,
            if serial.trim().is_empty() {
                String::new()
            } else {
                format!("; the end of its serial console:\n{}", serial.trim_end())
            }
        )))
    }

    /// Waits until the member has no sessions and no queue, or the drain timeout passed (not
    /// an error: the timeout is the policy). Caddy removed it already: the timeout is its grace.
    async fn wait_drained(&self, ctx: &Ctx, s: &Server) -> Result<(), OpError> {
        let (d, p) = lb_of(ctx.lb.as_ref())?;
        let deadline = Instant::now() + Duration::from_secs(u64::from(ctx.policy.drain_timeout_s));
        if !d.has_drain() {
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(());
        }
        while Instant::now() < deadline {
            let m = d.members(p).await?.into_iter().find(|m| m.name == s.name);
            if m.is_none_or(|m| m.sessions == 0 && m.queued == 0) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn shutdown(&self, ctx: &Ctx, s: &Server, host: &Host) -> Result<(), OpError> {
        let uri = &host.uri;
        if self.hypervisor.domain_is_running(uri, &s.name).await? != Some(true) {
            return Ok(());
        }
        self.hypervisor.domain_shutdown(uri, &s.name).await?;
        let deadline =
            Instant::now() + Duration::from_secs(u64::from(ctx.policy.shutdown_timeout_s));
        while Instant::now() < deadline {
            if self.hypervisor.domain_is_running(uri, &s.name).await? != Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if ctx.force {
            self.hypervisor.domain_destroy(uri, &s.name).await?;
            return Ok(());
        }
        Err(OpError::Timeout(format!(
            "{} did not shut down within {} s after the ACPI request; stop it with --force to power it off (unsaved data in the guest may be lost)",
            s.name, ctx.policy.shutdown_timeout_s
        )))
    }
}

/// The journal marker of a simulated crash.
const CRASH: &str = "simulated crash";

fn lb_of(lb: Option<&(LbDriver, String)>) -> Result<(&LbDriver, &str), OpError> {
    lb.map(|(d, p)| (d, p.as_str())).ok_or_else(|| {
        OpError::Invalid(ValidationError::new(
            "load balancer",
            "this unit has no load balancer",
        ))
    })
}

/// An error with libvirt's own words, as the report shows it.
fn describe(e: &OpError) -> String {
    crate::error::ApiError::from(e).message
}
