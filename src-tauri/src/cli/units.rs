//! `flotillactl unit|lb|op` and `host set`: thin wrappers over `ops::units` and `ops::lbs`.

use super::output::{print_json, say_line, table};
use crate::error::{ApiError, ErrorCode};
use crate::inventory::StepStatus;
use crate::inventory::{LbInstance, Unit};
use crate::model::{RolloutPolicy, ServerSize};
use crate::ops::lbs::LbTarget;
use crate::ops::units::{
    delete_confirmation, OpPlan, OpReport, ServerForm, StepEvent, StepFn, UnitAction, UnitForm,
    UnitUpdate,
};
use crate::ops::{Engine, OpError};
use clap::Subcommand;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[derive(Debug, Subcommand)]
pub(super) enum UnitCommand {
    /// Register a unit: master and definition versions, size, servers, load balancer. Creates
    /// nothing on any host (that is `unit deploy`).
    Create(Box<CreateArgs>),
    /// List units with their servers' states.
    List,
    /// Show a unit: versions, servers (host, address, MAC, state, LB state).
    Show { name: String },
    /// Ask the hosts and the load balancer now: each server's power state, LB status, health.
    Status { name: String },
    /// The dry run of an action: the ordered steps per server.
    Plan {
        name: String,
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Create every server that is not deployed yet; a deployed unit is left as it is.
    Deploy {
        name: String,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Start stopped servers (all, or those named): start → health check → LB ready.
    Start {
        name: String,
        #[arg(long = "server")]
        servers: Vec<String>,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Put servers that kept running through their host's loss back into rotation (they were
    /// taken out when the host was lost and it is back): LB health check → LB ready, no
    /// reboot. The monitor does this by itself when the host returns.
    Rejoin {
        name: String,
        #[arg(long = "server")]
        servers: Vec<String>,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Stop running servers: LB drain → sessions end (or drain timeout) → graceful shutdown.
    Stop {
        name: String,
        #[arg(long = "server")]
        servers: Vec<String>,
        /// Power off servers that ignore the shutdown request.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Stop then start running servers, max-unavailable at a time.
    Restart {
        name: String,
        #[arg(long = "server")]
        servers: Vec<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Grow or shrink the unit to COUNT servers (new ones deploy; removed ones are drained,
    /// stopped and deleted).
    Scale {
        name: String,
        count: u32,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Record the unit's next version (master, definition, size) as pending; the unit keeps
    /// serving on its current version until `unit rollout`. Changes nothing on the hosts.
    Update {
        name: String,
        /// Master version: IMAGE:VERSION (or IMAGE for its newest).
        #[arg(long)]
        image: Option<String>,
        /// Definition version: DEF:VERSION (or DEF for its newest).
        #[arg(long)]
        definition: Option<String>,
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory per server in MiB.
        #[arg(long)]
        memory: Option<u32>,
        /// Disk per server in GiB (0: the master's size).
        #[arg(long)]
        disk: Option<u32>,
    },
    /// Move the running servers to the pending version, max-unavailable at a time: prestage,
    /// drain, stop, swap (new disk, or in place), start, health gate, back in rotation. A
    /// server that fails its gate rolls every changed server back (exit 17).
    Rollout {
        name: String,
        /// Update only this many servers, then pause (exit 18) until `unit promote`.
        #[arg(long)]
        canary: Option<u32>,
        #[command(flatten)]
        policy: RolloutFlags,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Go on with a paused rollout (after a canary or a pause): the servers not yet updated.
    #[command(alias = "resume")]
    Promote {
        name: String,
        /// Only this many more servers, then pause again.
        #[arg(long)]
        canary: Option<u32>,
        #[command(flatten)]
        policy: RolloutFlags,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Ask the unit's running rollout (from any window or terminal) to pause at its next
    /// safe point, between batches.
    Pause { name: String },
    /// Show or change the unit's policy for rollouts, restarts and stops of chosen servers.
    Policy {
        name: String,
        #[command(flatten)]
        policy: RolloutFlags,
    },
    /// Roll back: a rollout in progress goes back to the current version; otherwise the
    /// version before the current one (or --to) is recorded again and rolled out.
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<u32>,
    },
    /// The unit's versions, newest first, with what changed in each.
    History { name: String },
    /// Re-create the servers of lost hosts on surviving ones, with their names, addresses and
    /// MACs (dry run: `unit plan NAME recover`, which names each server's fence). Only from
    /// hosts the monitor says failed (libvirt lost and the load balancer hears nothing from
    /// their servers), and only once each server's old copy is known to be off: its host
    /// powered off through its BMC, its guest's isolation response waited out, or your
    /// confirmation (--host-is-off). A lost host may only be cut off, its servers running.
    Recover {
        name: String,
        /// A failed host to take servers from (repeat); default: every failed host of the unit.
        #[arg(long = "from")]
        from: Vec<String>,
        /// You confirm that this host is off (powered off, disconnected), so its servers may
        /// be re-created elsewhere (repeat); recorded with your name in the journal and audit.
        #[arg(long = "host-is-off", value_name = "HOST")]
        host_is_off: Vec<String>,
        #[command(flatten)]
        plan: Confirmed,
    },
    /// Remove everything the unit created (servers, volumes, LB members) and the unit.
    Delete {
        name: String,
        /// Required when servers are deployed.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        plan: Confirmed,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub(super) struct Confirmed {
    /// Run only if the plan is still the one `unit plan` showed with this fingerprint; if
    /// the inventory changed since, nothing is done and the new plan is shown (exit 15).
    #[arg(long = "plan", value_name = "FINGERPRINT")]
    fingerprint: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct CreateArgs {
    name: String,
    /// Master version: IMAGE:VERSION (or IMAGE for its newest).
    #[arg(long)]
    image: String,
    /// Definition version: DEF:VERSION (or DEF for its newest).
    #[arg(long)]
    definition: String,
    /// How many servers to register by --name-pattern and --addresses.
    #[arg(long, default_value_t = 0)]
    count: u32,
    /// Server names, with {n} for the number: shop-{n} or shop-{n:02}.
    #[arg(long, default_value = "")]
    name_pattern: String,
    /// Addresses for the servers: 10.77.0.11-10.77.0.40.
    #[arg(long, default_value = "")]
    addresses: String,
    /// Hosts to place the servers on (repeat; default: every host with a network).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// A server by name: NAME=ADDRESS or NAME=ADDRESS@HOST (repeat).
    #[arg(long = "server")]
    servers: Vec<String>,
    /// CPUs per server (default: the definition's [resources], else 1).
    #[arg(long)]
    cpus: Option<u32>,
    /// Memory per server in MiB (default: the definition's [resources], else 256).
    #[arg(long)]
    memory: Option<u32>,
    /// Disk per server in GiB; 0 keeps the master's size.
    #[arg(long)]
    disk: Option<u32>,
    /// Load balancer (see `lb add`).
    #[arg(long)]
    lb: Option<String>,
    /// Backend (HAProxy) or route @id (Caddy) of the unit; default be_NAME / the route id.
    #[arg(long)]
    pool: Option<String>,
    #[arg(long, default_value_t = 1)]
    max_unavailable: u32,
    /// Seconds to wait for a draining server's sessions to end.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u32,
    /// Seconds a started server has to pass its health check.
    #[arg(long, default_value_t = 300)]
    health_timeout: u32,
    /// Seconds a server has to shut down after the ACPI request.
    #[arg(long, default_value_t = 60)]
    shutdown_timeout: u32,
    /// Servers that stay in service during a rollout or restart (default: all but one, at
    /// least one).
    #[arg(long)]
    min_in_service: Option<u32>,
    /// Seconds an updated server must stay healthy before it is back in rotation.
    #[arg(long, default_value_t = 10)]
    min_healthy_time: u32,
    /// Seconds a rollout may take (checked between batches); 0: no deadline.
    #[arg(long, default_value_t = 0)]
    rollout_deadline: u32,
    /// When a server fails its gate, undo only that server and leave the unit mixed (by
    /// default every server that changed goes back).
    #[arg(long)]
    no_auto_rollback: bool,
    /// Roll back once HAProxy counted more failed requests (5xx, broken responses) during a
    /// rollout.
    #[arg(long)]
    max_failed_requests: Option<u64>,
    /// Recoveries Flotilla may start by itself in 24 h when the monitor finds a host of the
    /// unit failed; 0 (the default): the admin recovers.
    #[arg(long, default_value_t = 0)]
    auto_recover_per_day: u32,
    /// The isolation response: a server that cannot reach --isolation-address for this many
    /// seconds stops its app and powers itself off, so a recovery may re-create it elsewhere
    /// after that time (10-3600; 0, the default: off).
    #[arg(long, default_value_t = 0)]
    isolation_timeout: u32,
    /// ADDRESS[:PORT] the guests check (the load balancer as they reach it); default: the
    /// gateway of their network, port 80.
    #[arg(long, default_value = "")]
    isolation_address: String,
}

/// A rollout's own policy: what is given replaces the unit's for this rollout.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct RolloutFlags {
    #[arg(long)]
    max_unavailable: Option<u32>,
    #[arg(long)]
    min_in_service: Option<u32>,
    /// Seconds an updated server must stay healthy before it is back in rotation.
    #[arg(long)]
    min_healthy_time: Option<u32>,
    #[arg(long)]
    drain_timeout: Option<u32>,
    #[arg(long)]
    health_timeout: Option<u32>,
    /// Seconds the rollout may take (checked between batches).
    #[arg(long)]
    deadline: Option<u32>,
    /// Undo only a server that fails its gate; the others keep the new version.
    #[arg(long, conflicts_with = "auto_rollback")]
    no_auto_rollback: bool,
    /// Every server that changed goes back when one fails its gate (the default).
    #[arg(long)]
    auto_rollback: bool,
    /// Roll back once HAProxy counted more failed requests (5xx, broken responses).
    #[arg(long)]
    max_failed_requests: Option<u64>,
    /// Recoveries Flotilla may start by itself in 24 h when the monitor finds a host of the
    /// unit failed (0: none, the default).
    #[arg(long)]
    auto_recover_per_day: Option<u32>,
    /// Seconds a server may not reach --isolation-address before it powers itself off (the
    /// isolation response; 10-3600, 0: off). Servers get it with their next seed.
    #[arg(long)]
    isolation_timeout: Option<u32>,
    /// ADDRESS[:PORT] the isolation response checks; "" for the gateway of the servers'
    /// network.
    #[arg(long)]
    isolation_address: Option<String>,
}

impl RolloutFlags {
    /// The unit's policy with these flags over it; `None` when no flag is given.
    fn over(&self, unit: &RolloutPolicy) -> Option<RolloutPolicy> {
        let given = self.max_unavailable.is_some()
            || self.min_in_service.is_some()
            || self.min_healthy_time.is_some()
            || self.drain_timeout.is_some()
            || self.health_timeout.is_some()
            || self.deadline.is_some()
            || self.no_auto_rollback
            || self.auto_rollback
            || self.max_failed_requests.is_some()
            || self.auto_recover_per_day.is_some()
            || self.isolation_timeout.is_some()
            || self.isolation_address.is_some();
        given.then(|| RolloutPolicy {
            max_unavailable: self.max_unavailable.unwrap_or(unit.max_unavailable),
            min_in_service: self.min_in_service.or(unit.min_in_service),
            min_healthy_s: self.min_healthy_time.unwrap_or(unit.min_healthy_s),
            drain_timeout_s: self.drain_timeout.unwrap_or(unit.drain_timeout_s),
            health_timeout_s: self.health_timeout.unwrap_or(unit.health_timeout_s),
            rollout_deadline_s: self.deadline.unwrap_or(unit.rollout_deadline_s),
            auto_rollback: (unit.auto_rollback || self.auto_rollback) && !self.no_auto_rollback,
            max_failed_requests: self.max_failed_requests.or(unit.max_failed_requests),
            auto_recover_per_day: self
                .auto_recover_per_day
                .unwrap_or(unit.auto_recover_per_day),
            isolation_timeout_s: self.isolation_timeout.unwrap_or(unit.isolation_timeout_s),
            isolation_address: self
                .isolation_address
                .clone()
                .unwrap_or_else(|| unit.isolation_address.clone()),
            ..unit.clone()
        })
    }
}

#[derive(Debug, Clone, Subcommand)]
pub(super) enum PlanAction {
    Deploy,
    Start {
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    /// Servers held out of rotation because their host was lost, back in.
    Rejoin {
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    Stop {
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    Restart {
        #[arg(long = "server")]
        servers: Vec<String>,
    },
    Scale {
        count: u32,
    },
    Delete,
    /// Moving the running servers to the pending version.
    Rollout {
        #[arg(long)]
        canary: Option<u32>,
        #[command(flatten)]
        policy: RolloutFlags,
    },
    /// Back to the current version (a rollout in progress).
    Rollback,
    /// Re-creating the servers of failed hosts elsewhere, with each server's fence.
    Recover {
        #[arg(long = "from")]
        from: Vec<String>,
        /// Take this host as confirmed off (the fences shown then).
        #[arg(long = "host-is-off", value_name = "HOST")]
        host_is_off: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum LbCommand {
    /// Register a load balancer (it is contacted once to check the address).
    Add {
        name: String,
        /// HAProxy runtime API on a unix socket (`stats socket … level admin`).
        #[arg(long, group = "target")]
        haproxy_socket: Option<String>,
        /// HAProxy runtime API on TCP, HOST:PORT.
        #[arg(long, group = "target")]
        haproxy_addr: Option<String>,
        /// Caddy admin API URL, e.g. http://127.0.0.1:2019.
        #[arg(long, group = "target", requires = "caddy_route_id")]
        caddy_admin: Option<String>,
        /// The @id of the reverse_proxy handler Flotilla manages.
        #[arg(long)]
        caddy_route_id: Option<String>,
    },
    List,
    Show {
        name: String,
    },
    /// Connect and show the pools of the units bound to it and their members.
    Check {
        name: String,
    },
    /// Put back every member the load balancer lost (HAProxy forgets them on reload).
    Reconcile {
        name: String,
    },
    /// Unregister (refused while a unit uses it).
    Remove {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OpCommand {
    /// Recent operations with their steps; interrupted ones are marked.
    List {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Run an interrupted operation again (its steps are idempotent).
    Resume { id: i64 },
    /// Undo what an interrupted operation did.
    Unwind { id: i64 },
    /// The log lines of an operation (its spans in <data dir>/logs).
    Log { id: i64 },
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, message)
}

fn parse_server(s: &str) -> Result<ServerForm, ApiError> {
    let (name, rest) = s.split_once('=').ok_or_else(|| {
        bad(format!(
            "--server {s:?}: use NAME=ADDRESS or NAME=ADDRESS@HOST"
        ))
    })?;
    let (address, host) = rest.split_once('@').unwrap_or((rest, ""));
    Ok(ServerForm {
        name: name.into(),
        address: address.into(),
        host: host.into(),
    })
}

/// Progress bars per server on a terminal (stderr); nothing for --json.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    json: bool,
}

impl Bars {
    fn new(json: bool) -> Arc<Self> {
        Arc::new(Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            json,
        })
    }

    fn callback(self: &Arc<Self>) -> StepFn {
        let me = self.clone();
        Arc::new(move |e: StepEvent| me.event(&e))
    }

    fn event(&self, e: &StepEvent) {
        if self.json {
            return;
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if e.server.is_empty() {
            // The operation's own line: what the load balancer counted so far.
            let line = bars.entry(String::new()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(0));
                if let Ok(style) = ProgressStyle::with_template("{prefix:>16} {msg}") {
                    b.set_style(style);
                }
                b.set_prefix("load balancer");
                b
            });
            line.set_message(e.detail.clone());
            return;
        }
        let bar = bars.entry(e.server.clone()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(u64::from(e.total)));
            if let Ok(style) =
                ProgressStyle::with_template("{prefix:>16} [{bar:24}] {pos}/{len} {msg} {elapsed}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix(e.server.clone());
            b
        });
        bar.set_position(u64::from(e.done));
        let verb = match e.status {
            StepStatus::Started => "",
            StepStatus::Succeeded => "done: ",
            StepStatus::Failed => "FAILED: ",
            StepStatus::UndoStarted => "undoing ",
            StepStatus::Undone => "undone: ",
            StepStatus::UndoFailed => "UNDO FAILED: ",
        };
        if e.detail.is_empty() || matches!(e.status, StepStatus::Failed | StepStatus::UndoFailed) {
            bar.set_message(format!("{verb}{}", e.step.as_str()));
        } else {
            bar.set_message(format!("{verb}{}: {}", e.step.as_str(), e.detail));
        }
    }

    fn finish(&self) {
        for b in self.bars.lock().unwrap_or_else(|p| p.into_inner()).values() {
            b.abandon();
        }
    }
}

pub(super) async fn unit(
    engine: &Engine,
    json: bool,
    cmd: UnitCommand,
) -> Result<ExitCode, ApiError> {
    let action = match cmd {
        UnitCommand::Create(args) => {
            let CreateArgs {
                name,
                image,
                definition,
                count,
                name_pattern,
                addresses,
                hosts,
                servers,
                cpus,
                memory,
                disk,
                lb,
                pool,
                max_unavailable,
                drain_timeout,
                health_timeout,
                shutdown_timeout,
                min_in_service,
                min_healthy_time,
                rollout_deadline,
                no_auto_rollback,
                max_failed_requests,
                auto_recover_per_day,
                isolation_timeout,
                isolation_address,
            } = *args;
            // What is not given comes from the definition, as in the wizard.
            let size = if cpus.is_some() || memory.is_some() || disk.is_some() {
                let d = engine.unit_default_size(&definition)?;
                Some(ServerSize {
                    cpus: cpus.unwrap_or(d.cpus),
                    memory_mib: memory.unwrap_or(d.memory_mib),
                    disk_gib: disk.unwrap_or(d.disk_gib),
                })
            } else {
                None
            };
            let form = UnitForm {
                name,
                image,
                definition,
                size,
                count,
                name_pattern,
                addresses,
                hosts,
                servers: servers
                    .iter()
                    .map(|s| parse_server(s))
                    .collect::<Result<_, _>>()?,
                lb,
                lb_pool: pool,
                policy: Some(RolloutPolicy {
                    max_unavailable,
                    drain_timeout_s: drain_timeout,
                    health_timeout_s: health_timeout,
                    shutdown_timeout_s: shutdown_timeout,
                    min_in_service,
                    min_healthy_s: min_healthy_time,
                    rollout_deadline_s: rollout_deadline,
                    auto_rollback: !no_auto_rollback,
                    max_failed_requests,
                    auto_recover_per_day,
                    isolation_timeout_s: isolation_timeout,
                    isolation_address,
                }),
            };
            let created = engine.unit_create(&form)?;
            if json {
                print_json(&created);
            } else {
                for w in &created.warnings {
                    eprintln!("warning: {w}");
                }
                show(&created.unit);
                say_line(&format!(
                    "Registered; nothing exists on the hosts yet. Deploy with: flotillactl unit deploy {}",
                    created.unit.name
                ));
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::List => {
            let units = engine.unit_list()?;
            if json {
                print_json(&units);
            } else {
                let rows: Vec<Vec<String>> = units
                    .iter()
                    .map(|u| {
                        let count = |st: crate::model::ServerState| {
                            u.servers.iter().filter(|s| s.state == st).count()
                        };
                        vec![
                            u.name.clone(),
                            u.current()
                                .map(|v| {
                                    format!(
                                        "v{} {}:v{} {}:v{}",
                                        v.version,
                                        v.image,
                                        v.image_version,
                                        v.definition,
                                        v.definition_version
                                    )
                                })
                                .unwrap_or_default(),
                            u.servers.len().to_string(),
                            count(crate::model::ServerState::Running).to_string(),
                            count(crate::model::ServerState::Stopped).to_string(),
                            count(crate::model::ServerState::Planned).to_string(),
                            u.lb.clone()
                                .map(|l| format!("{l}/{}", u.lb_pool))
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "NAME", "VERSION", "SERVERS", "RUNNING", "STOPPED", "PLANNED", "LB",
                    ],
                    &rows,
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Show { name } => {
            let u = engine.unit_show(&name)?;
            if json {
                print_json(&u);
            } else {
                show(&u);
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Status { name } => {
            let live = engine.unit_live(&name).await?;
            if json {
                print_json(&live);
            } else {
                let rows: Vec<Vec<String>> = live
                    .iter()
                    .map(|s| {
                        vec![
                            s.server.clone(),
                            s.power.clone(),
                            s.lb_status.clone(),
                            match s.healthy {
                                Some(true) => "healthy".into(),
                                Some(false) => "not healthy".into(),
                                None => "-".into(),
                            },
                        ]
                    })
                    .collect();
                table(&["SERVER", "POWER", "LOAD BALANCER", "HEALTH"], &rows);
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Plan { name, action } => {
            let action = match action {
                PlanAction::Deploy => UnitAction::Deploy,
                PlanAction::Start { servers } => UnitAction::Start { servers },
                PlanAction::Rejoin { servers } => UnitAction::Rejoin { servers },
                PlanAction::Stop { servers } => UnitAction::Stop {
                    servers,
                    force: false,
                },
                PlanAction::Restart { servers } => UnitAction::Restart {
                    servers,
                    force: false,
                },
                PlanAction::Scale { count } => UnitAction::Scale { count },
                PlanAction::Delete => UnitAction::Delete { force: false },
                PlanAction::Rollout { canary, policy } => UnitAction::Rollout {
                    back: false,
                    canary,
                    policy: policy.over(&engine.unit_show(&name)?.policy),
                },
                PlanAction::Rollback => UnitAction::Rollout {
                    back: true,
                    canary: None,
                    policy: None,
                },
                PlanAction::Recover { from, host_is_off } => {
                    UnitAction::Recover { from, host_is_off }
                }
            };
            let plan = engine.unit_plan(&name, &action)?;
            if json {
                print_json(&plan);
            } else {
                show_plan(&plan);
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Deploy { name, plan } => (name, UnitAction::Deploy, plan),
        UnitCommand::Recover {
            name,
            from,
            host_is_off,
            plan,
        } => (name, UnitAction::Recover { from, host_is_off }, plan),
        UnitCommand::Start {
            name,
            servers,
            plan,
        } => (name, UnitAction::Start { servers }, plan),
        UnitCommand::Rejoin {
            name,
            servers,
            plan,
        } => (name, UnitAction::Rejoin { servers }, plan),
        UnitCommand::Stop {
            name,
            servers,
            force,
            plan,
        } => (name, UnitAction::Stop { servers, force }, plan),
        UnitCommand::Restart {
            name,
            servers,
            force,
            plan,
        } => (name, UnitAction::Restart { servers, force }, plan),
        UnitCommand::Scale { name, count, plan } => (name, UnitAction::Scale { count }, plan),
        UnitCommand::Rollout {
            name,
            canary,
            policy,
            plan,
        }
        | UnitCommand::Promote {
            name,
            canary,
            policy,
            plan,
        } => {
            let policy = policy.over(&engine.unit_show(&name)?.policy);
            (
                name,
                UnitAction::Rollout {
                    back: false,
                    canary,
                    policy,
                },
                plan,
            )
        }
        UnitCommand::Policy { name, policy } => {
            let u = engine.unit_show(&name)?;
            let p = match policy.over(&u.policy) {
                Some(p) => engine.unit_set_policy(&name, &p)?,
                None => u.policy,
            };
            if json {
                print_json(&p);
            } else {
                show(&engine.unit_show(&name)?);
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Pause { name } => {
            let op = engine.unit_pause(&name)?;
            if json {
                print_json(&serde_json::json!({ "operation": op, "pause": "asked" }));
            } else {
                say_line(&format!(
                    "Asked rollout #{op} of unit {name} to pause after the servers it is updating now."
                ));
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Update {
            name,
            image,
            definition,
            cpus,
            memory,
            disk,
        } => {
            let v = engine.unit_update(
                &name,
                &UnitUpdate {
                    image,
                    definition,
                    cpus,
                    memory_mib: memory,
                    disk_gib: disk,
                },
            )?;
            if json {
                print_json(&v);
            } else {
                say_line(&format!(
                    "Unit {name} v{} is pending: master {}:v{}, definition {}:v{}, {} CPUs, {} MiB. Nothing changed on the hosts. See the plan with: flotillactl unit plan {name} rollout",
                    v.version,
                    v.image,
                    v.image_version,
                    v.definition,
                    v.definition_version,
                    v.size.cpus,
                    v.size.memory_mib
                ));
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::History { name } => {
            let h = engine.unit_history(&name)?;
            if json {
                print_json(&h);
            } else {
                for e in &h {
                    say_line(&format!(
                        "v{} ({}, {} servers, {})",
                        e.version.version, e.status, e.servers, e.version.created_at
                    ));
                    for c in &e.changes {
                        say_line(&format!("  {c}"));
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        UnitCommand::Rollback { name, to } => {
            let bars = Bars::new(json);
            let outcome = engine.unit_rollback(&name, to, bars.callback()).await;
            bars.finish();
            return report(json, outcome);
        }
        UnitCommand::Delete {
            name,
            yes,
            force,
            plan,
        } => {
            if let Some(what) = delete_confirmation(&engine.unit_show(&name)?) {
                if !yes {
                    return Err(bad(format!("{what}. Run again with --yes to do it")));
                }
            }
            (name, UnitAction::Delete { force }, plan)
        }
    };
    let (unit, action, plan) = action;
    let bars = Bars::new(json);
    let outcome = engine
        .unit_run_planned(&unit, action, plan.fingerprint.as_deref(), bars.callback())
        .await;
    bars.finish();
    report(json, outcome)
}

/// Exit status of a rollout that stopped at a safe point (a canary, or a pause asked for).
pub(super) const EXIT_PAUSED: u8 = 18;

fn report(json: bool, outcome: Result<OpReport, OpError>) -> Result<ExitCode, ApiError> {
    match outcome {
        Ok(r) => {
            if json {
                print_json(&r);
            } else {
                for w in &r.warnings {
                    eprintln!("warning: {w}");
                }
                say_line(&r.to_string());
            }
            Ok(if r.paused {
                ExitCode::from(EXIT_PAUSED)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(OpError::PlanChanged { shown, plan }) => {
            let e = ApiError::from(&OpError::PlanChanged {
                shown,
                plan: plan.clone(),
            });
            if json {
                print_json(&serde_json::json!({ "error": e, "plan": plan }));
            } else {
                show_plan(&plan);
            }
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code.exit_status()))
        }
        Err(OpError::Failed(r)) => {
            let e = ApiError::from(&OpError::Failed(r.clone()));
            if json {
                print_json(&serde_json::json!({ "error": e, "report": r }));
            }
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code.exit_status()))
        }
        Err(e) => Err(e.into()),
    }
}

fn show(u: &Unit) {
    say_line(&format!("Unit {}", u.name));
    if let Some(v) = u.current() {
        say_line(&format!(
            "  version v{}: master {}:v{}, definition {}:v{}, {} CPU, {} MiB, disk {}",
            v.version,
            v.image,
            v.image_version,
            v.definition,
            v.definition_version,
            v.size.cpus,
            v.size.memory_mib,
            if v.size.disk_gib == 0 {
                "as the master".to_string()
            } else {
                format!("{} GiB", v.size.disk_gib)
            }
        ));
    }
    if let Some(p) = u.pending() {
        say_line(&format!(
            "  pending v{}: master {}:v{}, definition {}:v{} (roll it out: flotillactl unit rollout {})",
            p.version, p.image, p.image_version, p.definition, p.definition_version, u.name
        ));
    }
    let on: std::collections::BTreeSet<u32> = u.servers.iter().filter_map(|s| s.version).collect();
    if on.len() > 1 {
        say_line(&format!(
            "  mixed: servers run {}",
            on.iter()
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    say_line(&format!(
        "  load balancer: {}",
        u.lb.as_ref().map_or_else(
            || "none".to_string(),
            |l| format!("{l}, pool {}", u.lb_pool)
        )
    ));
    say_line(&format!(
        "  policy: max unavailable {}, min in service {}, drain timeout {} s, health timeout {} s, min healthy time {} s, shutdown timeout {} s, automatic recoveries {}",
        u.policy.max_unavailable,
        u.policy.min_in_service_of(u.servers.len() as u32),
        u.policy.drain_timeout_s,
        u.policy.health_timeout_s,
        u.policy.min_healthy_s,
        u.policy.shutdown_timeout_s,
        match u.policy.auto_recover_per_day {
            0 => "off".to_owned(),
            n => format!("at most {n} a day"),
        }
    ));
    say_line(&format!(
        "  isolation response: {}",
        match u.policy.isolation_timeout_s {
            0 => "off (a recovery needs the hosts' BMCs or your confirmation)".to_owned(),
            n => format!(
                "power off after {n} s without an answer from {}",
                if u.policy.isolation_address.is_empty() {
                    "the servers' gateway, port 80"
                } else {
                    u.policy.isolation_address.as_str()
                }
            ),
        }
    ));
    let rows: Vec<Vec<String>> = u
        .servers
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.host.clone(),
                s.address.clone(),
                s.mac.clone(),
                s.state.as_str().into(),
                s.version.map_or_else(|| "-".into(), |v| format!("v{v}")),
                s.lb_state.clone(),
            ]
        })
        .collect();
    table(
        &["SERVER", "HOST", "ADDRESS", "MAC", "STATE", "VERSION", "LB"],
        &rows,
    );
    for s in &u.servers {
        if !s.fenced.is_empty() {
            say_line(&format!("  {}: {}", s.name, s.fenced));
        }
        if u.policy.isolation_timeout_s > 0
            && s.isolation_s == 0
            && s.state != crate::model::ServerState::Planned
        {
            say_line(&format!(
                "  {}: its guest has no isolation response yet (it gets one with its next seed: a rollout that reboots it, or a recovery)",
                s.name
            ));
        }
    }
}

fn show_plan(p: &OpPlan) {
    say_line(&format!(
        "Plan: {} of unit {} ({} servers, {} at a time)",
        p.action,
        p.unit,
        p.servers.len(),
        p.batch_size
    ));
    if let Some(n) = p.in_service_during {
        say_line(&format!("  in service while a batch is out: {n}"));
    }
    match p.estimate_s {
        Some(secs) => say_line(&format!("  about {secs} s ({})", p.estimate_from)),
        None => say_line(&format!("  time: {}", p.estimate_from)),
    }
    for w in &p.warnings {
        say_line(&format!("  warning: {w}"));
    }
    if let Some(c) = &p.confirm {
        say_line(&format!("  to confirm: {c} (--yes)"));
    }
    for s in &p.servers {
        let steps: Vec<&str> = s.steps.iter().map(|s| s.as_str()).collect();
        say_line(&format!(
            "  {} ({} on {}){}: {}",
            s.server,
            s.address,
            s.host,
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" [{}]", s.note)
            },
            steps.join(" → ")
        ));
        if let Some(f) = &s.fence {
            say_line(&format!("      fence: {}", f.words));
        }
    }
    say_line(&format!(
        "Fingerprint: {} (run exactly this plan with --plan {})",
        p.fingerprint, p.fingerprint
    ));
}

pub(super) async fn lb(engine: &Engine, json: bool, cmd: LbCommand) -> Result<ExitCode, ApiError> {
    match cmd {
        LbCommand::Add {
            name,
            haproxy_socket,
            haproxy_addr,
            caddy_admin,
            caddy_route_id,
        } => {
            let target = match (haproxy_socket, haproxy_addr, caddy_admin) {
                (Some(path), _, _) => LbTarget::HaproxySocket { path },
                (_, Some(addr), _) => LbTarget::HaproxyAddr { addr },
                (_, _, Some(admin)) => LbTarget::Caddy {
                    admin,
                    route_id: caddy_route_id.unwrap_or_default(),
                },
                _ => {
                    return Err(bad(
                        "say how to reach it: --haproxy-socket PATH, --haproxy-addr HOST:PORT or --caddy-admin URL --caddy-route-id ID",
                    ))
                }
            };
            let lb = engine.lb_add(&name, &target).await?;
            if json {
                print_json(&lb);
            } else {
                show_lb(&lb);
            }
        }
        LbCommand::List => {
            let list = engine.lb_list()?;
            if json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|l| {
                        vec![
                            l.name.clone(),
                            l.kind.to_string(),
                            l.endpoint.clone(),
                            l.route_id.clone(),
                        ]
                    })
                    .collect();
                table(&["NAME", "KIND", "ENDPOINT", "ROUTE ID"], &rows);
            }
        }
        LbCommand::Show { name } => {
            let lb = engine.lb_show(&name)?;
            if json {
                print_json(&lb);
            } else {
                show_lb(&lb);
            }
        }
        LbCommand::Check { name } => {
            let c = engine.lb_check(&name).await?;
            if json {
                print_json(&c);
            } else {
                show_lb(&c.lb);
                if !c.has_drain {
                    say_line("  Caddy has no drain state: Flotilla removes a member and waits the drain timeout as a grace period.");
                }
                say_line(&format!("  health checks: {}", c.checks));
                for (pool, exists) in &c.pools {
                    say_line(&format!(
                        "  pool {pool}: {}",
                        if *exists { "present" } else { "MISSING" }
                    ));
                }
                let rows: Vec<Vec<String>> = c
                    .members
                    .iter()
                    .map(|m| {
                        vec![
                            m.name.clone(),
                            m.address.clone(),
                            m.status.clone(),
                            format!("{:?}", m.admin).to_lowercase(),
                            m.sessions.to_string(),
                        ]
                    })
                    .collect();
                table(&["MEMBER", "ADDRESS", "STATUS", "ADMIN", "SESSIONS"], &rows);
            }
        }
        LbCommand::Reconcile { name } => {
            let r = engine.lb_reconcile(&name).await?;
            if json {
                print_json(&r);
            } else {
                say_line(&format!(
                    "put back {} members, corrected {}, {} were right",
                    r.added.len(),
                    r.corrected.len(),
                    r.unchanged
                ));
                for b in &r.busy {
                    say_line(&format!("  {b}"));
                }
            }
        }
        LbCommand::Remove { name } => {
            engine.lb_remove(&name)?;
            super::output::removed(json, "load balancer", &name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_lb(l: &LbInstance) {
    say_line(&format!("Load balancer {} ({})", l.name, l.kind));
    say_line(&format!("  endpoint: {}", l.endpoint));
    if !l.route_id.is_empty() {
        say_line(&format!("  route id: {}", l.route_id));
    }
}

pub(super) async fn op(engine: &Engine, json: bool, cmd: OpCommand) -> Result<ExitCode, ApiError> {
    match cmd {
        OpCommand::List { limit } => {
            let ops = engine
                .inventory
                .operation_list(limit)
                .map_err(OpError::from)?;
            let interrupted = engine.interrupted_operations()?;
            if json {
                print_json(&serde_json::json!({ "operations": ops, "interrupted": interrupted }));
            } else {
                for i in &interrupted {
                    say_line(&format!(
                        "INTERRUPTED #{} {} of unit {} ({} steps done): flotillactl op resume {} | flotillactl op unwind {}",
                        i.operation, i.kind, i.unit, i.steps_done, i.operation, i.operation
                    ));
                }
                let rows: Vec<Vec<String>> = ops
                    .iter()
                    .map(|o| {
                        vec![
                            format!("#{}", o.id),
                            o.kind.clone(),
                            o.target.clone(),
                            o.state.clone(),
                            o.started_at.clone(),
                            o.steps.len().to_string(),
                            o.error
                                .lines()
                                .next()
                                .unwrap_or("")
                                .chars()
                                .take(80)
                                .collect(),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "KIND", "TARGET", "STATE", "STARTED", "STEPS", "ERROR"],
                    &rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        OpCommand::Resume { id } => {
            let bars = Bars::new(json);
            let outcome = engine.operation_resume(id, bars.callback()).await;
            bars.finish();
            report(json, outcome)
        }
        OpCommand::Unwind { id } => {
            let bars = Bars::new(json);
            let outcome = engine.operation_unwind(id, bars.callback()).await;
            bars.finish();
            report(json, outcome)
        }
        OpCommand::Log { id } => {
            let lines = engine.operation_log(id);
            if json {
                print_json(&serde_json::json!({ "operation": id, "lines": lines }));
            } else if lines.is_empty() {
                say_line(&format!(
                    "no log lines of operation #{id} (logs are kept for a week; FLOTILLA_LOG may have filtered them)"
                ));
            } else {
                for l in lines {
                    say_line(&l);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `host set NAME --network CIDR --gateway IP --domain-type kvm|qemu|auto`
pub(super) fn host_set(
    engine: &Engine,
    json: bool,
    name: &str,
    network: Option<String>,
    gateway: Option<String>,
    domain_type: Option<String>,
) -> Result<ExitCode, ApiError> {
    let current = engine.host_show(name)?;
    let dt = domain_type.unwrap_or(current.domain_type.clone());
    let h = engine.host_set_network(
        name,
        &network.unwrap_or(current.network.clone()),
        &gateway.unwrap_or(current.gateway.clone()),
        if dt == "auto" { "" } else { &dt },
    )?;
    super::output::host_show(json, &h);
    Ok(ExitCode::SUCCESS)
}
