//! The arguments of `unit` commands and what they become: a unit form, an action, a policy
//! change (merged over the unit's by `ops::requests`).

use crate::error::{ApiError, ErrorCode};
use crate::model::RolloutPolicy;
use crate::ops::requests::{PolicyChange, SizeChange};
use crate::ops::units::{ServerForm, UnitAction, UnitForm};
use crate::ops::Engine;
use clap::Subcommand;

#[derive(Debug, Clone, clap::Args)]
pub(in crate::cli) struct Confirmed {
    /// Run only if the plan is still the one `unit plan` showed with this fingerprint; if
    /// the inventory changed since, nothing is done and the new plan is shown (exit 15).
    #[arg(long = "plan", value_name = "FINGERPRINT")]
    pub(super) fingerprint: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(in crate::cli) struct CreateArgs {
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

impl CreateArgs {
    /// The unit to register: what is not given comes from the definition, as in the wizard.
    pub(super) fn form(self, engine: &Engine) -> Result<UnitForm, ApiError> {
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
        } = self;
        let size = engine.unit_size_with(
            &definition,
            SizeChange {
                cpus,
                memory_mib: memory,
                disk_gib: disk,
            },
        )?;
        Ok(UnitForm {
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
        })
    }
}

/// A rollout's own policy: what is given replaces the unit's for this rollout.
#[derive(Debug, Clone, clap::Args)]
pub(in crate::cli) struct RolloutFlags {
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
    pub(super) fn over(&self, unit: &RolloutPolicy) -> Option<RolloutPolicy> {
        self.change().over(unit)
    }

    fn change(&self) -> PolicyChange {
        PolicyChange {
            max_unavailable: self.max_unavailable,
            min_in_service: self.min_in_service,
            min_healthy_s: self.min_healthy_time,
            drain_timeout_s: self.drain_timeout,
            health_timeout_s: self.health_timeout,
            rollout_deadline_s: self.deadline,
            // The two flags conflict: at most one is given.
            auto_rollback: if self.no_auto_rollback {
                Some(false)
            } else if self.auto_rollback {
                Some(true)
            } else {
                None
            },
            max_failed_requests: self.max_failed_requests,
            auto_recover_per_day: self.auto_recover_per_day,
            isolation_timeout_s: self.isolation_timeout,
            isolation_address: self.isolation_address.clone(),
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub(in crate::cli) enum PlanAction {
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

impl PlanAction {
    /// The action planned; a rollout's flags over the unit's policy.
    pub(super) fn action(self, engine: &Engine, name: &str) -> Result<UnitAction, ApiError> {
        Ok(match self {
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
                policy: policy.over(&engine.unit_show(name)?.policy),
            },
            PlanAction::Rollback => UnitAction::Rollout {
                back: true,
                canary: None,
                policy: None,
            },
            PlanAction::Recover { from, host_is_off } => UnitAction::Recover { from, host_is_off },
        })
    }
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
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
