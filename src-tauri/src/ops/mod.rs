//! The operations engine: what the front doors call.
//!
//! Host registration lives in [`hosts`]. Long, multi-step operations (deploy, rolling update)
//! arrive with later issues as journaled steps with undo (ARCHITECTURE.md).
// The journal's writes belong to the runner (`runner`, `exec`): clippy.toml lists them.
#![warn(clippy::disallowed_methods)]

pub mod bmc;
pub mod builder;
pub mod definitions;
pub(crate) mod exec;
pub mod hosts;
pub mod images;
pub mod impact;
pub mod lbs;
pub mod live;
pub mod monitor;
pub mod requests;
pub mod runner;
pub mod units;

use crate::error::{ApiError, ErrorCode};
use crate::hypervisor::{HvConfig, HvError, Hypervisor};
use crate::inventory::{Actor, AuditResult, Inventory, InventoryError};
use crate::model::ValidationError;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the data directory (as `--data-dir` does).
pub const DATA_DIR_ENV: &str = "FLOTILLA_DATA_DIR";

/// Where the inventory lives: `explicit` (from `--data-dir`), else `$FLOTILLA_DATA_DIR`, else
/// the user's data directory (`~/.local/share/flotilla` on Linux).
pub fn resolve_data_dir(explicit: Option<PathBuf>) -> Result<PathBuf, ApiError> {
    if let Some(dir) = explicit.filter(|d| !d.as_os_str().is_empty()) {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("org", "flotilla", "flotilla")
        .map(|p| p.data_dir().to_owned())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Inventory,
                format!("cannot find your home directory to keep the inventory in; set {DATA_DIR_ENV} or pass --data-dir"),
            )
        })
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Hypervisor(#[from] HvError),
    #[error("host at {uri} is not ready: {}", problems.join("; "))]
    HostNotReady { uri: String, problems: Vec<String> },
    #[error(transparent)]
    Library(#[from] crate::library::LibraryError),
    #[error("sealing failed, nothing was captured: {reason}")]
    SealFailed { reason: String },
    #[error("the builder {domain} did not shut down within {secs} s after the ACPI shutdown request (the guest may ignore the power button); shut it down from inside the guest, or capture with --force to power it off (unsaved data in the guest may be lost)")]
    ShutdownTimeout { domain: String, secs: u64 },
    #[error(transparent)]
    Lb(#[from] crate::lb::LbError),
    #[error("unit {unit} is busy with operation #{operation} ({kind}); wait for it to finish, or resume/unwind it if it was interrupted (flotillactl op list)")]
    Busy {
        unit: String,
        operation: i64,
        kind: String,
    },
    #[error("host {host} has {have} bytes free in its pool; {what} needs {need}: free space there or place the servers on another host")]
    NoSpace {
        host: String,
        what: String,
        need: u64,
        have: u64,
    },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Failed(Box<units::OpReport>),
    /// The plan the admin confirmed (its fingerprint) is not what would run now.
    #[error("the inventory changed since plan {shown} was shown, so nothing was done; the plan is now {}: review it and confirm that one", plan.fingerprint)]
    PlanChanged {
        shown: String,
        plan: Box<units::OpPlan>,
    },
    /// A test fault stood in for the process dying: the journal is left as it was.
    #[error("simulated crash")]
    Crashed,
    /// An operation failed and undoing it failed too (both reasons in words); what is left
    /// is journaled and the message says how to finish.
    #[error("{0}")]
    UndoFailed(String),
    #[error(
        "definition {name} changed since v{base}, where this edit started: the newest is \
         v{newest}, so nothing was saved (saving would undo those changes). What changed from \
         v{base} to v{newest}:\n{}\nRedo your edit on v{newest} and save again.",
        if changes.is_empty() { "  (no field or package differs)".to_owned() } else { changes.iter().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n") }
    )]
    Stale {
        name: String,
        base: u32,
        newest: u32,
        /// `def diff NAME base newest`, one line per change.
        changes: Vec<String>,
    },
    #[error(transparent)]
    HostKey(#[from] crate::hostkeys::HostKeyError),
    /// A recovery would re-create servers whose old copies are not known to be off.
    #[error("{0}")]
    FenceNeeded(String),
    #[error(transparent)]
    Bmc(Box<bmc::BmcFailure>),
    #[error("host {host} has no BMC; set one with: flotillactl host set {host} --bmc URL --bmc-system ID --bmc-user USER --bmc-password-stdin")]
    NoBmc { host: String },
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error("the copy of {what} on host {host} does not match the library (sha256 {found}, expected {expected}); it was removed")]
    CopyMismatch {
        what: String,
        host: String,
        found: String,
        expected: String,
    },
}

impl From<&OpError> for ApiError {
    fn from(err: &OpError) -> Self {
        match err {
            OpError::Invalid(e) => ApiError::new(ErrorCode::InvalidInput, e.to_string()),
            OpError::HostNotReady { .. } => ApiError::new(ErrorCode::HostNotReady, err.to_string()),
            OpError::Busy { .. } => ApiError::new(ErrorCode::Busy, err.to_string()),
            OpError::Stale { .. } => ApiError::new(ErrorCode::Conflict, err.to_string()),
            OpError::NoSpace { .. } => ApiError::new(ErrorCode::NoSpace, err.to_string()),
            OpError::Timeout(_) => ApiError::new(ErrorCode::Timeout, err.to_string()),
            OpError::Failed(r) if r.rolled_back => {
                ApiError::new(ErrorCode::RolledBack, err.to_string())
            }
            OpError::Failed(_) | OpError::UndoFailed(_) => {
                ApiError::new(ErrorCode::OperationFailed, err.to_string())
            }
            OpError::PlanChanged { .. } => ApiError::new(ErrorCode::PlanChanged, err.to_string()),
            OpError::FenceNeeded(_) => ApiError::new(ErrorCode::FenceNeeded, err.to_string()),
            OpError::Crashed => ApiError::new(ErrorCode::Internal, err.to_string()),
            OpError::Lb(e) => {
                use crate::lb::LbError as L;
                let code = match e {
                    L::BadName { .. } => ErrorCode::InvalidInput,
                    L::NoPool { .. } => ErrorCode::NotFound,
                    L::Connect { .. } | L::Timeout { .. } | L::Refused { .. } => {
                        ErrorCode::LbFailed
                    }
                };
                ApiError::new(code, format!("{e}")).with_causes(e)
            }
            OpError::HostKey(e) => {
                use crate::hostkeys::HostKeyError as K;
                let code = match e {
                    K::BadFingerprint { .. } | K::Mismatch { .. } => ErrorCode::InvalidInput,
                    K::Unknown { .. } => ErrorCode::HostKeyUnknown,
                    K::Changed(_) | K::Revoked(_) => ErrorCode::HostKeyChanged,
                    K::Scan { .. } => ErrorCode::Unreachable,
                    K::File { .. } => ErrorCode::Inventory,
                };
                ApiError::new(code, e.to_string()).with_causes(e)
            }
            OpError::Bmc(f) => {
                use crate::bmc::BmcError as B;
                let code = match &f.error {
                    B::BadCa { .. } => ErrorCode::InvalidInput,
                    B::Setup { .. } => ErrorCode::Internal,
                    B::Connect { .. } | B::Tls { .. } => ErrorCode::Unreachable,
                    B::Timeout { .. } | B::StillOn { .. } => ErrorCode::Timeout,
                    B::Refused { .. }
                    | B::NoSystem { .. }
                    | B::Status { .. }
                    | B::BadAnswer { .. }
                    | B::NoForceOff { .. } => ErrorCode::BmcFailed,
                };
                ApiError::new(code, f.to_string()).with_causes(&f.error)
            }
            OpError::NoBmc { .. } => ApiError::new(ErrorCode::NotFound, err.to_string()),
            OpError::Secret(e) => {
                use crate::secrets::SecretError as S;
                let code = match e {
                    S::Missing { .. } => ErrorCode::NotFound,
                    S::File { .. } | S::BadFile { .. } => ErrorCode::Inventory,
                };
                ApiError::new(code, e.to_string()).with_causes(e)
            }
            OpError::CopyMismatch { .. } => ApiError::new(ErrorCode::Internal, err.to_string()),
            OpError::ShutdownTimeout { .. } => ApiError::new(ErrorCode::Timeout, err.to_string()),
            OpError::SealFailed { .. } => ApiError::new(ErrorCode::SealFailed, err.to_string()),
            OpError::Library(e) => {
                use crate::library::LibraryError as L;
                let code = match e {
                    L::NotAnImage { .. } | L::Unreadable { .. } => ErrorCode::InvalidInput,
                    L::Full { .. } => ErrorCode::NoSpace,
                    L::TimedOut { .. } | L::CpuLimit { .. } => ErrorCode::Timeout,
                    L::QemuImg { .. } | L::Write { .. } => ErrorCode::Internal,
                };
                ApiError::new(code, e.to_string()).with_causes(e)
            }
            OpError::Inventory(e) => {
                let code = match e {
                    InventoryError::NotFound { .. } => ErrorCode::NotFound,
                    InventoryError::Duplicate { .. } | InventoryError::UriTaken { .. } => {
                        ErrorCode::AlreadyExists
                    }
                    InventoryError::InUse { .. } => ErrorCode::InUse,
                    InventoryError::Stale { .. } => ErrorCode::Conflict,
                    InventoryError::RolloutInProgress { .. } => ErrorCode::Busy,
                    _ => ErrorCode::Inventory,
                };
                let mut message = e.to_string();
                match e {
                    InventoryError::InUse { .. } => message.push_str("; remove those first"),
                    InventoryError::Stale { .. } => message.push_str(
                        "; nothing was saved, so the newer version stays: run it again on top of it",
                    ),
                    InventoryError::DataDir { .. }
                    | InventoryError::Open { .. }
                    | InventoryError::Migrate { .. } => message.push_str(&format!(
                        "; check that it is yours and writable, or choose another data directory with --data-dir or {DATA_DIR_ENV}"
                    )),
                    _ => {}
                }
                ApiError::new(code, message).with_causes(e)
            }
            OpError::Hypervisor(e) => {
                let code = match e {
                    HvError::Connect { .. }
                    | HvError::Timeout { .. }
                    | HvError::WorkerGone { .. } => ErrorCode::Unreachable,
                    HvError::Call { .. } if e.is_connection_lost() => ErrorCode::Unreachable,
                    HvError::Call { .. } | HvError::LocalFile { .. } => ErrorCode::Internal,
                    HvError::UriRefused { .. } => ErrorCode::InvalidInput,
                };
                let message = match (e, e.libvirt_reason()) {
                    (HvError::Connect { .. }, Some(reason))
                        if crate::hostkeys::refused_by_ssh(reason) =>
                    {
                        format!("{e}: {reason}. ssh refused it: {}.", crate::hostkeys::REFUSED_KEY_HINT)
                    }
                    (HvError::Connect { .. }, Some(reason))
                        if crate::hostkeys::login_refused(reason) =>
                    {
                        format!("{e}: {reason}. {}.", crate::hostkeys::LOGIN_REFUSED_HINT)
                    }
                    (HvError::Connect { .. }, Some(reason)) => format!(
                        "{e}: {reason}. Check the URI, that libvirtd runs on that host and that you may use it."
                    ),
                    (HvError::Call { .. }, Some(reason)) if e.is_connection_lost() => format!(
                        "{e}: {reason}. The connection to the host broke (the host, its libvirtd or its sshd went away); Flotilla connects again on the next call."
                    ),
                    (_, Some(reason)) => format!("{e}: {reason}"),
                    (_, None) => e.to_string(),
                };
                ApiError::new(code, message).with_causes(e)
            }
        }
    }
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> Self {
        ApiError::from(&err)
    }
}

/// The engine both front doors drive: the inventory, the hypervisor connections, and who is
/// acting.
#[derive(Debug)]
pub struct Engine {
    pub inventory: Inventory,
    pub hypervisor: Hypervisor,
    actor: Actor,
    /// The image library folder (`<data dir>/library`).
    library: PathBuf,
    /// A test hook (feature `test-hooks`): a step to fail or "crash" at (`runner::StepFault`).
    faults: std::sync::Mutex<Option<runner::StepFault>>,
    /// A test hook (feature `test-hooks`): run every step and undo twice (idempotency).
    repeat: std::sync::atomic::AtomicBool,
    /// A test hook (feature `test-hooks`, `FLOTILLA_STEP_DELAY_MS`): each unit step waits this
    /// long first, so that a GUI test can act while an operation runs (Pause).
    step_delay: std::time::Duration,
    /// New secrets go into files in the data directory, not the Secret Service
    /// (`FLOTILLA_SECRETS=file`, [`Engine::keep_secrets_in_files`]).
    secret_files: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Opens the inventory in `data_dir`; `via` names the front door for the audit log.
    pub fn open(data_dir: &Path, via: &'static str) -> Result<Self, OpError> {
        let inventory = Inventory::open_in(data_dir)?;
        let known = crate::hostkeys::KnownHosts::in_data_dir(data_dir);
        known.ensure_wrapper()?;
        Ok(Self::with(
            inventory,
            HvConfig {
                known_hosts: Some(known),
                ..HvConfig::default()
            },
            Actor::new(via),
            data_dir.join("library"),
        ))
    }

    pub fn with(inventory: Inventory, hv: HvConfig, actor: Actor, library: PathBuf) -> Self {
        Self {
            inventory,
            hypervisor: Hypervisor::new(hv),
            actor,
            library,
            // Test builds only: a build for users cannot be steered by the environment.
            faults: std::sync::Mutex::new(if cfg!(feature = "test-hooks") {
                std::env::var("FLOTILLA_FAULT")
                    .ok()
                    .and_then(|f| runner::StepFault::parse(&f))
            } else {
                None
            }),
            repeat: std::sync::atomic::AtomicBool::new(false),
            secret_files: std::sync::atomic::AtomicBool::new(
                crate::secrets::Secrets::files_wanted_by_env(),
            ),
            step_delay: std::time::Duration::from_millis(if cfg!(feature = "test-hooks") {
                std::env::var("FLOTILLA_STEP_DELAY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
                    .min(10_000)
            } else {
                0
            }),
        }
    }

    pub fn library_dir(&self) -> &Path {
        &self.library
    }

    /// The data directory (the library's parent): inventory, library, logs.
    pub fn data_dir(&self) -> &Path {
        self.library.parent().unwrap_or(&self.library)
    }

    /// The log lines of one operation (`flotillactl op log`, the Operations view).
    pub fn operation_log(&self, id: i64) -> Vec<String> {
        crate::logging::operation_lines(self.data_dir(), id, 5000)
    }

    /// Records the outcome of a change in the audit log. A failure to write the audit log is
    /// reported on stderr but does not turn a completed change into a failure.
    fn audit<T>(&self, action: &str, target: &str, outcome: &Result<T, OpError>) {
        let (result, detail) = match outcome {
            Ok(_) => (AuditResult::Ok, String::new()),
            Err(e) => (AuditResult::Error, e.to_string()),
        };
        if let Err(e) = self
            .inventory
            .audit_record(&self.actor, action, target, result, &detail)
        {
            eprintln!("flotilla: could not write the audit log: {e}");
        }
    }
}
