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
use crate::hypervisor::{
    BootSpec, DiskFormat, DiskSpec, DiskSwap, DomainSpec, DomainType, NicSpec,
};
use crate::inventory::{
    InventoryError, NewServer, NewUnit, PinMode, PriorVolumes, Server, StepStatus, Unit,
    UnitVersion,
};
use crate::lb::MemberState;
use crate::model::definition::{render_template, Definition};
use crate::model::{
    BootMode, Firmware, Host, HostName, ImageRef, ImageVersion, Ipv4Cidr, MacAddr, RolloutPolicy,
    ServerSize, ServerState, ValidationError, MAX_SERVERS,
};
use crate::plan::{self, OpKind, Step};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod planning;
mod recover;
mod report;
mod run;
mod steps;
mod update;

use recover::Move;
pub use recover::{HostReconcile, RecoveryHooks};
pub use report::{
    Fault, Interrupted, OpPlan, OpReport, ServerFence, ServerLive, ServerOutcome, ServerPlan,
    StepEvent, StepFn,
};
use std::time::{Duration, Instant};
pub use update::{UnitUpdate, UnitVersionEntry};

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
    Start {
        servers: Vec<String>,
    },
    Stop {
        servers: Vec<String>,
        force: bool,
    },
    Restart {
        servers: Vec<String>,
        force: bool,
    },
    Scale {
        count: u32,
    },
    Delete {
        force: bool,
    },
    /// Move the running servers to the pending unit version (`unit update`), or with `back`
    /// to the current one (the last on which every server passed its gate). With `canary`,
    /// only that many more servers, then the rollout pauses (`unit promote` goes on).
    Rollout {
        back: bool,
        #[serde(default)]
        canary: Option<u32>,
        /// This rollout's policy, in place of the unit's.
        #[serde(default)]
        policy: Option<RolloutPolicy>,
    },
    /// Re-create the servers of the failed hosts `from` on surviving hosts, with their names,
    /// addresses and MACs (`unit recover`). Refused for a host that answers, and for a server
    /// the load balancer still hears: that host may only be cut off from Flotilla. Each server
    /// needs a fence first (`plan::fence`): `host_is_off` are the hosts the admin confirms
    /// are off (powered off, disconnected).
    Recover {
        from: Vec<String>,
        #[serde(default)]
        host_is_off: Vec<String>,
    },
    /// Put servers that kept running on a host that was cut off (fenced at the load balancer
    /// when it was lost) back into rotation once the host is ready again, after the load
    /// balancer's own check, without a reboot (`unit rejoin`; the monitor does it by itself
    /// when the host returns). Empty: every such server of the unit.
    Rejoin {
        servers: Vec<String>,
    },
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
            Self::Rollout { back: false, .. } => "rollout",
            Self::Rollout { back: true, .. } => "rollback",
            Self::Recover { .. } => "recover",
            Self::Rejoin { .. } => "rejoin",
        }
    }

    /// The policy this action runs under: a rollout's own, else the unit's.
    fn policy_for(&self, u: &Unit) -> RolloutPolicy {
        match self {
            Self::Rollout {
                policy: Some(p), ..
            } => p.clone(),
            _ => u.policy.clone(),
        }
    }

    /// A stop of every server of the unit (the seed's batch stop), not of chosen ones.
    fn whole_unit(&self) -> bool {
        matches!(self, Self::Stop { servers, .. } if servers.is_empty())
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

/// One batch of a rollout: its servers, and what the load balancer counted for the unit's
/// pool while they were out of service (none for Caddy, which keeps no counters).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct BatchReport {
    pub servers: Vec<String>,
    pub counters: Option<crate::lb::PoolCounters>,
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
    /// What it does to each of them (known once it began).
    #[serde(default)]
    kind: Option<OpKind>,
    /// The unit version it puts on servers (rollouts; others use the current one).
    #[serde(default)]
    target: Option<u32>,
    /// The disk and seed volumes of the servers it touches before it began (rollouts).
    #[serde(default)]
    volumes_before: Vec<(String, String, String)>,
    /// What those servers ran before their last swap, before it began (rollouts).
    #[serde(default)]
    priors_before: Vec<(String, Option<PriorVolumes>)>,
    /// Where a recovery re-creates each server (decided once, kept for a resume).
    #[serde(default)]
    moves: Vec<Move>,
    /// The fingerprint of the plan the admin confirmed: checked once the unit is locked.
    /// Not stored: a resumed operation goes on from where it was, whatever the plan is now.
    #[serde(skip)]
    expect: Option<String>,
    /// A recovery the admin confirmed: the moves of the plan whose fingerprint was checked
    /// under the lock. The run takes these as they are (it does not decide them again), so
    /// what runs is what was confirmed. Not stored: `moves` is, once the run begins.
    #[serde(skip)]
    confirmed_moves: Option<Vec<Move>>,
    /// This run resumes an interrupted operation.
    #[serde(skip)]
    resumed: bool,
}

