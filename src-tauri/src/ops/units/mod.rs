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

    /// The fingerprint of a plan for `action` on a unit with these servers (and the new ones
    /// it would register): the unit, its load-balancer binding and its servers' hosts as the
    /// inventory has them now.
    fn fingerprint_of(
        &self,
        action: &UnitAction,
        unit: &UnitFacts<'_>,
        servers: Vec<plan::ServerBasis>,
        new_servers: Vec<plan::ServerBasis>,
    ) -> Result<String, OpError> {
        let action_policy = match action {
            UnitAction::Rollout { policy, .. } => policy.clone(),
            _ => None,
        };
        let (action_servers, count) = match action {
            UnitAction::Start { servers }
            | UnitAction::Rejoin { servers }
            | UnitAction::Stop { servers, .. }
            | UnitAction::Restart { servers, .. } => (servers.clone(), None),
            UnitAction::Scale { count } => (Vec::new(), Some(*count)),
            // A canary changes which servers run; a rollout's own policy, how.
            UnitAction::Rollout { canary, .. } => (Vec::new(), *canary),
            // Not the confirmation: it changes the fences the plan shows, not what runs where.
            UnitAction::Recover { from, .. } => (from.clone(), None),
            UnitAction::Deploy | UnitAction::Delete { .. } => (Vec::new(), None),
        };
        let lb = match unit.lb {
            Some((name, pool)) => {
                let i = self.inventory.lb_get(name)?;
                Some(plan::LbBasis {
                    name: i.name,
                    kind: i.kind,
                    endpoint: i.endpoint,
                    route_id: i.route_id,
                    pool: pool.to_owned(),
                })
            }
            None => None,
        };
        let used: HashSet<&str> = servers
            .iter()
            .chain(&new_servers)
            .map(|s| s.host.as_str())
            .collect();
        let hosts = self
            .host_list()?
            .into_iter()
            .filter(|h| used.contains(h.name.as_str()))
            .map(|h| plan::HostBasis {
                name: h.name.to_string(),
                uri: h.uri.to_string(),
                pool: h.pool.as_str().to_owned(),
                bridge: h.bridge.as_str().to_owned(),
                network: h.network,
                gateway: h.gateway,
                domain_type: h.domain_type,
            })
            .collect();
        Ok(plan::fingerprint(&plan::PlanBasis {
            action: action.name().to_owned(),
            action_servers,
            count,
            unit: unit.name.to_owned(),
            version: unit.version,
            image: unit.image.0.to_owned(),
            image_version: unit.image.1,
            definition: unit.definition.0.to_owned(),
            definition_version: unit.definition.1,
            size: unit.size,
            name_pattern: unit.name_pattern.to_owned(),
            addresses: unit.addresses.to_owned(),
            lb,
            policy: action_policy.unwrap_or_else(|| unit.policy.clone()),
            servers,
            new_servers,
            hosts,
        }))
    }

    /// `Ok` when a fresh plan (made by `make` once `expect` is known to be a fingerprint)
    /// still has the fingerprint `expect` the admin was shown; otherwise the refusal that
    /// carries the new plan.
    pub(super) fn plan_unchanged(
        expect: &str,
        make: impl FnOnce() -> Result<OpPlan, OpError>,
    ) -> Result<(), OpError> {
        let shown = plan::parse_fingerprint(expect)?;
        let fresh = make()?;
        if fresh.fingerprint == shown {
            Ok(())
        } else {
            Err(OpError::PlanChanged {
                shown,
                plan: Box::new(fresh),
            })
        }
    }

    /// Runs `action` as [`Engine::unit_run`] does — only when a fresh plan still has the
    /// fingerprint `expect` of the plan the admin confirmed, if one is given. Otherwise
    /// nothing is done and the error carries the new plan.
    ///
    /// The check is made once the operation holds the unit's lock, so nothing can change the
    /// unit between the check and the first step.
    pub async fn unit_run_planned(
        &self,
        unit: &str,
        action: UnitAction,
        expect: Option<&str>,
        progress: StepFn,
    ) -> Result<OpReport, OpError> {
        if let Some(expect) = expect {
            if let Err(e) = plan::parse_fingerprint(expect) {
                let refused: Result<(), OpError> = Err(e.into());
                self.audit(
                    &format!("unit.{}", action.name()),
                    &format!("unit/{}", unit.trim()),
                    &refused,
                );
                refused?;
            }
        }
        self.unit_run_with(unit, action, expect.map(str::to_owned), progress)
            .await
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

    /// The dry run: which servers the action touches and the steps of each, in order.
    pub fn unit_plan(&self, unit: &str, action: &UnitAction) -> Result<OpPlan, OpError> {
        Ok(self.unit_plan_moves(unit, action)?.0)
    }

    /// Under the unit's lock: `Ok` when a fresh plan still has the fingerprint `expect` the
    /// admin confirmed (else the refusal that carries the new plan, as [`Self::plan_unchanged`]);
    /// a recovery then carries that plan's moves in `args.confirmed_moves`, and runs those.
    fn plan_confirmed(&self, expect: &str, args: &mut OpArgs) -> Result<(), OpError> {
        let mut moves = None;
        Self::plan_unchanged(expect, || {
            let (plan, m) = self.unit_plan_moves(&args.unit, &args.action)?;
            moves = m;
            Ok(plan)
        })?;
        args.confirmed_moves = moves;
        Ok(())
    }

    /// [`Engine::unit_plan`], and a recovery's moves (decided once: its targets, fingerprint
    /// and fences are of these).
    fn unit_plan_moves(
        &self,
        unit: &str,
        action: &UnitAction,
    ) -> Result<(OpPlan, Option<Vec<Move>>), OpError> {
        let u = self.inventory.unit_get(unit.trim())?;
        let moves = match action {
            UnitAction::Recover { from, host_is_off } => {
                Some(self.recover_moves(&u, from, host_is_off)?)
            }
            _ => None,
        };
        let (kind, mut targets, new) = match &moves {
            Some(moves) => (OpKind::Recover, Self::moved(&u, moves), Vec::new()),
            None => self.targets(&u, action)?,
        };
        let fingerprint = self.fingerprint_of(
            action,
            &UnitFacts::of(&u),
            u.servers
                .iter()
                .map(|s| {
                    let state = format!("{}@{}", s.state.as_str(), s.version.unwrap_or(0));
                    server_basis(&s.name, &s.host, &s.address, &s.mac, &state)
                })
                .collect(),
            new.iter()
                .map(|s| server_basis(&s.name, &s.host, &s.address, &s.mac, "new"))
                // Where a recovery re-creates each server: the run must go where the plan said.
                .chain(
                    targets
                        .iter()
                        .filter(|_| kind == OpKind::Recover)
                        .map(|s| server_basis(&s.name, &s.host, &s.address, &s.mac, "moved")),
                )
                .collect(),
        )?;
        let lb = u.lb.is_some();
        let target = match action {
            UnitAction::Rollout { back, .. } => Some(rollout_target(&u, *back)?),
            _ => None,
        };
        let mut warnings = Vec::new();
        if let Some(why) = budget_refusal(&u, kind, &targets, action) {
            warnings.push(format!("this will not start: {why}"));
        }
        // A recovery: the fence of each server, and whether the recovery may start.
        let fences = match (action, &moves) {
            (UnitAction::Recover { host_is_off, .. }, Some(moves)) => {
                let fences = self.recover_fences(&u, moves, host_is_off)?;
                if let Some(why) = plan::fence::manual_refusal(&u.name, &fences) {
                    warnings.push(format!("this will not start: {why}"));
                }
                fences
            }
            _ => Vec::new(),
        };
        let mut servers: Vec<ServerPlan> = targets
            .drain(..)
            .map(|s| ServerPlan {
                fence: fences
                    .iter()
                    .find(|(name, _, _)| *name == s.name)
                    .map(|(_, host, f)| ServerFence {
                        host: host.clone(),
                        words: f.words(host),
                        fence: f.clone(),
                    }),
                steps: plan::server_steps(kind, lb),
                note: match (target, action) {
                    (Some(t), _) => update::rollout_note(&u, &s, t),
                    (None, UnitAction::Recover { .. }) => u
                        .servers
                        .iter()
                        .find(|o| o.name == s.name)
                        .map(|o| format!("re-created here: its host {} failed", o.host))
                        .unwrap_or_default(),
                    _ => String::new(),
                },
                server: s.name,
                host: s.host,
                address: s.address,
            })
            .collect();
        for s in new {
            servers.push(ServerPlan {
                steps: plan::server_steps(OpKind::Deploy, lb),
                server: s.name,
                host: s.host,
                address: s.address,
                note: "new".into(),
                fence: None,
            });
        }
        if matches!(action, UnitAction::Deploy | UnitAction::Rollout { .. }) && servers.is_empty() {
            warnings.push("every server is deployed already: nothing to do".into());
        }
        if let (Some(_), OpKind::Rollout | OpKind::Restart) = (&u.lb, kind) {
            match self.inventory.unit_lb_checks(&u.name)?.as_str() {
                "tcp" | "tls" => warnings.push(
                    "the load balancer checks these servers over TCP only: a server counts as ready once its port is open, before the application answers; set `option httpchk GET <health path>` on the backend (docs/haproxy.md)".into(),
                ),
                _ => {}
            }
        }
        if let Some(lb) = &u.lb {
            if self.lb_show(lb)?.kind == crate::model::LbKind::Caddy {
                warnings.push("Caddy has no drain state: servers leave rotation at once and get the drain timeout as a grace period".into());
            }
        }
        let batch_size = plan::batch_size(
            kind,
            action.policy_for(&u).max_unavailable,
            servers.len(),
            action.whole_unit(),
        ) as u32;
        let in_service = u
            .servers
            .iter()
            .filter(|s| {
                s.state == ServerState::Running && (u.lb.is_none() || s.lb_state == "ready")
            })
            .count() as u32;
        let in_service_during = match kind {
            OpKind::Restart | OpKind::Rollout | OpKind::Stop | OpKind::Remove => {
                Some(in_service.saturating_sub(batch_size.min(servers.len() as u32)))
            }
            OpKind::Deploy | OpKind::Start | OpKind::Recover | OpKind::Rejoin => None,
        };
        let batches = (servers.len() as u32).div_ceil(batch_size.max(1));
        let (estimate_s, estimate_from) = match self.per_server_time(&u.name, action.name())? {
            Some((secs, ops)) if batches > 0 => (
                Some((secs * f64::from(batches)).round() as u32),
                format!(
                    "{batches} batches × {secs:.0} s per server, the average of this unit's last {ops} {} operations",
                    action.name()
                ),
            ),
            _ => (
                None,
                format!(
                    "no earlier {} of this unit to estimate from",
                    action.name()
                ),
            ),
        };
        let plan = OpPlan {
            unit: u.name.clone(),
            action: action.name().into(),
            batch_size,
            servers,
            warnings,
            confirm: match action {
                UnitAction::Delete { .. } => delete_confirmation(&u),
                _ => None,
            },
            fingerprint,
            in_service_during,
            estimate_s,
            estimate_from,
        };
        Ok((plan, moves))
    }

    /// How long one server took on average in this unit's last few succeeded operations of
    /// `kind` (first step begun → last step done, from the journal's whole-second times), and
    /// how many operations that is from.
    pub(crate) fn per_server_time(
        &self,
        unit: &str,
        kind: &str,
    ) -> Result<Option<(f64, usize)>, OpError> {
        let target = format!("unit/{unit}");
        let parse = |at: &str| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp())
        };
        let mut times = Vec::new();
        let mut ops = 0;
        for op in self
            .inventory
            .operation_list(200)?
            .into_iter()
            .filter(|o| o.target == target && o.kind == kind && o.state == "succeeded")
            .take(5)
        {
            let mut per: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
            for st in &op.steps {
                let (Some((server, _)), Some(t)) = (st.step.split_once(": "), parse(&st.at)) else {
                    continue;
                };
                let e = per.entry(server).or_insert((t, t));
                e.0 = e.0.min(t);
                e.1 = e.1.max(t);
            }
            if !per.is_empty() {
                ops += 1;
                times.extend(per.values().map(|(a, b)| (b - a) as f64));
            }
        }
        Ok((!times.is_empty()).then(|| (times.iter().sum::<f64>() / times.len() as f64, ops)))
    }

    /// The kind of per-server work, the existing servers it applies to, and servers a scale
    /// out would register.
    pub(super) fn targets(
        &self,
        u: &Unit,
        action: &UnitAction,
    ) -> Result<(OpKind, Vec<Server>, Vec<NewServer>), OpError> {
        let chosen = |names: &[String], state: ServerState| -> Result<Vec<Server>, OpError> {
            plan::unit::chosen(u, names, state).map_err(|name| {
                InventoryError::NotFound {
                    kind: "server of this unit",
                    name,
                }
                .into()
            })
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
            UnitAction::Rejoin { servers } => (OpKind::Rejoin, self.rejoining(u, servers)?, vec![]),
            UnitAction::Recover { from, host_is_off } => (
                OpKind::Recover,
                Self::moved(u, &self.recover_moves(u, from, host_is_off)?),
                vec![],
            ),
            UnitAction::Rollout { back, policy, .. } => {
                if let Some(p) = policy {
                    p.validate()?;
                }
                if action.policy_for(u).max_failed_requests.is_some() {
                    let counts = match &u.lb {
                        Some(lb) => {
                            self.inventory.lb_get(lb)?.kind == crate::model::LbKind::Haproxy
                        }
                        None => false,
                    };
                    if !counts {
                        return Err(ValidationError::new(
                            "max-failed-requests",
                            format!(
                                "unit {}'s load balancer keeps no request counters (only HAProxy does), so a limit on failed requests could not be checked",
                                u.name
                            ),
                        )
                        .into());
                    }
                }
                let target = rollout_target(u, *back)?;
                let canary = match action {
                    UnitAction::Rollout { canary, .. } => *canary,
                    _ => None,
                };
                (
                    OpKind::Rollout,
                    plan::unit::rollout_servers(u, target, canary)?,
                    vec![],
                )
            }
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
                        let size = u.current().map_or(plan::FALLBACK_SIZE, |v| v.size);
                        self.servers_for(&u.name, &form, size)?.0
                    } else {
                        Vec::new()
                    };
                    // Planned servers (a scale out that was interrupted) deploy too.
                    (OpKind::Deploy, chosen(&[], ServerState::Planned)?, new)
                } else {
                    let names: Vec<&str> = u.servers.iter().map(|s| s.name.as_str()).collect();
                    let remove: Vec<Server> =
                        plan::scale_in(&names, &u.name_pattern, (have - count) as usize)
                            .into_iter()
                            .map(|i| u.servers[i].clone())
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
