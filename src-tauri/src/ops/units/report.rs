//! What an operation shows and answers: its plan (the ordered steps per server, with a
//! recovery's fences), the progress events of its steps, its report (what each server did,
//! what failed, what was undone), a server as it is live, an interrupted operation, and the
//! unit step test fault.

use super::*;

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
    /// A recovery: the fence its old copy gets before it is re-created here.
    pub fence: Option<ServerFence>,
}

/// The fence of one server a recovery re-creates.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct ServerFence {
    /// The lost host its old copy is on.
    pub host: String,
    pub fence: plan::fence::Fence,
    /// In words.
    pub words: String,
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
    /// What the admin must confirm explicitly before it runs (deleting deployed servers).
    pub confirm: Option<String>,
    /// A hash of what the plan was computed from (`plan::fingerprint`). Passed back with the
    /// run, it makes the engine refuse when the inventory changed since the plan was shown.
    pub fingerprint: String,
    /// Servers that stay in service while a batch is out (restarts, rollouts, stops).
    pub in_service_during: Option<u32>,
    /// About how long it takes, from this unit's earlier operations of the same kind.
    pub estimate_s: Option<u32>,
    /// What the estimate is based on, or why there is none.
    pub estimate_from: String,
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
    /// Only on the operation's own events (no `server`), every few seconds of a rollout
    /// behind a load balancer that counts: the pool's requests, failed and retried since the
    /// rollout began.
    pub lb: Option<crate::lb::PoolCounters>,
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
    /// A rollout that stopped at a safe point (a canary, or a pause asked for): the unit is
    /// mixed until `unit promote` or `unit rollback`.
    pub paused: bool,
    /// A rollout that failed and put every server that changed back on its version.
    pub rolled_back: bool,
    /// A rollout's batches, with the load balancer's counts of requests served, retried and
    /// failed during each.
    pub batches: Vec<BatchReport>,
    pub servers: Vec<ServerOutcome>,
    pub warnings: Vec<String>,
    /// Where the full log of the operation is.
    pub log: String,
}

impl OpReport {
    /// A rollout's batches with what the load balancer counted during each.
    fn write_batches(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.batches.iter().enumerate() {
            write!(f, "\n  batch {} ({}): ", i + 1, b.servers.join(", "))?;
            match &b.counters {
                Some(c) => write!(
                    f,
                    "{} requests, {} failed (5xx or broken), {} retried on another server, {} connection errors",
                    c.requests,
                    c.failed(),
                    c.retried,
                    c.connection_errors
                )?,
                None => write!(f, "no counters from the load balancer")?,
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for OpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            write!(
                f,
                "{} of unit {} {} (operation #{})",
                self.action,
                self.unit,
                if self.paused { "paused" } else { "finished" },
                self.operation
            )?;
            return self.write_batches(f);
        }
        write!(
            f,
            "{} of unit {} failed (operation #{})",
            self.action, self.unit, self.operation
        )?;
        for w in &self.warnings {
            write!(f, "\n  {w}")?;
        }
        self.write_batches(f)?;
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
        write!(f, "\n  the full log: {}", self.log)
    }
}

/// A test hook: make a step fail (after doing its work) or make the process "die" there.
/// Set with [`Engine::inject_fault`] or `FLOTILLA_FAULT=fail|crash:SERVER|*:STEP`, where the
/// step `unlock` means after every step, before the operation ends and unlocks the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub crash: bool,
    /// `*` for any server.
    pub server: String,
    /// `None`: after the last step, before the unlock.
    pub step: Option<Step>,
}

impl Fault {
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.splitn(3, ':');
        let crash = match parts.next()? {
            "fail" => false,
            "crash" => true,
            _ => return None,
        };
        let server = parts.next()?.to_owned();
        let step = match parts.next()? {
            "unlock" => None,
            s => Some(Step::parse(s)?),
        };
        Some(Self {
            crash,
            server,
            step,
        })
    }
}

/// A server as its host and the load balancer see it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