impl OpArgs {
    /// A server as it was before this operation began (state, version, disk and seed): what
    /// an unwind puts back.
    fn as_before(&self, s: &Server) -> Server {
        let mut s = s.clone();
        if let Some((_, state, version)) = self.before.iter().find(|b| b.0 == s.name) {
            s.state = *state;
            s.version = *version;
        }
        if let Some((_, disk, seed)) = self.volumes_before.iter().find(|b| b.0 == s.name) {
            s.disk = disk.clone();
            s.seed = seed.clone();
        }
        if let Some((_, prior)) = self.priors_before.iter().find(|b| b.0 == s.name) {
            s.prior = prior.clone();
        }
        s
    }

    fn of(unit: &str, action: UnitAction) -> Self {
        Self {
            unit: unit.to_owned(),
            action,
            registered: Vec::new(),
            before: Vec::new(),
            kind: None,
            target: None,
            volumes_before: Vec::new(),
            priors_before: Vec::new(),
            moves: Vec::new(),
            expect: None,
            confirmed_moves: None,
            resumed: false,
        }
    }
}

/// A unit's own part of what a plan is computed from.
struct UnitFacts<'a> {
    name: &'a str,
    version: u32,
    image: (&'a str, u32),
    definition: (&'a str, u32),
    size: ServerSize,
    name_pattern: &'a str,
    addresses: &'a str,
    /// Load balancer and pool.
    lb: Option<(&'a str, &'a str)>,
    policy: RolloutPolicy,
}

impl<'a> UnitFacts<'a> {
    /// The unit as a plan sees it: with its pending version when `unit update` recorded one.
    fn of(u: &'a Unit) -> Self {
        let v = u.pending().or(u.current());
        Self {
            name: &u.name,
            version: v.map_or(u.current_version, |v| v.version),
            image: v.map_or(("", 0), |v| (v.image.as_str(), v.image_version)),
            definition: v.map_or(("", 0), |v| (v.definition.as_str(), v.definition_version)),
            size: v.map_or(
                ServerSize {
                    cpus: 0,
                    memory_mib: 0,
                    disk_gib: 0,
                },
                |v| v.size,
            ),
            name_pattern: &u.name_pattern,
            addresses: &u.addresses,
            lb: u.lb.as_deref().map(|l| (l, u.lb_pool.as_str())),
            policy: u.policy.clone(),
        }
    }
}

fn server_basis(
    name: &str,
    host: &str,
    address: &str,
    mac: &str,
    state: &str,
) -> plan::ServerBasis {
    plan::ServerBasis {
        name: name.to_owned(),
        host: host.to_owned(),
        address: address.to_owned(),
        mac: mac.to_owned(),
        state: state.to_owned(),
    }
}

/// Everything the steps of one operation share.
struct Ctx {
    op: i64,
    unit: Unit,
    /// The unit version the operation puts on servers (the current one, or a rollout's).
    uv: UnitVersion,
    image: ImageVersion,
    /// The unit's other versions with their masters: what servers ran before a rollout (its
    /// undo puts them back).
    prior: HashMap<u32, (UnitVersion, ImageVersion, Definition)>,
    /// Seconds a server must stay healthy before it is back in rotation (rollouts).
    gate_s: u32,
    /// What the operation does to each server (known once it began).
    kind: Option<OpKind>,
    /// The batch of a whole-unit stop is the whole unit.
    whole_unit: bool,
    /// When the operation began (a rollout's deadline counts from here).
    began: Instant,
    /// A rollout stopped because its deadline passed.
    deadline_passed: AtomicBool,
    /// A rollout stopped because the load balancer counted more failed requests than allowed.
    too_many_failed: AtomicBool,
    /// A rollout with a limit on failed requests stopped because the counters were unreadable.
    counters_missing: AtomicBool,
    /// A rollout's batches with the pool's counters during each.
    batches: std::sync::Mutex<Vec<BatchReport>>,
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
    /// A recovery's moves, by server.
    moves: HashMap<String, Move>,
    /// What the operation was asked to do.
    action: UnitAction,
    /// What a step found out, by server and step, for its `succeeded` journal row.
    said: std::sync::Mutex<HashMap<(String, Step), String>>,
    /// Servers whose disk this operation created. A disk it found instead (left by an earlier
    /// failed operation whose undo could not reach the host, or by the crashed run it resumes)
    /// may have been booted already: its guest may know the version's instance id.
    made_disks: std::sync::Mutex<HashSet<String>>,
}

impl Ctx {
    /// Keeps what step `step` of `server` found out for its journal row.
    fn note(&self, server: &str, step: Step, said: String) {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((server.to_owned(), step), said);
    }

    /// What step `step` of `server` found out (once; empty when nothing).
    fn said(&self, server: &str, step: Step) -> String {
        self.said
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(server.to_owned(), step))
            .unwrap_or_default()
    }

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
        payload_volume(&self.unit.name, self.uv.version)
    }

    /// A unit version and its master: the target or a prior one.
    fn release(&self, version: u32) -> Result<(&UnitVersion, &ImageVersion), OpError> {
        if version == self.uv.version {
            return Ok((&self.uv, &self.image));
        }
        self.prior
            .get(&version)
            .map(|(uv, image, _)| (uv, image))
            .ok_or_else(|| {
                InventoryError::NotFound {
                    kind: "unit version",
                    name: format!("{}:v{version}", self.unit.name),
                }
                .into()
            })
    }

    /// The definition of a unit version: the target's or a prior one's (what a server going
    /// back to it is checked against).
    fn definition(&self, version: u32) -> &Definition {
        self.prior.get(&version).map_or(&self.def, |(_, _, d)| d)
    }
}

