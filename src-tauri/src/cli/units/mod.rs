//! `flotillactl unit|lb|op`: thin wrappers over `ops::units` and `ops::lbs`, one file per
//! concern: the arguments (`args`), reading (`show`), planning (`plan`), running (`run`),
//! changing the record (`edit`), load balancers (`lb`) and the journal (`op`).

mod args;
mod edit;
mod lb;
mod op;
mod plan;
mod run;
mod show;

pub(super) use lb::{lb, LbCommand};
pub(super) use op::{op, OpCommand};

use crate::error::ApiError;
use crate::ops::units::{UnitAction, UnitUpdate};
use crate::ops::Engine;
use args::{Confirmed, CreateArgs, PlanAction, RolloutFlags};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(in crate::cli) enum UnitCommand {
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

pub(super) async fn unit(
    engine: &Engine,
    json: bool,
    cmd: UnitCommand,
) -> Result<ExitCode, ApiError> {
    let (name, action, plan) = match cmd {
        UnitCommand::Create(args) => return edit::create(engine, json, *args),
        UnitCommand::List => return show::list(engine, json),
        UnitCommand::Show { name } => return show::show(engine, json, &name),
        UnitCommand::Status { name } => return show::status(engine, json, &name).await,
        UnitCommand::Plan { name, action } => return plan::plan(engine, json, &name, action),
        UnitCommand::History { name } => return show::history(engine, json, &name),
        UnitCommand::Policy { name, policy } => return edit::policy(engine, json, &name, &policy),
        UnitCommand::Pause { name } => return edit::pause(engine, json, &name),
        UnitCommand::Update {
            name,
            image,
            definition,
            cpus,
            memory,
            disk,
        } => {
            let update = UnitUpdate {
                image,
                definition,
                cpus,
                memory_mib: memory,
                disk_gib: disk,
            };
            return edit::update(engine, json, &name, &update);
        }
        UnitCommand::Rollback { name, to } => return run::rollback(engine, json, &name, to).await,
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
            let action = UnitAction::Rollout {
                back: false,
                canary,
                policy,
            };
            (name, action, plan)
        }
        UnitCommand::Delete {
            name,
            yes,
            force,
            plan,
        } => {
            run::check_delete(engine, &name, yes)?;
            (name, UnitAction::Delete { force }, plan)
        }
    };
    run::run(engine, json, &name, action, plan).await
}