// The decisions made from plain data live in `plan`: these names keep their callers here.
use crate::plan::names::{disk_volume, payload_volume, seed_volume, serial_volume};
pub use crate::plan::unit::{default_size, delete_confirmation};

fn budget_refusal(
    u: &Unit,
    kind: OpKind,
    targets: &[Server],
    action: &UnitAction,
) -> Option<String> {
    plan::unit::budget_refusal(u, kind, targets, &action.policy_for(u), action.whole_unit())
}

fn rollout_target(u: &Unit, back: bool) -> Result<u32, OpError> {
    Ok(plan::unit::rollout_target(u, back)?)
}

fn parse_ref(field: &'static str, value: &str) -> Result<(String, Option<u32>), OpError> {
    Ok(plan::unit::parse_ref(field, value)?)
}

impl Engine {
    pub fn unit_list(&self) -> Result<Vec<Unit>, OpError> {
        let mut units = self.inventory.unit_list()?;
        let hosts = self.host_list()?;
        for u in &mut units {
            Self::say_fenced(u, &hosts);
        }
        Ok(units)
    }

    pub fn unit_show(&self, name: &str) -> Result<Unit, OpError> {
        let mut u = self.inventory.unit_get(name.trim())?;
        Self::say_fenced(&mut u, &self.host_list()?);
        Ok(u)
    }

    /// Registers a unit: its first version and its servers. Creates nothing on any host.
    pub fn unit_create(&self, form: &UnitForm) -> Result<UnitCreated, OpError> {
        self.unit_create_planned(form, None)
    }

    /// Registers a unit as [`Engine::unit_create`] does — only when the wizard's review
    /// (`unit_preview`) still has the fingerprint `expect`, if one is given: the servers
    /// registered are the ones the admin saw.
    pub fn unit_create_planned(
        &self,
        form: &UnitForm,
        expect: Option<&str>,
    ) -> Result<UnitCreated, OpError> {
        let outcome = match expect {
            Some(expect) => Self::plan_unchanged(expect, || self.unit_preview(form))
                .and_then(|()| self.unit_create_inner(form)),
            None => self.unit_create_inner(form),
        };
        self.audit(
            "unit.create",
            &format!("unit/{}", form.name.trim()),
            &outcome,
        );
        outcome
    }

    /// The size a unit of `definition` (`DEF` or `DEF:VERSION`) gets when none is given.
    pub fn unit_default_size(&self, definition: &str) -> Result<ServerSize, OpError> {
        let (n, v) = parse_ref("definition", definition)?;
        let v = self.def_show(&n, v)?.version;
        Ok(default_size(&self.def_parsed(&v.name, v.version)?))
    }

    /// Checks a form and works out its servers (names, addresses, MACs, hosts) without
    /// writing anything.
    pub(super) fn unit_validate(&self, form: &UnitForm) -> Result<(NewUnit, Vec<String>), OpError> {
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
        let size = form.size.unwrap_or_else(|| default_size(&def));
        size.validate()?;
        let policy = form.policy.clone().unwrap_or_default();
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
                        if inst.kind == crate::model::LbKind::Caddy {
                            inst.route_id.clone()
                        } else {
                            format!("be_{name}")
                        }
                    });
                super::lbs::check_pool(&pool)?;
                self.caddy_list_free(&name, &inst, &pool)?;
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

    pub(super) fn unit_create_inner(&self, form: &UnitForm) -> Result<UnitCreated, OpError> {
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
        // The deploy plan of the unit once created: the same fingerprint.
        let fingerprint = self.fingerprint_of(
            &UnitAction::Deploy,
            &UnitFacts {
                name: &new.name,
                version: 1,
                image: (&new.image.0, new.image.1),
                definition: (&new.definition.0, new.definition.1),
                size: new.size,
                name_pattern: &new.name_pattern,
                addresses: &new.addresses,
                lb: new.lb.as_ref().map(|(l, p)| (l.as_str(), p.as_str())),
                policy: new.policy,
            },
            new.servers
                .iter()
                .map(|s| {
                    server_basis(
                        &s.name,
                        &s.host,
                        &s.address,
                        &s.mac,
                        &format!("{}@0", ServerState::Planned.as_str()),
                    )
                })
                .collect(),
            Vec::new(),
        )?;
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
                    fence: None,
                })
                .collect(),
            unit: new.name,
            action: "deploy".into(),
            warnings,
            confirm: None,
            in_service_during: None,
            estimate_s: None,
            estimate_from: "a new unit: no earlier operation to estimate from".into(),
            fingerprint,
        })
    }

    /// What the hosts and the load balancer say about a unit's servers now.
    pub async fn unit_live(&self, unit: &str) -> Result<Vec<ServerLive>, OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        Ok(self.live_of(std::slice::from_ref(&u)).await?.servers)
    }

    /// Every server in the inventory with the memory its unit's current version promises it.
    pub(super) fn registered_servers(&self) -> Result<Vec<plan::Registered>, OpError> {
        Ok(self
            .inventory
            .unit_list()?
            .into_iter()
            .flat_map(|u| {
                let mem = u.current().map_or(0, |v| u64::from(v.size.memory_mib));
                u.servers.into_iter().map(move |s| plan::Registered {
                    unit: s.unit,
                    name: s.name,
                    host: s.host,
                    address: s.address,
                    mac: s.mac,
                    memory_mib: mem,
                })
            })
            .collect())
    }

    /// Names, addresses, MACs and hosts for the servers of a form (`plan::allocate`, against
    /// every registered server and host).
    pub(super) fn servers_for(
        &self,
        unit: &str,
        form: &UnitForm,
        size: ServerSize,
    ) -> Result<(Vec<NewServer>, String, String), OpError> {
        let hosts: Vec<plan::HostView> = self
            .host_list()?
            .into_iter()
            .map(|h| plan::HostView {
                memory_mib: h.facts.as_ref().map_or(0, |f| f.memory_bytes >> 20),
                name: h.name.to_string(),
                network: h.network,
                gateway: h.gateway,
            })
            .collect();
        let registered = self.registered_servers()?;
        let wanted: Vec<plan::Wanted> = form
            .servers
            .iter()
            .map(|s| plan::Wanted {
                name: s.name.clone(),
                address: s.address.clone(),
                host: s.host.clone(),
            })
            .collect();
        let req = plan::AllocRequest {
            unit,
            servers: &wanted,
            count: form.count,
            name_pattern: &form.name_pattern,
            addresses: &form.addresses,
            hosts: &form.hosts,
            memory_mib: u64::from(size.memory_mib),
        };
        let a = plan::allocate(&req, &hosts, &registered).map_err(|e| match e {
            plan::AllocError::Invalid(v) => OpError::from(v),
            plan::AllocError::NameTaken(name) => InventoryError::Duplicate {
                kind: "server",
                name,
            }
            .into(),
            plan::AllocError::AddressTaken(name) => InventoryError::Duplicate {
                kind: "server address",
                name,
            }
            .into(),
            plan::AllocError::UnknownHost(name) => {
                InventoryError::NotFound { kind: "host", name }.into()
            }
        })?;
        let servers = a
            .servers
            .into_iter()
            .map(|s| NewServer {
                name: s.name,
                host: s.host,
                address: s.address,
                mac: s.mac,
            })
            .collect();
        Ok((servers, a.name_pattern, a.addresses))
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
        let args = OpArgs::of(&u.name, UnitAction::Deploy);
        let ctx = self.context(0, &u, &args, Arc::new(|_| {})).await?;
        let (uv, image) = ctx.release(s.version.unwrap_or(ctx.uv.version))?;
        let spec = self
            .domain_spec(
                &ctx,
                s,
                ctx.host(&s.host)?,
                uv,
                image,
                &s.disk_volume(),
                &s.seed_volume(),
            )
            .await?;
        Ok(crate::hypervisor::domain_xml(&spec))
    }
}

/// An error with libvirt's own words, as the report shows it.
pub(super) use super::exec::describe;
